"""Fit a model's relevance calibration (``relevance_calibration.json``, see
:mod:`metaembed_rag.relevance` and docs/scores.md) on held-out training pairs.

    python scripts/calibrate_relevance.py [--model metaembed-minilm-l6] \
        [--recipe scripts/default-model.toml] [--per-source 80] [--hard-negatives 4] [--out FILE]

Data: the recipe's ``pairs`` folders (../shared/data/pairs, never the zero-shot suite), sampled
and split exactly as training did (``pairs_max_per_source``, ``dev_fraction``, ``seed``): only
the **dev** queries - held out of training - are used. Per source, up to ``--per-source`` dev
pairs with distinct positives; every query is scored against every positive of its source at
each trained budget; its own positive is a positive example, its ``--hard-negatives`` highest
scoring other positives are negatives (what a search would return above the answer). A
logistic regression (scikit-learn) per budget maps the raw MaxSim to a probability. With the
default ``--class-weight none`` the examples keep their natural ratio (1 answer : 4 hard
candidates), so the relevance estimates "this hit is the answer, given it is among the query's
five best candidates" and 0.5 means "more likely the answer than not" (a precision-leaning
threshold); ``balanced`` weighs the classes equally (0.5 = as likely a match as a hard
non-match: a recall-leaning threshold that keeps most hits).

Writes ``relevance_calibration.json`` into the model folder (default), or ``--out``.
scripts/train_default_model.sh runs it for the shipped default model.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from metaembed_rag import MetaEmbedModel, maxsim
from metaembed_rag.hub import resolve_model_folder
from metaembed_rag.model import DEFAULT_MODEL
from metaembed_rag.relevance import CALIBRATION_FILE, RelevanceCalibration
from metaembed_rag.training.dev import read_recipe, recipe_pairs_split

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("calibrate_relevance")


def held_out_pairs(
    recipe_path: Path, per_source: int, seed: int
) -> dict[str, list[tuple[str, str]]]:
    """``{source: [(query, positive)]}``: the recipe's dev split, distinct positives, at most
    ``per_source`` a source (seeded sample)."""
    try:
        _, dev = recipe_pairs_split(read_recipe(recipe_path), ROOT)
    except ValueError as exc:
        raise SystemExit(f"error: {recipe_path}: {exc}.") from exc
    by_source: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for ex in dev:
        if isinstance(ex.query, str) and isinstance(ex.positive, str):
            by_source[ex.source].setdefault(ex.positive_id, (ex.query, ex.positive))
    rng = random.Random(seed)
    out = {}
    for source, pairs in sorted(by_source.items()):
        rows = list(pairs.values())
        if len(rows) > per_source:
            rows = rng.sample(rows, per_source)
        if len(rows) >= 2:
            out[source] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--recipe", type=Path, default=ROOT / "scripts" / "default-model.toml")
    ap.add_argument("--per-source", type=int, default=80)
    ap.add_argument("--hard-negatives", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    model = MetaEmbedModel.from_pretrained(args.model)
    model.eval()
    data = held_out_pairs(args.recipe, args.per_source, args.seed)
    logger.info("held-out dev pairs: %s", {s: len(p) for s, p in data.items()})
    features: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, list[int]] = defaultdict(list)
    with torch.inference_mode():
        for source, pairs in data.items():
            q = model.encode_queries([p[0] for p in pairs], batch_size=args.batch_size)
            d = model.encode_documents([p[1] for p in pairs], batch_size=args.batch_size)
            for budget in model.budgets:
                s = maxsim(q, d, budget.as_tuple()).numpy()
                for i in range(len(pairs)):
                    features[str(budget)].append(float(s[i, i]))
                    labels[str(budget)].append(1)
                    others = np.delete(s[i], i)
                    for v in np.sort(others)[::-1][: args.hard_negatives]:
                        features[str(budget)].append(float(v))
                        labels[str(budget)].append(0)
            logger.info("%s: %d pairs encoded", source, len(pairs))
    coefficients = {}
    fit = {}
    for budget in model.budgets:
        x = np.asarray(features[str(budget)], dtype=np.float64)[:, None]
        y = np.asarray(labels[str(budget)])
        weight = None if args.class_weight == "none" else "balanced"
        clf = LogisticRegression(C=1e4, max_iter=1000, class_weight=weight).fit(x, y)
        slope, intercept = float(clf.coef_[0, 0]), float(clf.intercept_[0])
        coefficients[budget] = (slope, intercept)
        fit[str(budget)] = {
            "threshold_score": -intercept / slope,
            "train_balanced_accuracy": float(balanced_accuracy_score(y, clf.predict(x))),
        }
        logger.info(
            "budget %s: slope %.4f intercept %.4f (0.5 at MaxSim %.3f)",
            budget,
            slope,
            intercept,
            -intercept / slope,
        )
    info = {
        "fitted_by": "scripts/calibrate_relevance.py",
        "data": "dev split (held out of training) of the recipe's pairs: "
        + ", ".join(sorted(data)),
        "recipe": str(args.recipe.resolve().relative_to(ROOT))
        if args.recipe.resolve().is_relative_to(ROOT)
        else str(args.recipe),
        "positives": sum(len(p) for p in data.values()),
        "hard_negatives_per_query": args.hard_negatives,
        "class_weight": args.class_weight,
        "per_source": args.per_source,
        "seed": args.seed,
        "fit": fit,
    }
    cal = RelevanceCalibration(model.fingerprint(), coefficients, info)
    out = args.out or resolve_model_folder(args.model) / CALIBRATION_FILE
    cal.save(out)
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
