"""Benchmark the storage kinds: bytes per chunk, quality on the zero-shot suite, search speed.

Parts (``--parts``, default all):

* ``bytes`` - on-disk bytes per chunk of every storage kind (``--kinds``) at D=384, K=64:
  two indexes of ``--bytes-n`` and ``2 * --bytes-n`` synthetic chunks (empty texts) are saved,
  and the size difference gives the bytes each chunk adds (vectors, side rows, coarse row,
  FAISS entry, document line); the rest (codebook, manifest) is a fixed cost, reported apart
  and amortised at 100k chunks. Coarse stages in ``--bytes-coarse`` (default flat: no FAISS
  file; ``ivf`` is trained on each index's chunks, so its per-chunk figure also holds the
  difference of the two indexes' centroids, 4 * D bytes per extra list).
* ``quality`` - macro nDCG@10 over the zero-shot suite (``--suite``) at every budget of the
  default model, for every storage kind against bfloat16. Document vectors come from the eval
  cache (``metaembed-rag eval`` fills it; nothing is re-encoded): each kind encodes the cached
  float32 vectors exactly as an index does (the residual codebook is trained on a sample of
  the corpus, as at index build), decodes them, and ranks the whole corpus by exact MaxSim
  (the same decoded values the residual kernel scores; ``tests/test_storage_kinds.py``).
  Queries: the first ``--max-queries`` (sorted ids) of each set. ``--quality-stored-vectors R``
  stores only each chunk's first R vectors (index-time truncation) and reports the budgets
  that fit.
* ``kernel`` - the exact stage alone (200 random candidates of ``--kernel-n`` rows in RAM,
  (16,64), D=384): median ms per query and candidates/s per storage kind. ``--query-vectors
  repeated`` (here and in ``latency``) makes each query one vector 16 times, as the anchored
  default model's queries are (the scorers then score it once:
  ``metaembed_rag.scoring.repeats``).
* ``latency`` - synthetic clustered chunks (``benchmarks/_synthetic.py``), N in ``--n``, D=384,
  K=64, budget (16,64), each ``--fetch-k`` (default 200) on the same index: exact-stage
  throughput (candidates/s, ``fetch_k`` candidates per query) and two-stage p50 / p95 per
  query, with top-10 overlap against exhaustive search (run after the timed searches).
* ``peers`` (not in the default) - this project's index (every ``--kinds``) beside PyLate's
  Voyager approach on the same ``--peers-n`` synthetic chunks: build time, bytes per chunk,
  recall@10 against exhaustive MaxSim, latency (``benchmarks/peers.py``; needs ``voyager``),
  and PyLate's PLAID (``fast-plaid``) with ``--plaid-python`` (``benchmarks/plaid_peer.py``).

Usage::

    python benchmarks/compression.py --json bench-results/compression.json
    python benchmarks/compression.py --parts quality --max-queries 200
    python benchmarks/compression.py --parts latency --n 20000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _env  # before numpy / torch: thread settings, import paths

_THREADS_DEFAULT = _env.setup(2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _synthetic import clustered_documents, clustered_queries  # noqa: E402

from metaembed_rag.index import MultiVectorIndex  # noqa: E402
from metaembed_rag.index.coarse import COARSE_KINDS  # noqa: E402
from metaembed_rag.index.params import DEFAULT_FETCH_K, SearchParams  # noqa: E402
from metaembed_rag.index.storage import VectorCodec  # noqa: E402

logger = logging.getLogger("compression")

KINDS = ["bfloat16", "int8", "residual4", "residual2", "residual1", "tiered"]
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------ bytes
def _folder_bytes(folder: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in folder.iterdir():
        kind = p.name.split("-")[0].split(".")[0]
        out[kind] = out.get(kind, 0) + p.stat().st_size
    return out


def run_bytes(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    d, k, n1 = 384, 64, args.bytes_n
    rows = []
    for kind, stored, coarse in itertools.product(
        args.kinds, [None, *args.stored_vectors], args.bytes_coarse
    ):
        sizes = []
        for n in (n1, 2 * n1):
            folder = workdir / f"bytes-{kind}-{stored}-{coarse}-{n}"
            index = MultiVectorIndex(
                d, num_vectors=k, storage=kind, stored_vectors=stored, path=folder,
                coarse_index="flat",
            )  # fmt: skip
            for s, docs in enumerate(clustered_documents(n, k, d, chunk=2048)):
                index.add([f"doc-{s * 2048 + i:07d}" for i in range(len(docs))], docs)
            if coarse != "flat":
                index.rebuild_coarse(coarse)
            index.save()
            sizes.append(_folder_bytes(folder))
            index.close()
            shutil.rmtree(folder, ignore_errors=True)
        per_chunk = {key: (sizes[1].get(key, 0) - sizes[0].get(key, 0)) / n1 for key in sizes[1]}
        fixed = {key: sizes[0].get(key, 0) - per_chunk[key] * n1 for key in sizes[0]}
        total = sum(per_chunk.values())
        fixed_total = sum(fixed.values())
        rows.append({
            "storage": kind, "stored_vectors": stored or k, "coarse": coarse,
            "bytes_per_chunk": total,
            "vector_bytes_per_chunk": per_chunk.get("vectors", 0)
            + per_chunk.get("codes", 0) + per_chunk.get("scales", 0),
            "coarse_bytes_per_chunk": per_chunk.get("coarse", 0) + per_chunk.get("faiss", 0),
            "docs_bytes_per_chunk": per_chunk.get("docs", 0),
            "fixed_bytes": fixed_total,
            "bytes_per_chunk_at_100k": total + fixed_total / 100_000,
        })  # fmt: skip
        logger.info("bytes %s", rows[-1])
    return rows


def print_bytes(rows: list[dict[str, Any]]) -> None:
    print("\n| storage | stored vectors | coarse stage | bytes/chunk | vectors | coarse (row + FAISS) "
          "| doc line | fixed (codebook, manifest) | bytes/chunk at 100k |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['storage']} | {r['stored_vectors']} | {r.get('coarse', 'flat')} | "
            f"{r['bytes_per_chunk']:.0f} | "
            f"{r['vector_bytes_per_chunk']:.0f} | {r['coarse_bytes_per_chunk']:.0f} | "
            f"{r['docs_bytes_per_chunk']:.0f} | {r['fixed_bytes']:.0f} | "
            f"{r['bytes_per_chunk_at_100k']:.0f} |"
        )


# ------------------------------------------------------------------------------------ quality
def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from _suite import decoded, suite_sets

    from metaembed_rag.scoring import maxsim

    model_budgets, sets = suite_sets(args.suite, args.max_queries, args.cache_dir)
    keep = args.quality_stored_vectors  # index-time truncation: the first `keep` vectors
    if keep is not None:
        model_budgets = [b for b in model_budgets if b.r_c <= keep]
    budgets = [str(b) for b in model_budgets]
    budget_of = {str(b): b.as_tuple() for b in model_budgets}
    per_set: dict[str, dict[str, dict[str, float]]] = {}
    for st in sets:
        per_set[st.name] = {}
        docs = st.docs if keep is None else st.docs[:, :keep].contiguous()
        for kind in args.kinds:
            t0 = time.perf_counter()
            dec = docs if kind == "float32" else decoded(kind, docs)
            row = {b: st.ndcg(maxsim(st.queries, dec, budget_of[b])) for b in budgets}
            per_set[st.name][kind] = row
            logger.info("%s %s %.0fs %s", st.name, kind, time.perf_counter() - t0, row)
            del dec
    names = list(per_set)
    macro = {
        kind: {b: float(np.mean([per_set[n][kind][b] for n in names])) for b in budgets}
        for kind in args.kinds
    }
    return {"budgets": budgets, "per_set": per_set, "macro": macro,
            "max_queries": args.max_queries, "sets": names,
            "stored_vectors": keep}  # fmt: skip


def print_quality(res: dict[str, Any]) -> None:
    budgets = res["budgets"]
    ref = res["macro"].get("bfloat16")
    kept = res.get("stored_vectors")
    print(f"\nmacro nDCG@10 over {len(res['sets'])} sets (first {res['max_queries']} queries each"
          + (f"; the first {kept} vectors of each chunk stored)" if kept else ")"))  # fmt: skip
    print("| storage | " + " | ".join(f"({b})" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for kind, row in res["macro"].items():
        cells = []
        for b in budgets:
            delta = "" if ref is None or kind == "bfloat16" else f" ({row[b] - ref[b]:+.4f})"
            cells.append(f"{row[b]:.4f}{delta}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------ latency
def _queries(args: argparse.Namespace, d: int) -> torch.Tensor:
    """The timed queries (``--queries`` of 16 vectors, width ``d``): clustered synthetic
    vectors, or with ``--query-vectors repeated`` each query's first one 16 times, as the
    anchored default model's queries are."""
    queries = torch.from_numpy(clustered_queries(args.queries, 16, d, seed=1))
    if args.query_vectors == "repeated":
        queries = queries[:, :1].expand(-1, 16, -1).contiguous()
    return queries


