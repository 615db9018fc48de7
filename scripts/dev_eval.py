"""Choose between recipes: nDCG@10 of saved models on a recipe's dev split (held out of its
training pairs, never the zero-shot suite), easy and hard, beside the backbone's mean-pool.

    python scripts/dev_eval.py --model runs/a/final runs/b/final \
        [--recipe scripts/default-model.toml] [--distractors 300] [--json dev.json]

The split is rebuilt exactly as training made it (``pairs_max_per_source``, ``dev_fraction``,
``training.seed`` of ``--recipe``), so models trained with recipes that share those three
settings are compared on the same queries. *Easy*: each source's dev queries among that
source's dev positives. *Hard*: the same plus ``--distractors`` of that source's training
positives per source (see :mod:`metaembed_rag.training.dev`). Prints one row per model and
variant: the macro over sources at every trained budget and the backbone's mean-pooled cosine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("dev_eval")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", required=True, help="model names or folders")
    ap.add_argument("--recipe", type=Path, default=ROOT / "scripts" / "default-model.toml")
    ap.add_argument("--distractors", type=int, default=300, help="training positives per source")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.training.dev import evaluate_dev, read_recipe, recipe_dev_splits

    recipe = read_recipe(args.recipe)
    try:
        dev, hard = recipe_dev_splits(recipe, ROOT, args.distractors)
    except ValueError as exc:
        print(f"error: {args.recipe}: {exc}", file=sys.stderr)
        return 2
    logger.info("dev: %d pairs; hard variant: +%d training positives", len(dev),
                sum(len(v) for v in hard.values()))  # fmt: skip
    results: dict[str, dict[str, object]] = {}
    for name in args.model:
        model = MetaEmbedModel.from_pretrained(name)
        results[name] = {
            "easy": evaluate_dev(model, dev, batch_size=args.batch_size),
            "hard": evaluate_dev(model, dev, batch_size=args.batch_size, distractors=hard),
        }
    for name, variants in results.items():
        for variant, report in variants.items():
            macro = report["macro"]  # type: ignore[index]
            cells = " ".join(f"{b}={v:.4f}" for b, v in macro["budgets"].items())
            print(f"{name} {variant}: {cells} mean-pool={macro['mean-pool']:.4f}")
    if args.json is not None:
        payload = {"recipe": str(args.recipe), "distractors": args.distractors, "models": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
