"""Scale-out: the local backend vs Qdrant (qdrant-client local mode) on the same vectors, and
Ray encoding throughput with 1 and 2 workers.

Part ``index``: synthetic clustered unit vectors (``benchmarks/_synthetic.py``, K=64 per
document, D=128 by default) go into (a) the local backend (bfloat16 rows, flat FAISS coarse
stage, a folder) and (b) a Qdrant collection in local mode (float32, in RAM, or a folder with
``--qdrant-on-disk``; the full 64 as one MAX_SIM multi-vector, optionally also the prefix
groups: ``--prefixes 64 4+16+64``). For each: build time, bytes on disk (local backend; Qdrant
with ``--qdrant-on-disk``), stored vector bytes per document, two-stage search at (16,64) with ``fetch_k`` (recall@10 against exhaustive float32 MaxSim
over every document, and p50/p95 latency per query).

Part ``ray``: the default model encodes SciFact documents with :class:`RayEncoder` on a local
Ray cluster with 1 and 2 one-thread workers, and in this process (1 thread) for reference;
documents per second after one warm-up call.

Usage::

    nice -n 10 python benchmarks/scale_out.py --n 100000 --dim 64 --json scale-out.json
    python benchmarks/scale_out.py --parts index --n 2000 --queries 5    # quick

Qdrant local mode is the Python reference implementation of the Qdrant API (numpy brute
force, pickled points in SQLite): it shows that the schema and the queries are right and what
they return, not how fast or how small a Qdrant server is (see docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _env  # before numpy / torch: thread settings, import paths

_env.setup(1)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _synthetic import clustered_documents, clustered_queries  # noqa: E402

from metaembed_rag.index import MultiVectorIndex  # noqa: E402
from metaembed_rag.scoring import maxsim  # noqa: E402

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"


def _exhaustive_top(docs: list[np.ndarray], q: torch.Tensor, k: int) -> list[set[int]]:
    """The true top-k document numbers of each query: float32 MaxSim (16,64) over all."""
    scores = torch.cat([maxsim(q, torch.from_numpy(c), (16, 64)) for c in docs], dim=1)
    return [set(row.tolist()) for row in scores.topk(k, dim=1).indices]


def _search(index: MultiVectorIndex, q: torch.Tensor, fetch_k: int, k: int) -> dict[str, Any]:
    index.search(q[:1], k, fetch_k=fetch_k)  # warm-up
    times, found = [], []
    for i in range(q.shape[0]):
        t = time.perf_counter()
        hits = index.search(q[i : i + 1], k, fetch_k=fetch_k)[0]
        times.append(time.perf_counter() - t)
        found.append({int(h.id) for h in hits})
    ms = sorted(1000 * t for t in times)
    return {"found": found, "p50_ms": statistics.median(ms),
            "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]}  # fmt: skip


def run_index(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from qdrant_client import QdrantClient

    from metaembed_rag.index.qdrant import QdrantBackend

    budgets = [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]
    docs = list(clustered_documents(args.n, 64, args.dim, chunk=args.chunk, seed=1))
    q = torch.from_numpy(clustered_queries(args.queries, 16, args.dim, seed=1))
    truth = _exhaustive_top(docs, q, args.k)
    setups: list[tuple[str, Any, Path]] = [
        ("local (bfloat16, flat FAISS)", lambda: MultiVectorIndex(
            args.dim, num_vectors=64, budgets=budgets, coarse_index="flat",
            path=work / "local"), work / "local"),
    ]  # fmt: skip
    for prefixes in args.prefixes:
        name = "+".join(str(p) for p in prefixes)

        def make(prefixes: tuple[int, ...] = prefixes, name: str = name) -> MultiVectorIndex:
            client = (QdrantClient(path=str(work / f"qdrant-{name}")) if args.qdrant_on_disk
                      else QdrantClient(":memory:"))  # fmt: skip
            backend = QdrantBackend(client, "bench", args.dim, 64, prefixes=prefixes,
                                    write_batch=args.write_batch)  # fmt: skip
            return MultiVectorIndex(args.dim, num_vectors=64, budgets=budgets,
                                    dtype="float32", backend=backend)  # fmt: skip

        setups.append((f"Qdrant local mode (float32, mv {name})", make, work / f"qdrant-{name}"))
    rows = []
    for label, make, folder in setups:
        t0 = time.perf_counter()
        index = make()
        start = 0
        for chunk in docs:
            ids = [str(i) for i in range(start, start + len(chunk))]
            index.add(ids, chunk)
            start += len(chunk)
        if index.path is not None:
            index.save()
        build = time.perf_counter() - t0
        disk = _env.disk_bytes(folder) if folder.exists() else None
        res = _search(index, q, args.fetch_k, args.k)
        recall = float(
            np.mean([len(f & t) / args.k for f, t in zip(res["found"], truth, strict=True)])
        )
        per_doc = index.bytes_per_document
        index.close()
        rows.append({"backend": label, "n": args.n, "dim": args.dim, "build_s": build,
                     "docs_per_s": args.n / build, "disk_bytes": disk,
                     "bytes_per_doc_stored": per_doc,
                     f"recall@{args.k}": recall, "p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"],
                     "fetch_k": args.fetch_k})  # fmt: skip
        shown = "in RAM" if disk is None else f"{disk / 2**20:.0f} MiB"
        print(f"{label}: build {build:.1f} s, disk {shown}, stored {per_doc} B/doc, "
              f"recall@{args.k} {recall:.3f}, p50 {res['p50_ms']:.1f} ms, "
              f"p95 {res['p95_ms']:.1f} ms", flush=True)  # fmt: skip
    return rows


def run_ray(args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    from metaembed_rag.distributed import RayEncoder
    from metaembed_rag.hub import load_model
    from metaembed_rag.model import DEFAULT_MODEL

    texts = []
    with SCIFACT.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts.append(f"{d['title']}. {d['text']}")
            if len(texts) == args.ray_docs + 32:
                break
    warm, texts = texts[:32], texts[32:]
    torch.set_num_threads(1)
    model = load_model(DEFAULT_MODEL, "cpu")
    model.encode_documents(warm, batch_size=32)
    t0 = time.perf_counter()
    model.encode_documents(texts, batch_size=32)
    rows = [{"setup": "one process, 1 thread", "docs": len(texts),
             "docs_per_s": len(texts) / (time.perf_counter() - t0)}]  # fmt: skip
    print(f"one process: {rows[-1]['docs_per_s']:.1f} docs/s", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for workers in (1, 2):
            enc = RayEncoder(DEFAULT_MODEL, num_workers=workers)
            enc.encode_documents(warm, batch_size=16)  # loads the model in every worker
            t0 = time.perf_counter()
            enc.encode_documents(texts, batch_size=16)
            rate = len(texts) / (time.perf_counter() - t0)
            enc.close()
            rows.append({"setup": f"Ray, {workers} worker(s) x 1 thread", "docs": len(texts),
                         "docs_per_s": rate})  # fmt: skip
            print(f"Ray {workers} worker(s): {rate:.1f} docs/s", flush=True)
    finally:
        ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=["index", "ray"], default=["index", "ray"])
    p.add_argument("--n", type=int, default=100000, help="documents (default 100000)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--fetch-k", type=int, default=200)
    p.add_argument("--write-batch", type=int, default=256)
    p.add_argument(
        "--prefixes",
        type=lambda s: tuple(int(x) for x in s.split("+")),
        nargs="+",
        default=[(64,)],
        help="Qdrant setups: stored prefix groups, e.g. 64 4+16+64",
    )
    p.add_argument(
        "--qdrant-on-disk",
        action="store_true",
        help="local mode in a folder (pickled points in SQLite: slow) for its disk size",
    )
    p.add_argument("--ray-docs", type=int, default=256)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="scale-out-", dir=args.workdir))
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        if "index" in args.parts:
            out["index"] = run_index(args, work)
        if "ray" in args.parts:
            out["ray"] = run_ray(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
