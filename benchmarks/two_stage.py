"""Benchmark two-stage search (FAISS coarse recall + exact MaxSim rerank) against exhaustive MaxSim.

Parts (``--parts``, default all):

* ``scifact`` - SciFact (BEIR layout, ``--data``) encoded with ``--model`` (default
  ``MetaEmbedModel.from_backbone()``) as ``metaembed-rag eval`` encodes it (titled documents,
  ``metaembed_rag.evaluation.encode_corpus``; document vectors from the eval cache under
  ``--cache-dir``, default the eval's own, so a run after ``metaembed-rag eval`` encodes only
  the queries): top-10 overlap of two-stage (``--fetch-k``, several values) vs exhaustive
  (16,64), and nDCG@10 / Recall@10 of both, for ``coarse_vector`` "first" and "mean".
* ``latency`` - synthetic clustered unit vectors, N = ``--n`` (100k), D in ``--dims``
  (384 128), K=64, Kq=16, budget (16,64): median per-query latency of two-stage
  (fetch_k=200) and exhaustive MaxSim in the same run, and their ratio.
* ``build`` - index build time (add + save) and bytes per document for each stored dtype.

Usage::

    python benchmarks/two_stage.py                          # everything, prints tables
    python benchmarks/two_stage.py --parts scifact --json bench-results/two_stage.json
    python benchmarks/two_stage.py --parts latency --n 20000 --dims 128   # quick

Timing runs should have the machine to themselves: the script records the load average and
whether ``benchmarks/maxsim.py`` was running when it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
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
from metaembed_rag.metrics import evaluate  # noqa: E402
from metaembed_rag.scoring import kernel_info  # noqa: E402

logger = logging.getLogger("two_stage")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"


def machine_state() -> dict[str, Any]:
    """Load average and competing benchmark processes, recorded with the results."""
    try:
        busy = subprocess.run(
            ["pgrep", "-f", "benchmarks/maxsim.py"], capture_output=True, text=True
        ).stdout.split()
    except OSError:
        busy = []
    return {
        "loadavg": os.getloadavg(),
        "maxsim_benchmark_running": bool(busy),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "kernel": kernel_info(),
        "platform": platform.platform(),
        "faiss": __import__("faiss").__version__,
    }


def overlap_at_k(a: list[list[str]], b: list[list[str]], k: int = 10) -> float:
    """Mean |top-k(a) & top-k(b)| / k over queries."""
    return float(np.mean([len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b, strict=True)]))


# ---------------------------------------------------------------------------------------- SciFact
def run_scifact(args: argparse.Namespace) -> dict[str, Any]:
    from metaembed_rag import MetaEmbedModel

    model = (
        MetaEmbedModel.from_pretrained(args.model) if args.model else MetaEmbedModel.from_backbone()
    )
    from metaembed_rag.data import load_beir
    from metaembed_rag.evaluation import encode_corpus
    from metaembed_rag.vector_cache import default_cache_dir

    ds = load_beir(args.data, "test")
    qids = sorted(ds.qrels)
    qrels = {qid: ds.qrels[qid] for qid in qids}
    doc_ids, d, _ = encode_corpus(model, ds, cache_dir=args.cache_dir or default_cache_dir())
    q = model.encode_queries([ds.queries[qid] for qid in qids], show_progress_bar=True)
    out: dict[str, Any] = {
        "model": args.model
        or "MetaEmbedModel.from_backbone() (packaged MiniLM, untrained Meta tokens)",
        "fingerprint": model.fingerprint(),
        "docs": len(doc_ids),
        "queries": len(qids),
        "dtype": args.dtype,
        "runs": [],
    }
    exhaustive_ids: list[list[str]] | None = None
    for coarse_vector in ("first", "mean"):
        index = MultiVectorIndex.for_model(model, dtype=args.dtype, coarse_vector=coarse_vector)
        index.add(doc_ids, d)
        if exhaustive_ids is None:
            t0 = time.perf_counter()
            _, rows = index.search_rows(q, k=100, mode="exhaustive", rerank_budget=(16, 64))
            ex_time = time.perf_counter() - t0
            exhaustive_ids = index.ids_of(rows)
            ex_metrics = evaluate(dict(zip(qids, exhaustive_ids, strict=True)), qrels, ks=(10, 100))
            out["exhaustive"] = {"seconds": ex_time, **ex_metrics}
            for budget in ((1, 1), (8, 16)):
                _, rows = index.search_rows(q, k=100, mode="exhaustive", rerank_budget=budget)
                ranks = dict(zip(qids, index.ids_of(rows), strict=True))
                out[f"exhaustive_{budget[0]}_{budget[1]}"] = evaluate(ranks, qrels, ks=(10, 100))
        for fetch_k in args.fetch_ks:
            t0 = time.perf_counter()
            _, rows = index.search_rows(q, k=10, fetch_k=fetch_k, rerank_budget=(16, 64))
            seconds = time.perf_counter() - t0
            ids = index.ids_of(rows)
            metrics = evaluate(dict(zip(qids, ids, strict=True)), qrels, ks=(10,))
            out["runs"].append({
                "coarse_vector": coarse_vector,
                "fetch_k": fetch_k,
                "overlap@10": overlap_at_k(ids, exhaustive_ids),
                "ndcg@10": metrics["ndcg@10"],
                "ndcg@10_delta": metrics["ndcg@10"] - out["exhaustive"]["ndcg@10"],
                "recall@10": metrics["recall@10"],
                "seconds": seconds,
            })  # fmt: skip
    return out


def print_scifact(res: dict[str, Any]) -> None:
    ex = res["exhaustive"]
    print(f"\nSciFact ({res['docs']} docs, {res['queries']} test queries), model {res['model']}, "
          f"fingerprint {res['fingerprint']}, stored {res['dtype']}")  # fmt: skip
    print(f"exhaustive (16,64): nDCG@10 {ex['ndcg@10']:.4f}  Recall@10 {ex['recall@10']:.4f}  "
          f"Recall@100 {ex['recall@100']:.4f}  ({ex['seconds']:.1f} s)")  # fmt: skip
    for b in ("1_1", "8_16"):
        m = res[f"exhaustive_{b}"]
        print(f"exhaustive ({b.replace('_', ',')}): nDCG@10 {m['ndcg@10']:.4f}  "
              f"Recall@100 {m['recall@100']:.4f}")  # fmt: skip
    print(
        "| coarse vector | fetch_k | top-10 overlap vs exhaustive | nDCG@10 | delta | Recall@10 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in res["runs"]:
        print(f"| {r['coarse_vector']} | {r['fetch_k']} | {r['overlap@10']:.4f} | "
              f"{r['ndcg@10']:.4f} | {r['ndcg@10_delta']:+.4f} | {r['recall@10']:.4f} |")  # fmt: skip


# ---------------------------------------------------------------------------------------- latency
def _build_synthetic(
    n: int, d: int, dtype: str, folder: Path, chunk: int = 4096
) -> tuple[MultiVectorIndex, float]:
    t0 = time.perf_counter()
    index = MultiVectorIndex(d, dtype=dtype, path=folder, coarse_index="flat")
    index.reserve(n)
    for s, docs in enumerate(clustered_documents(n, 64, d, chunk=chunk)):
        start = s * chunk
        index.add([str(start + i) for i in range(len(docs))], docs)
    return index, time.perf_counter() - t0


def run_latency(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for d in args.dims:
        folder = workdir / f"latency-{d}"
        index, build_s = _build_synthetic(args.n, d, "bfloat16", folder)
        queries = torch.from_numpy(clustered_queries(args.queries, 16, d, seed=1))
        # warm-up (page in the memory map, first-call overheads)
        index.search_rows(queries[:2], k=10, fetch_k=args.fetch_k)
        index.search_rows(queries[:1], k=10, mode="exhaustive")
        two_t, two_ids = [], []
        for i in range(args.queries):
            t0 = time.perf_counter()
            _, rows = index.search_rows(queries[i : i + 1], k=10, fetch_k=args.fetch_k)
            two_t.append(time.perf_counter() - t0)
            two_ids += index.ids_of(rows)
        ex_t, ex_ids = [], []
        for i in range(args.exhaustive_queries):
            t0 = time.perf_counter()
            _, rows = index.search_rows(queries[i : i + 1], k=10, mode="exhaustive")
            ex_t.append(time.perf_counter() - t0)
            ex_ids += index.ids_of(rows)
        batch_t0 = time.perf_counter()
        index.search_rows(queries, k=10, fetch_k=args.fetch_k)
        batch_s = time.perf_counter() - batch_t0
        res = {
            "n": args.n, "dim": d, "dtype": "bfloat16", "budget": "16,64", "fetch_k": args.fetch_k,
            "coarse": index.coarse_kind, "build_seconds": build_s,
            "two_stage_median_ms": 1e3 * statistics.median(two_t),
            "two_stage_p95_ms": 1e3 * float(np.percentile(two_t, 95)),
            "two_stage_batch_ms_per_query": 1e3 * batch_s / args.queries,
            "exhaustive_median_ms": 1e3 * statistics.median(ex_t),
            "speedup_median": statistics.median(ex_t) / statistics.median(two_t),
            "overlap@10": overlap_at_k(two_ids[: len(ex_ids)], ex_ids),
            "queries_timed": [args.queries, args.exhaustive_queries],
        }  # fmt: skip
        results.append(res)
        index.close()
        shutil.rmtree(folder, ignore_errors=True)
    return results


def print_latency(rows: list[dict[str, Any]]) -> None:
    print("\nLatency, synthetic clustered vectors, K=64, Kq=16, budget (16,64), bf16, 1 query/call")
    print("| N | D | coarse | two-stage median ms (p95) | exhaustive median ms | speed-up | "
          "overlap@10 |")  # fmt: skip
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['dim']} | {r['coarse']} | {r['two_stage_median_ms']:.2f} "
              f"({r['two_stage_p95_ms']:.2f}) | {r['exhaustive_median_ms']:.1f} | "
              f"{r['speedup_median']:.0f}x | {r['overlap@10']:.3f} |")  # fmt: skip


# ---------------------------------------------------------------------------------------- build
def run_build(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    out = []
    for d in args.build_dims:
        for dtype in ("bfloat16", "float16", "float32", "int8"):
            folder = workdir / f"build-{d}-{dtype}"
            index, add_s = _build_synthetic(args.build_n, d, dtype, folder)
            t0 = time.perf_counter()
            index.save()
            save_s = time.perf_counter() - t0
            disk = sum(p.stat().st_size for p in folder.iterdir())
            out.append({
                "n": args.build_n, "dim": d, "dtype": dtype, "add_seconds": add_s,
                "save_seconds": save_s, "bytes_per_document": index.bytes_per_document,
                "disk_bytes_per_document": disk / args.build_n,
            })  # fmt: skip
            index.close()
            shutil.rmtree(folder, ignore_errors=True)
    return out


def print_build(rows: list[dict[str, Any]]) -> None:
    print("\nBuild (synthetic, K=64, flat coarse; add = encode to dtype + write memmap + FAISS add;"
          " save = checksums + sidecars)")  # fmt: skip
    print("| N | D | dtype | add s | save s | bytes/doc (vectors+coarse) | on disk bytes/doc |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['dim']} | {r['dtype']} | {r['add_seconds']:.1f} | "
              f"{r['save_seconds']:.1f} | {r['bytes_per_document']:,} | "
              f"{r['disk_bytes_per_document']:,.0f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["scifact", "latency", "build"],
                   choices=["scifact", "latency", "build"])  # fmt: skip
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default=None, help="saved MetaEmbedModel folder or hub id")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="document vector cache (default: metaembed-rag eval's)")  # fmt: skip
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--fetch-ks", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument("--fetch-k", type=int, default=200)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 128])
    p.add_argument("--queries", type=int, default=50, help="queries timed for two-stage")
    p.add_argument("--exhaustive-queries", type=int, default=5)
    p.add_argument("--build-n", type=int, default=50_000)
    p.add_argument("--build-dims", type=int, nargs="+", default=[128])
    p.add_argument("--threads", type=int, default=_THREADS_DEFAULT)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: /tmp)")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    results: dict[str, Any] = {"machine_at_start": machine_state(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}  # fmt: skip
    if results["machine_at_start"]["maxsim_benchmark_running"]:
        print("WARNING: benchmarks/maxsim.py is running; timings will be disturbed.")
    workdir = Path(tempfile.mkdtemp(prefix="two-stage-", dir=args.workdir))
    try:
        if "scifact" in args.parts:
            results["scifact"] = run_scifact(args)
            print_scifact(results["scifact"])
        if "latency" in args.parts:
            results["latency"] = run_latency(args, workdir)
            print_latency(results["latency"])
        if "build" in args.parts:
            results["build"] = run_build(args, workdir)
            print_build(results["build"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine_at_end"] = machine_state()
    print(f"\nload average at start {results['machine_at_start']['loadavg']}, "
          f"at end {results['machine_at_end']['loadavg']}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
