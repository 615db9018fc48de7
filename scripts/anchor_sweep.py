"""Choose the segment-anchor settings of an untrained ``anchor="segments"`` model on a recipe's
hard dev split (held out of its training pairs, never the zero-shot suite).

    python scripts/anchor_sweep.py [--recipe scripts/default-model.toml] \
        [--min-tokens 4 6 8] [--mix 0 0.5 0.75 1 1.5 2] [--specials keep skip] \
        [--floor 0.01] [--json sweep.json]

The backbone runs once per text: with causal Meta attention the input's states do not depend on
the Meta tokens, so each setting only re-pools them, with the functions an untrained model
applies (:func:`~metaembed_rag.anchors.segment_means`, with the adapter's content mask when
special tokens are skipped, then :func:`~metaembed_rag.anchors.mix_whole`; the anchor map is
zero). Queries are the model's own
query vectors. The split is :func:`~metaembed_rag.training.dev.recipe_dev_splits`, as
``scripts/dev_eval.py`` builds it, so a setting's row equals ``dev_eval.py`` on a model built
with it (to float rounding; a test checks it). The cached states take about 1 GB for the
default recipe.

Prints one row per setting: the macro nDCG@10 over sources at every trained budget and the
worst source's nDCG@10 at the largest budget minus its mean pooling ((1,1) of the same model:
vector 0 is the backbone's sentence embedding). The choice, marked ``*``: the best macro at
the largest budget among the settings that keep every source within ``--floor`` of mean
pooling there (the zero-shot targets' per-set floor, applied to the dev sources).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("anchor_sweep")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "scripts" / "default-model.toml")
    ap.add_argument("--min-tokens", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--mix", type=float, nargs="+", default=[0.0, 0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument(
        "--specials", nargs="+", choices=("keep", "skip"), default=["keep", "skip"],
        help="cut segments from every token (keep) or without special tokens (skip)",
    )  # fmt: skip
    ap.add_argument("--floor", type=float, default=0.01, help="largest drop below mean pooling")
    ap.add_argument("--distractors", type=int, default=300, help="training positives per source")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.anchors import mix_whole, segment_means
    from metaembed_rag.evaluation import top_rankings
    from metaembed_rag.metrics import evaluate
    from metaembed_rag.scoring import maxsim
    from metaembed_rag.training.dev import read_recipe, recipe_dev_splits, source_collections

    recipe = read_recipe(args.recipe)
    if recipe.get("meta_attention", "causal") != "causal":
        print(f"error: {args.recipe}: the sweep needs meta_attention = 'causal'", file=sys.stderr)
        return 2
    try:
        dev, hard = recipe_dev_splits(recipe, ROOT, args.distractors)
    except ValueError as exc:
        print(f"error: {args.recipe}: {exc}", file=sys.stderr)
        return 2
    seed = int(recipe.get("training", {}).get("seed", 0))
    extra: dict[str, Any] = {}
    if recipe.get("query_prefix") is not None:
        extra["query_prefix"] = recipe["query_prefix"]
    model = MetaEmbedModel.from_backbone(
        recipe["backbone"],
        num_query_tokens=int(recipe.get("num_query_tokens", 16)),
        num_candidate_tokens=int(recipe.get("num_candidate_tokens", 64)),
        append_both_sides=bool(recipe.get("append_both_sides", True)),
        anchor="segments",
        max_length=int(recipe.get("training", {}).get("doc_max_length", 256)),
        seed=seed,
        **extra,
    )
    model.eval()  # the backbone is called directly below: no dropout
    if "skip" in args.specials and not model.adapter.marks_special_tokens:
        print(f"error: the {model.adapter.family} adapter marks no special tokens: "
              "sweep with --specials keep", file=sys.stderr)  # fmt: skip
        return 2
    budgets = model.budgets
    levels = model._segment_levels("document")  # the model's own slot plan (anchor="segments")
    assert levels is not None
    empty = model.adapter.input_embeddings().weight[:0]

    # one backbone pass per text: (queries, [(states, mask, content) per batch], ids, qrels)
    cached: dict[str, Any] = {}
    cols = source_collections(dev, hard)
    for name, (queries, docs, qrels) in cols.items():
        if len(docs) < 2:
            continue
        qids, dids = sorted(queries), sorted(docs)
        q = model.encode_queries([queries[i] for i in qids], batch_size=args.batch_size)
        batches = []
        with torch.inference_mode():
            for s in range(0, len(dids), args.batch_size):
                batch = model.prepare([docs[i] for i in dids[s : s + args.batch_size]], "document")
                states = model.adapter.forward(batch, empty)
                batches.append((states, batch.tensors["attention_mask"], batch.content_mask))
        cached[name] = (q, batches, qids, dids, qrels)
        logger.info("%s: %d queries, %d documents", name, len(qids), len(dids))

    rows = []
    settings = itertools.product(args.specials, args.min_tokens, args.mix)
    for specials, min_tokens, mix in settings:
        skip = specials == "skip"
        per: dict[str, list[float]] = {}
        for name, (q, batches, qids, dids, qrels) in cached.items():
            with torch.inference_mode():
                d = torch.cat(
                    [mix_whole(segment_means(h.float(), m, levels, min_tokens, c if skip else None),
                               mix)
                     for h, m, c in batches]
                )  # fmt: skip
            per[name] = [
                evaluate(top_rankings(maxsim(q, d, b), qids, dids, k=10), qrels, ks=(10,))[
                    "ndcg@10"
                ]
                for b in budgets
            ]
        macro = [sum(v[i] for v in per.values()) / len(per) for i in range(len(budgets))]
        worst = min((v[-1] - v[0], name) for name, v in per.items())
        rows.append({"skip_special": skip, "min_tokens": min_tokens, "mix": mix,
                     "macro": macro, "worst": worst, "sources": per})  # fmt: skip
    allowed = [r for r in rows if r["worst"][0] >= -args.floor]
    choice = max(allowed, key=lambda r: r["macro"][-1]) if allowed else None
    head = " ".join(f"{str(b):>8s}" for b in budgets)
    print(f"{'specials':>8s} {'min_tokens':>10s} {'mix':>5s} {head}   "
          f"worst {budgets[-1]} - mean-pool")  # fmt: skip
    for r in rows:
        mark = "*" if r is choice else " "
        cells = " ".join(f"{v:8.4f}" for v in r["macro"])
        specials = "skip" if r["skip_special"] else "keep"
        print(f"{specials:>8s} {r['min_tokens']:>10d} {r['mix']:5.2f} {cells}   "
              f"{r['worst'][0]:+.4f} {r['worst'][1]} {mark}")  # fmt: skip
    if choice is None:
        print(f"no setting keeps every source within {args.floor} of mean pooling")
    if args.json is not None:
        payload = {"recipe": str(args.recipe), "budgets": [str(b) for b in budgets],
                   "floor": args.floor, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
