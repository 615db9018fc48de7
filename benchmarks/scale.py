"""Build a large memory-mapped index by streaming, reopen it, and serve queries.

Synthetic clustered unit vectors (K=64 stored, D=128 by default, bfloat16): 1,000,000 documents
is 16 GiB of vectors on disk. The build never holds the collection in RAM: chunks are generated,
converted and appended to the memory-mapped files. The coarse index is flat while streaming
(cheap appends) and rebuilt once at the end (``--coarse``; IVF by default: one k-means over a
200k sample instead of a long HNSW build on two cores).

Prints build time, disk size, load time, resident memory while serving (VmRSS, RssAnon, RssFile
from /proc/self/status) and p50/p95 latency of two-stage search (fetch_k=200, (16,64)).

Usage::

    python benchmarks/scale.py --n 1000000 --dir /tmp/metaembed-scale --json scale.json
    python benchmarks/scale.py --n 20000 --keep      # small run, keep the index folder

Write the index outside the repository (default under /tmp); it is deleted at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import _env  # before numpy / torch: thread settings, import paths

_env.setup(2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _synthetic import clustered_documents, clustered_queries  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from metaembed_rag.index import MultiVectorIndex  # noqa: E402


def proc_status() -> dict[str, float]:
    """VmRSS / RssAnon / RssFile / VmHWM of this process in MiB."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key + "_MiB"] = int(value.split()[0]) / 1024
    return out


def dir_bytes(folder: Path) -> int:
    """Bytes actually allocated on disk (sparse-aware) under ``folder``."""
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--dir", type=Path, default=Path("/tmp/metaembed-scale"))
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--coarse", default="ivf", choices=["flat", "hnsw", "ivf"])
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--fetch-k", type=int, default=200)
    p.add_argument("--verify", action="store_true", help="verify every checksum on load")
    p.add_argument("--keep", action="store_true", help="keep the index folder afterwards")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if "/work/main" in str(args.dir.resolve()):
        p.error("write the index outside the repository (e.g. under /tmp)")
    if args.dir.exists():
        shutil.rmtree(args.dir)
    busy = subprocess.run(["pgrep", "-f", "benchmarks/maxsim.py"], capture_output=True, text=True)
    res: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "vectors_per_doc": 64, "dtype": args.dtype,
        "coarse": args.coarse, "loadavg_start": os.getloadavg(),
        "maxsim_benchmark_running": bool(busy.stdout.split()),
    }  # fmt: skip

    # ---- build by streaming chunks into the memory-mapped files
    t0 = time.perf_counter()
    index = MultiVectorIndex(
        args.dim, dtype=args.dtype, path=args.dir, coarse_index="flat", nprobe=args.nprobe
    )
    index.reserve(args.n)
    bar = tqdm(total=args.n, unit="doc", desc="Building", mininterval=5)
    for i, docs in enumerate(clustered_documents(args.n, 64, args.dim, chunk=args.chunk)):
        start = i * args.chunk
        index.add([f"doc-{start + j}" for j in range(len(docs))], docs)
        bar.update(len(docs))
    bar.close()
    res["stream_seconds"] = time.perf_counter() - t0
    res["rss_after_stream"] = proc_status()
    t1 = time.perf_counter()
    if args.coarse != "flat":
        index.rebuild_coarse(args.coarse)
    res["coarse_build_seconds"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    index.save()
    res["save_seconds"] = time.perf_counter() - t2
    res["build_seconds"] = time.perf_counter() - t0
    index.close()
    del index
    res["disk_bytes"] = dir_bytes(args.dir)
    res["disk_files"] = {p.name: p.stat().st_size for p in sorted(args.dir.iterdir())}

    # ---- reopen memory-mapped and serve
    t3 = time.perf_counter()
    index = MultiVectorIndex.load(args.dir, mmap=True, verify=args.verify)
    res["load_seconds"] = time.perf_counter() - t3
    res["rss_after_load"] = proc_status()
    queries = torch.from_numpy(clustered_queries(args.queries, 16, args.dim, seed=1))
    index.search_rows(queries[:1], k=10, fetch_k=args.fetch_k)
    lat = []
    for i in range(args.queries):
        s = time.perf_counter()
        index.search_rows(queries[i : i + 1], k=10, fetch_k=args.fetch_k, rerank_budget=(16, 64))
        lat.append(time.perf_counter() - s)
    res["latency_ms"] = {
        "p50": 1e3 * float(np.percentile(lat, 50)),
        "p95": 1e3 * float(np.percentile(lat, 95)),
        "mean": 1e3 * float(np.mean(lat)),
        "queries": args.queries,
        "fetch_k": args.fetch_k,
        "budget": "16,64",
    }
    res["rss_while_serving"] = proc_status()
    res["loadavg_end"] = os.getloadavg()
    index.close()
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)

    gib = 1024**3
    print(
        f"\nScale benchmark: {args.n:,} docs x 64 x D={args.dim} ({args.dtype}), coarse {args.coarse}"
    )
    print(f"build: {res['build_seconds']:.0f} s (stream {res['stream_seconds']:.0f} s, coarse "
          f"{res['coarse_build_seconds']:.0f} s, save+checksums {res['save_seconds']:.0f} s)")  # fmt: skip
    print(f"disk: {res['disk_bytes'] / gib:.2f} GiB")
    print(f"load (mmap, verify={args.verify}): {res['load_seconds']:.1f} s")
    r = res["rss_while_serving"]
    print(f"RSS while serving: {r['VmRSS_MiB']:.0f} MiB (anon {r['RssAnon_MiB']:.0f}, "
          f"file-backed {r['RssFile_MiB']:.0f}); peak during the run {r['VmHWM_MiB']:.0f} MiB")  # fmt: skip
    lat_ms = res["latency_ms"]
    print(f"latency ({args.queries} queries, one per call, fetch_k={args.fetch_k}, (16,64)): "
          f"p50 {lat_ms['p50']:.1f} ms, p95 {lat_ms['p95']:.1f} ms")  # fmt: skip
    print(f"load average start {res['loadavg_start']}, end {res['loadavg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
