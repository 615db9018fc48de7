"""Precision / recall of a 0.5 relevance threshold on the zero-shot suite (docs/scores.md).

For every data set of the suite, each (sampled) judged query is scored exhaustively against
the whole corpus at the budget; its top ``--k`` documents are the pool a RAG user would
threshold. A document is *relevant* when the qrels judge it so (grade > 0). Reported per set
and budget:

* ``base_rate`` - the share of relevant documents in the pool: the precision of keeping every
  hit (what a threshold that knows nothing achieves; "better than chance" means above it);
* ``precision`` / ``recall`` / ``f1`` of keeping hits with calibrated relevance >= 0.5
  (recall over the relevant documents in the pool), and the share of hits kept;
* ``recall_all`` - the relevant documents kept over all judged relevant documents;
* ``auc`` - ROC AUC of the relevance over the pool (ranking across queries, threshold-free).

Document vectors come from the evaluation cache (``metaembed_rag.evaluation.encode_corpus`` ->
``cached_corpus_vectors``, the cache ``metaembed-rag eval`` fills), so only queries are encoded.
The calibration was fitted on held-out training pairs (scripts/calibrate_relevance.py), never
on these sets.

    python benchmarks/relevance_threshold.py [--model metaembed-minilm-l6] \
        [--suite benchmarks/zero-shot-suite.txt] [--limit-queries 300] [--budgets 16,64] \
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed_rag import MetaEmbedModel, maxsim
from metaembed_rag.budget import parse_budgets
from metaembed_rag.data import load_beir
from metaembed_rag.evaluation import encode_corpus
from metaembed_rag.model import DEFAULT_MODEL
from metaembed_rag.relevance import relevance_scores
from metaembed_rag.suite import read_suite_file
from metaembed_rag.vector_cache import default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("relevance_threshold")


def threshold_report(
    relevance: np.ndarray, labels: np.ndarray, total_relevant: int, threshold: float = 0.5
) -> dict[str, float]:
    """Figures of one pool: ``relevance`` and 0/1 ``labels`` of every pooled hit.

    >>> r = threshold_report(np.array([0.9, 0.6, 0.4, 0.1]), np.array([1, 0, 1, 0]), 3)
    >>> r["precision"], r["recall"], r["base_rate"], round(r["recall_all"], 3)
    (0.5, 0.5, 0.5, 0.333)
    """
    from sklearn.metrics import roc_auc_score

    kept = relevance >= threshold
    tp = int((kept & (labels == 1)).sum())
    pos = int(labels.sum())
    precision = tp / int(kept.sum()) if kept.any() else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = float(roc_auc_score(labels, relevance)) if 0 < pos < labels.size else float("nan")
    return {
        "pool": int(labels.size),
        "base_rate": pos / labels.size,
        "kept": float(kept.mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "recall_all": tp / total_relevant if total_relevant else 0.0,
        "auc": auc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--suite", type=Path, default=ROOT / "benchmarks" / "zero-shot-suite.txt")
    ap.add_argument("--limit-queries", type=int, default=300, help="seeded sample per set")
    ap.add_argument("--k", type=int, default=10, help="hits pooled per query")
    ap.add_argument("--budgets", default="16,64", help="'all' or 'r_q,r_c;r_q,r_c'")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = MetaEmbedModel.from_pretrained(args.model)
    model.eval()
    if model.relevance_calibration is None:
        logger.warning("%s has no relevance calibration: figures are for the fallback", args.model)
    budgets = (
        model.budgets
        if args.budgets == "all"
        else parse_budgets(args.budgets.replace(";", " "), model.budgets)
    )
    cache = default_cache_dir()
    results: dict[str, Any] = {}
    for folder in read_suite_file(args.suite):
        ds = load_beir(folder)
        doc_ids, docs, seconds = encode_corpus(model, ds, cache_dir=cache)
        if seconds:
            logger.info(
                "%s: document vectors were not cached (encoded in %.0f s)", folder.name, seconds
            )
        qids = sorted(q for q in ds.qrels if any(g > 0 for g in ds.qrels[q].values()))
        if args.limit_queries and len(qids) > args.limit_queries:
            qids = sorted(random.Random(args.seed).sample(qids, args.limit_queries))
        with torch.inference_mode():
            queries = model.encode_queries([ds.queries[q] for q in qids], batch_size=64)
        results[folder.name] = {"queries": len(qids), "docs": len(doc_ids), "budgets": {}}
        for budget in budgets:
            scores = maxsim(queries, docs, budget.as_tuple())
            top = scores.topk(min(args.k, len(doc_ids)), dim=1)
            rel, lab, total = [], [], 0
            for i, q in enumerate(qids):
                judged = {d for d, g in ds.qrels[q].items() if g > 0}
                total += len(judged)
                rel += relevance_scores(model, top.values[i].tolist(), budget)
                lab += [int(doc_ids[j] in judged) for j in top.indices[i].tolist()]
            row = threshold_report(np.asarray(rel), np.asarray(lab), total, args.threshold)
            results[folder.name]["budgets"][str(budget)] = row
            logger.info(
                "%-13s %-6s base %.3f  P %.3f  R %.3f  F1 %.3f  kept %.3f  AUC %.3f",
                folder.name,
                budget,
                row["base_rate"],
                row["precision"],
                row["recall"],
                row["f1"],
                row["kept"],
                row["auc"],
            )
        del docs
    print("| set | budget | queries | base rate | precision@0.5 | recall@0.5 | F1 | kept | AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        for b, row in res["budgets"].items():
            print(
                f"| {name} | {b} | {res['queries']} | {row['base_rate']:.3f} | "
                f"{row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
                f"{row['kept']:.3f} | {row['auc']:.3f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