def run_latency(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    d = 384
    out = []
    for n in args.n:
        queries = _queries(args, d)
        for kind in args.kinds:
            folder = workdir / f"lat-{kind}-{n}"
            t0 = time.perf_counter()
            index = MultiVectorIndex(
                d, storage=kind, path=folder, nprobe=args.nprobe,
                coarse_index="flat" if args.rebuild_coarse else args.coarse,
                coarse_vector=args.coarse_vector, stored_vectors=args.latency_stored_vectors,
            )  # fmt: skip
            index.reserve(n)
            for s, docs in enumerate(clustered_documents(n, 64, d, chunk=4096)):
                index.add([str(s * 4096 + i) for i in range(len(docs))], docs)
            if args.rebuild_coarse:  # streaming build on flat, then one coarse build on all
                index.rebuild_coarse(args.coarse)
            build_s = time.perf_counter() - t0
            budget = index.searchable_budgets(SearchParams())[-1]  # the largest it allows
            timed = []  # per fetch_k, timed before the exhaustive pass reads every row
            for fetch_k in args.fetch_k:
                index.search_rows(queries[:2], k=10, fetch_k=fetch_k)  # warm-up
                rng = np.random.default_rng(0)
                cand = rng.integers(0, n, (1, fetch_k))
                exact_t = []
                for i in range(args.queries):
                    t0 = time.perf_counter()
                    index.backend.score(queries[i : i + 1], cand, budget)
                    exact_t.append(time.perf_counter() - t0)
                two_t, two_ids = [], []
                for i in range(args.queries):
                    t0 = time.perf_counter()
                    _, rows = index.search_rows(queries[i : i + 1], k=10, fetch_k=fetch_k)
                    two_t.append(time.perf_counter() - t0)
                    two_ids.append(rows[0].tolist())
                timed.append((fetch_k, exact_t, two_t, two_ids))
            ex_ids = []
            for i in range(args.exhaustive_queries):
                _, rows = index.search_rows(queries[i : i + 1], k=10, mode="exhaustive")
                ex_ids.append(rows[0].tolist())
            for fetch_k, exact_t, two_t, two_ids in timed:
                overlap = float(np.mean([
                    len(set(a) & set(b)) / 10 for a, b in zip(two_ids, ex_ids, strict=False)
                ]))  # fmt: skip
                row = {
                    "n": n, "storage": kind, "stored_vectors": index.stored_vectors,
                    "budget": str(budget), "coarse": index.coarse_kind, "build_s": build_s,
                    "fetch_k": fetch_k, "query_vectors": args.query_vectors,
                    "exact_candidates_per_s": fetch_k / statistics.median(exact_t),
                    "exact_ms_median": 1e3 * statistics.median(exact_t),
                    "two_stage_p50_ms": 1e3 * statistics.median(two_t),
                    "two_stage_p95_ms": 1e3 * float(np.percentile(two_t, 95)),
                    "overlap@10": overlap, "queries": args.queries,
                    "exhaustive_queries": args.exhaustive_queries,
                }  # fmt: skip
                logger.info("latency %s", row)
                out.append(row)
            index.close()
            shutil.rmtree(folder, ignore_errors=True)
    return out


def _stored(row: dict[str, Any]) -> str:
    """`` (16 stored, 8,16)`` for an index-time truncated row and `` (fetch_k 400)`` for a
    row not at :data:`DEFAULT_FETCH_K`, else nothing."""
    notes = []
    if row.get("stored_vectors", 64) < 64:
        notes.append(f"{row['stored_vectors']} stored, {row['budget']}")
    if row.get("fetch_k", DEFAULT_FETCH_K) != DEFAULT_FETCH_K:
        notes.append(f"fetch_k {row['fetch_k']}")
    return f" ({'; '.join(notes)})" if notes else ""


def _repeated(r: dict[str, Any]) -> str:
    return ", repeated query vectors" if r.get("query_vectors") == "repeated" else ""


def print_latency(rows: list[dict[str, Any]]) -> None:
    print("\n| N | storage | coarse | exact stage (cand/s) | two-stage p50 ms | p95 ms | "
          "overlap@10 vs exhaustive | build s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['storage']}{_stored(r)}{_repeated(r)} | {r['coarse']} | "
            f"{r['exact_candidates_per_s']:.0f} | "
            f"{r['two_stage_p50_ms']:.1f} | {r['two_stage_p95_ms']:.1f} | "
            f"{r['overlap@10']:.3f} | {r['build_s']:.0f} |"
        )


def run_kernel(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Exact stage alone: 200 random candidates of ``--kernel-n`` rows in RAM, budget (16,64),
    D=384, one query per call; float kinds through ``maxsim_ids`` on the stored dtype, int8
    dequantised first (as the index does), residual kinds through the residual kernel on
    random codes with a codebook trained on random unit vectors (speed does not depend on
    the values)."""
    from metaembed_rag.budget import Budget
    from metaembed_rag.index.coarse import CoarseIndex
    from metaembed_rag.index.local import LocalBackend
    from metaembed_rag.index.rowset import RowSet

    d, k, n, m = 384, 64, args.kernel_n, 200
    rng = np.random.default_rng(0)
    queries = _queries(args, d)
    cand = rng.integers(0, n, (args.queries, m))
    out = []
    for kind in args.kinds:
        codec = VectorCodec(kind, d, num_vectors=k)
        rows = RowSet(k, d, codec, "mean", None)
        if codec.codebook is not None:
            sample = next(iter(clustered_documents(512, k, d)))
            codec.codebook.train(sample.reshape(-1, d))
            width = codec.codebook.code_bytes
            rows.vectors.append(rng.integers(0, 256, (n, k, width), dtype=np.uint8))
            assert rows.side is not None
            ncent = codec.codebook.centroids.shape[0]
            rows.side[1].append(rng.integers(0, ncent, (n, k)).astype(np.uint16))
        else:
            for docs in clustered_documents(n, k, d, chunk=2048):
                stored, side = codec.encode(docs)
                rows.vectors.append(stored)
                if rows.side is not None:
                    rows.side[1].append(side)
        rows.coarse.append(np.zeros((n, d), dtype=rows.coarse.dtype))
        backend = LocalBackend(rows, CoarseIndex(d, "flat"))
        budget = Budget(16, 64)
        backend.score(queries[:1], cand[:1], budget)  # warm-up
        times = []
        for i in range(args.queries):
            t0 = time.perf_counter()
            backend.score(queries[i : i + 1], cand[i : i + 1], budget)
            times.append(time.perf_counter() - t0)
        row = {
            "storage": kind, "rows": n, "candidates": m, "query_vectors": args.query_vectors,
            "exact_ms_median": 1e3 * statistics.median(times),
            "exact_candidates_per_s": m / statistics.median(times),
        }  # fmt: skip
        logger.info("kernel %s", row)
        out.append(row)
        rows.close()
    return out


def print_kernel(rows: list[dict[str, Any]]) -> None:
    print("\n| storage | query vectors | exact stage ms (200 candidates, (16,64)) | candidates/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['storage']} | {r['query_vectors']} | {r['exact_ms_median']:.2f} | "
            f"{r['exact_candidates_per_s']:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["bytes", "quality", "latency"],
                   choices=["bytes", "quality", "latency", "kernel", "peers"])  # fmt: skip
    p.add_argument("--kinds", nargs="+", default=KINDS)
    p.add_argument("--stored-vectors", type=int, nargs="*", default=[16],
                   help="bytes part: also measure index-time truncation to these r_c")  # fmt: skip
    p.add_argument("--bytes-n", type=int, default=2000)
    p.add_argument(
        "--bytes-coarse",
        nargs="+",
        choices=["flat", "hnsw", "ivf"],
        default=["flat"],
        help="bytes part: coarse stages to measure (flat saves no FAISS file)",
    )
    p.add_argument("--suite", type=Path, default=HERE / "zero-shot-suite.txt")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--max-queries", type=int, default=500)
    p.add_argument(
        "--quality-stored-vectors",
        type=int,
        default=None,
        help="quality part: store only the first R vectors of each chunk (index-time "
        "truncation; the codebooks train on them) and report the budgets r_c <= R",
    )
    p.add_argument("--n", type=int, nargs="+", default=[100_000])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--kernel-n", type=int, default=20_000, help="kernel part: rows in RAM")
    p.add_argument("--query-vectors", choices=["distinct", "repeated"], default="distinct",
                   help="kernel and latency parts: 16 distinct query vectors, or one repeated 16 times "
                   "(the anchored default model's queries)")  # fmt: skip
    p.add_argument("--exhaustive-queries", type=int, default=5)
    p.add_argument("--coarse", choices=COARSE_KINDS, default="auto",
                   help="latency part: the coarse index kind (auto: flat below 200k)")  # fmt: skip
    p.add_argument("--coarse-vector", choices=["mean", "first"], default="mean",
                   help="latency part: the coarse vector; mean (default) because the synthetic "
                        "vectors have no trained (1,1) first vector")  # fmt: skip
    p.add_argument("--rebuild-coarse", action="store_true",
                   help="latency part: add into a flat coarse index, then build the --coarse "
                        "kind once over the whole collection (IVF then trains on all of it)")  # fmt: skip
    p.add_argument("--nprobe", type=int, default=32, help="latency part: IVF lists visited")
    p.add_argument("--fetch-k", type=int, nargs="+", default=[DEFAULT_FETCH_K],
                   help="latency part: coarse candidates reranked (one row each, same index)")  # fmt: skip
    p.add_argument("--latency-stored-vectors", type=int, default=None,
                   help="latency part: index-time truncation (searched at the largest budget "
                        "it allows)")  # fmt: skip
    p.add_argument("--plaid-python", type=Path, default=None,
                   help="peers part: an interpreter with fast-plaid (benchmarks/plaid_peer.py)")  # fmt: skip
    p.add_argument("--plaid-nbits", type=int, nargs="+", default=[2, 4],
                   help="peers part: PLAID residual bits to build (one index each)")  # fmt: skip
    p.add_argument("--peers-n", type=int, default=5000,
                   help="peers part: documents (Voyager indexes every one of their vectors)")  # fmt: skip
    p.add_argument("--k-token", type=int, default=100,
                   help="peers part: Voyager neighbours per query vector (PyLate's k_token)")  # fmt: skip
    p.add_argument("--threads", type=int, default=_THREADS_DEFAULT)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"threads": args.threads, "load": os.getloadavg()}
    workdir = Path(tempfile.mkdtemp(prefix="compression-", dir=args.workdir))
    try:
        if "bytes" in args.parts:
            results["bytes"] = run_bytes(args, workdir)
            print_bytes(results["bytes"])
        if "quality" in args.parts:
            results["quality"] = run_quality(args)
            print_quality(results["quality"])
        if "kernel" in args.parts:
            results["kernel"] = run_kernel(args)
            print_kernel(results["kernel"])
        if "latency" in args.parts:
            results["latency"] = run_latency(args, workdir)
            print_latency(results["latency"])
        if "peers" in args.parts:
            from peers import print_peers, run_peers

            results["peers"] = run_peers(args, workdir)
            print_peers(results["peers"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
