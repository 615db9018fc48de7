"""PyLate's PLAID index (``fast-plaid``) on vectors written by ``benchmarks/peers.py``.

Runs in its own environment, because ``fast-plaid``'s wheels pin ``torch==2.11.0`` (this
project needs 2.13): ``peers.py --plaid-python ENV/bin/python`` writes the documents and queries
as ``.npy`` files, runs this script with that interpreter, and reads back its JSON. It imports
nothing from ``metaembed_rag``, only ``benchmarks/_env.py`` (the standard library alone).
Setting up the environment (CPU is enough)::

    python -m venv plaid-env
    plaid-env/bin/pip install fast-plaid   # pulls torch==2.11.0

Measured: build seconds (``FastPlaid.create``), bytes of the index folder, and one query at a time
(``FastPlaid.search``, ``top_k`` 10) with its per-query seconds; the caller scores recall.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=Path, required=True, help=".npy float32 (N, K, D)")
    p.add_argument("--queries", type=Path, required=True, help=".npy float32 (Q, R_q, D)")
    p.add_argument("--index", type=Path, required=True, help="an empty folder for the index")
    p.add_argument("--out", type=Path, required=True, help="the JSON result")
    p.add_argument(
        "--nbits", type=int, default=4, help="PLAID residual bits (fast-plaid default 4)"
    )
    p.add_argument("--n-ivf-probe", type=int, default=8)
    p.add_argument("--n-full-scores", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    _env.setup(args.threads)  # before torch: the same thread settings as our side

    import numpy as np
    import torch
    from fast_plaid.search import FastPlaid

    torch.set_num_threads(args.threads)
    docs = torch.from_numpy(np.load(args.docs, allow_pickle=False))
    queries = torch.from_numpy(np.load(args.queries, allow_pickle=False))
    index = FastPlaid(index=str(args.index), device="cpu")
    t0 = time.perf_counter()
    index.create(documents_embeddings=[d for d in docs], nbits=args.nbits)
    build_s = time.perf_counter() - t0

    def one(q: torch.Tensor) -> list[int]:
        hits = index.search(q[None], top_k=10, n_ivf_probe=args.n_ivf_probe,
                            n_full_scores=args.n_full_scores, show_progress=False)  # fmt: skip
        return [int(doc) for doc, _ in hits[0]]

    one(queries[0])  # warm-up (loads the index)
    ids, times = [], []
    for q in queries:
        t = time.perf_counter()
        ids.append(one(q))
        times.append(time.perf_counter() - t)
    result = {
        "build_s": build_s, "bytes": _env.disk_bytes(args.index), "ids": ids, "times": times,
        "nbits": args.nbits, "n_ivf_probe": args.n_ivf_probe, "n_full_scores": args.n_full_scores,
        "fast_plaid_torch": torch.__version__,
    }  # fmt: skip
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
