"""``metaembed-rag demo``: encode passages and rank them for a query at each budget."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from .common import load_model

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


SAMPLE_PASSAGES = [
    "Meta tokens are learnable vectors appended to a model's input; their final hidden states "
    "form a small multi-vector embedding.",
    "Late interaction scores a query against a document by summing, over query vectors, the "
    "best match among the document vectors (MaxSim).",
    "A retrieval budget chooses how many query and document vectors to use, trading quality "
    "for latency and memory without re-indexing.",
    "FAISS performs fast approximate nearest-neighbour search over dense vectors.",
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite and the fifth largest in the Solar System.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Retrieval-augmented generation gives a language model passages retrieved for the question.",
]


def _read_passages(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"--docs {path}: no such file; pass a .txt or .jsonl file.")
    passages: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from exc
                text = " ".join(str(row.get(k, "")) for k in ("title", "text")).strip()
                if not text:
                    raise ValueError(f"{path}:{lineno}: no 'title' or 'text' field")
                passages.append(text)
            else:
                passages.append(line)
    if not passages:
        raise ValueError(f"{path} holds no passages")
    return passages


def run(args: argparse.Namespace) -> int:
    from .. import maxsim

    passages = _read_passages(Path(args.docs)) if args.docs else SAMPLE_PASSAGES  # before loading
    t0 = time.perf_counter()
    model = load_model(args.model, args.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    docs = model.encode_documents(passages, show_progress_bar=len(passages) > 256)
    enc_s = time.perf_counter() - t0
    query = model.encode_queries([args.query])
    print(f"model: {model!r}")
    print(f"loaded in {load_s:.1f} s; encoded {len(passages)} passages in {enc_s:.2f} s")
    budgets = model.budgets if args.budget == "all" else [model.resolve_budget(args.budget)]
    for budget in budgets:
        scores = maxsim(query, docs, budget)[0]
        top = scores.topk(min(args.k, len(passages)))
        print(f"\nbudget ({budget}) — query: {args.query!r}")
        for rank, (score, idx) in enumerate(
            zip(top.values.tolist(), top.indices.tolist(), strict=True), 1
        ):
            text = passages[idx]
            print(f"  {rank}. {score:7.3f}  {text[:90]}{'...' if len(text) > 90 else ''}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``demo`` subcommand."""
    demo = sub.add_parser("demo", help="encode passages and rank them for a query at each budget")
    demo.add_argument("query", nargs="?", default="What is late interaction retrieval?")
    demo.add_argument("--docs", help="a .txt (one passage per line) or .jsonl (title/text) file")
    demo.add_argument(
        "--model", help="a MetaEmbed model folder or name (default: the packaged backbone)"
    )
    demo.add_argument("--budget", default="all", help="'r_q,r_c' or 'all' (every trained budget)")
    demo.add_argument("--k", type=int, default=3, help="results to show")
    demo.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo.set_defaults(func=run)
