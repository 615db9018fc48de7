"""``metaembed-rag train-scorer``: train a bilinear or cross-attention scorer on frozen vectors."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def run(args: argparse.Namespace) -> int:
    from ..budget import resolve_budget
    from ..scorers import save_scorer
    from ..scorers.training import ScorerRecipe, encode_pairs, load_pairs, train_scorer
    from .common import load_model

    recipe = ScorerRecipe(
        kind=args.kind, per_source=args.per_source, seed=args.seed, steps=args.steps,
        batch_size=args.batch_size, negatives=args.negatives, lr=args.lr,
        temperature=args.temperature, rank=args.rank, hidden=args.hidden, keep=args.keep,
    )  # fmt: skip
    output = Path(args.output or f"scorer-{args.kind}")
    if output.exists() and any(output.iterdir()) and not args.overwrite:
        raise FileExistsError(
            f"{output} exists and is not empty; pass --overwrite or another --output"
        )
    pairs, files = load_pairs(args.pairs, recipe.per_source, recipe.seed)
    model = load_model(args.model, args.device)
    budget = resolve_budget(args.budget, model.budgets)
    data = encode_pairs(model, pairs, files, recipe, cache_dir=args.cache_dir)
    scorer, record = train_scorer(data, recipe, budget, fingerprint=model.fingerprint())
    extra = {
        "model": str(args.model or "default"),
        "training": {**record, "sources": [f.parent.name for f in files]},
    }
    save_scorer(scorer, output, extra)
    print(json.dumps({"output": str(output), **record}, indent=2))
    print(
        f"Saved to {output}. Held-out MRR@10: MaxSim {record['dev_mrr10_maxsim']:.4f}, "
        f"{args.kind} {record['dev_mrr10_scorer']:.4f}. Use it with: metaembed-rag search "
        f'"question" --scorer {output}'
    )
    return 0


def add_parser(sub: Any) -> None:
    """The ``train-scorer`` subcommand."""
    from ..scorers.training import ScorerRecipe

    d = {f.name: f.default for f in fields(ScorerRecipe)}
    p = sub.add_parser(
        "train-scorer",
        help="train a bilinear or cross-attention scorer on frozen vectors (docs/scorers.md)",
    )
    p.add_argument(
        "--pairs",
        required=True,
        metavar="DIR",
        help="training pairs folder: <source>/pairs.jsonl with query, positive",
    )
    p.add_argument("--kind", choices=["bilinear", "cross-attention"], default=d["kind"])
    p.add_argument(
        "--model", default=None, help="model name or folder (default: the packaged model)"
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="folder for scorer.safetensors + scorer.json (default: scorer-KIND)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.add_argument("--budget", default=None, help="budget to train at (default: the largest)")
    p.add_argument(
        "--per-source", type=int, default=d["per_source"], help="pairs sampled per source"
    )
    p.add_argument("--steps", type=int, default=d["steps"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument(
        "--negatives", type=int, default=d["negatives"], help="mined hard negatives per query"
    )
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--temperature", type=float, default=d["temperature"])
    p.add_argument("--rank", type=int, default=d["rank"], help="bilinear: rank of W - I")
    p.add_argument("--hidden", type=int, default=d["hidden"], help="cross-attention: width")
    p.add_argument(
        "--keep",
        choices=["best", "last"],
        default=d["keep"],
        help="weights saved: the held-out best (default; may be the untrained = MaxSim) "
        "or the last step's",
    )
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument(
        "--cache-dir",
        default=None,
        help="encoded pairs cache (default ~/.cache/metaembed-rag/scorer-pairs)",
    )
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)
