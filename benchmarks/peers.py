"""The ``peers`` part of ``benchmarks/compression.py``: this project's index beside PyLate's
Voyager approach, fed the same stored vectors (synthetic, no model).

PyLate's ``indexes.Voyager`` + ``retrieve.ColBERT``: a Voyager HNSW graph over *every* stored
vector (inner product, M=64, ef_construction=200, ef_search=200, PyLate's defaults); a query
asks each of its vectors for its ``k_token`` nearest stored vectors, the documents they belong
to are the candidates, and those are reranked by exact MaxSim on float32 copies of the
documents' vectors (PyLate keeps them in a pickled dict). It is built here with ``voyager``
directly (``pip install voyager``), following PyLate 1.6's code: importing ``pylate`` itself
needs ``datasets`` and the rest of PyLate's pinned stack, which does not install beside this
project's versions.

PyLate's PLAID index (``fast-plaid``) is measured with ``--plaid-python PYTHON``: its wheels pin
``torch==2.11.0`` (this project: 2.13), so it runs in its own environment. The same vectors are
written as ``.npy`` files and ``benchmarks/plaid_peer.py`` builds and searches them there, once
per ``--plaid-nbits`` (fast-plaid's defaults otherwise: ``n_ivf_probe`` 8, ``n_full_scores``
4096); without the option the PLAID rows are left out and the log says so.

Measured for each side: build seconds, bytes per chunk on disk (Voyager: the saved graph plus
the float32 vectors its rerank reads), recall@10 against exhaustive float32 MaxSim at (16,64),
and single-query latency p50/p95.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _env import disk_bytes
from _synthetic import clustered_documents, clustered_queries

from metaembed_rag.budget import Budget
from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.scoring import maxsim

logger = logging.getLogger("peers")

D, K, QV, FETCH_K = 384, 64, 16, 200
VOYAGER = {"M": 64, "ef_construction": 200, "ef_search": 200}


def _timed(fn: Any, queries: torch.Tensor) -> tuple[list[list[int]], list[float]]:
    ids, times = [], []
    fn(queries[0])  # warm-up
    for q in queries:
        t0 = time.perf_counter()
        ids.append(fn(q))
        times.append(time.perf_counter() - t0)
    return ids, times


def _row(side: str, n: int, build_s: float, nbytes: int, ids: list[list[int]],
         truth: list[list[int]], times: list[float]) -> dict[str, Any]:  # fmt: skip
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))
    return {
        "side": side, "n": n, "build_s": build_s, "bytes_per_chunk": nbytes / n,
        "recall@10": recall, "p50_ms": 1e3 * statistics.median(times),
        "p95_ms": 1e3 * float(np.percentile(times, 95)), "queries": len(times),
    }  # fmt: skip


def run_peers(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    try:
        from voyager import Index, Space
    except ImportError as exc:  # an optional peer: say how to get it
        raise SystemExit(
            "the peers part needs voyager: pip install voyager (or the bench extra)"
        ) from exc
    n = args.peers_n
    docs = torch.from_numpy(np.concatenate(list(clustered_documents(n, K, D, chunk=4096))))
    queries = torch.from_numpy(clustered_queries(args.queries, QV, D, seed=1))
    budget = Budget(QV, K)
    exact = maxsim(queries, docs, budget)  # (nq, n) float32, the reference
    truth = [torch.topk(row, 10).indices.tolist() for row in exact]
    out = []

    # ---- this project: every storage kind asked for, two-stage search at (16,64)
    for kind in args.kinds:
        folder = workdir / f"peers-{kind}"
        t0 = time.perf_counter()
        index = MultiVectorIndex(D, storage=kind, path=folder, coarse_index="flat",
                                 coarse_vector=args.coarse_vector)  # fmt: skip
        for s in range(0, n, 4096):
            index.add([str(i) for i in range(s, min(n, s + 4096))], docs[s : s + 4096])
        index.save()
        build_s = time.perf_counter() - t0

        def ours(q: torch.Tensor, index: MultiVectorIndex = index) -> list[int]:
            _, rows = index.search_rows(q[None], k=10, fetch_k=FETCH_K, rerank_budget=budget)
            return rows[0].tolist()

        ids, times = _timed(ours, queries)
        out.append(_row(f"metaembed-rag {kind}", n, build_s, disk_bytes(folder), ids,
                        truth, times))  # fmt: skip
        logger.info("peers %s", out[-1])
        index.close()
        shutil.rmtree(folder, ignore_errors=True)

    # ---- PyLate's Voyager approach on the same vectors
    t0 = time.perf_counter()
    graph = Index(Space.InnerProduct, num_dimensions=D, M=VOYAGER["M"],
                  ef_construction=VOYAGER["ef_construction"])  # fmt: skip
    graph.add_items(docs.reshape(-1, D).numpy(), num_threads=args.threads)
    build_s = time.perf_counter() - t0
    path = workdir / "voyager.index"
    graph.save(str(path))
    nbytes = path.stat().st_size + docs.numel() * 4  # + the float32 vectors the rerank reads
    path.unlink()

    def voyager(q: torch.Tensor) -> list[int]:
        found, _ = graph.query(q.numpy(), k=args.k_token, num_threads=1,
                               query_ef=VOYAGER["ef_search"])  # fmt: skip
        cand = np.unique(np.asarray(found, dtype=np.int64) // K)
        scores = maxsim(q[None], docs[torch.from_numpy(cand)], budget)[0]
        return cand[torch.topk(scores, min(10, len(cand))).indices.numpy()].tolist()

    ids, times = _timed(voyager, queries)
    out.append(_row(f"PyLate Voyager (k_token {args.k_token})", n, build_s, nbytes, ids, truth,
                    times))  # fmt: skip
    logger.info("peers %s", out[-1])
    if args.plaid_python is None:
        logger.warning("peers: PLAID left out (give --plaid-python, see benchmarks/plaid_peer.py)")
    else:
        out.extend(_plaid_rows(args, workdir, docs, queries, truth))
    return out


def _plaid_rows(args: argparse.Namespace, workdir: Path, docs: torch.Tensor,
                queries: torch.Tensor, truth: list[list[int]]) -> list[dict[str, Any]]:  # fmt: skip
    """PyLate's PLAID (fast-plaid) on the same vectors, in its own interpreter."""
    np.save(workdir / "plaid-docs.npy", docs.numpy())
    np.save(workdir / "plaid-queries.npy", queries.numpy())
    rows = []
    for nbits in args.plaid_nbits:
        folder, result = workdir / f"plaid-{nbits}", workdir / f"plaid-{nbits}.json"
        cmd = [
            str(args.plaid_python), str(Path(__file__).with_name("plaid_peer.py")),
            "--docs", str(workdir / "plaid-docs.npy"),
            "--queries", str(workdir / "plaid-queries.npy"),
            "--index", str(folder), "--out", str(result), "--nbits", str(nbits),
            "--threads", str(args.threads),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        got = json.loads(result.read_text())
        rows.append(_row(f"PyLate PLAID (fast-plaid, nbits {nbits})", len(docs),
                         got["build_s"], got["bytes"], got["ids"], truth, got["times"]))  # fmt: skip
        logger.info("peers %s", rows[-1])
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def print_peers(rows: list[dict[str, Any]]) -> None:
    print("\n| N | index | build s | bytes/chunk | recall@10 vs exhaustive | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['side']} | {r['build_s']:.1f} | {r['bytes_per_chunk']:.0f} | "
            f"{r['recall@10']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
