"""Ranking metrics: nDCG@k, Recall@k, MRR@k, MAP@k and MAP, computed by ``pytrec_eval`` (the
trec_eval C code; wheel ``pytrec-eval-terrier``, extra ``metaembed-rag[eval]``).

Inputs:

* ``rankings``: ``{query id: [doc id, ...]}``, best first (the order is what counts: ranks
  are handed to trec_eval as strictly decreasing scores, so its tie rule never applies);
* ``qrels``: ``{query id: {doc id: gain}}``; gains > 0 are relevant (graded gains are used
  as-is by nDCG, binary relevance by the others).

Queries with no relevant documents are skipped (as BEIR does); a query with relevant
documents but no ranking counts 0. ``tests/test_metrics.py`` checks every figure against the
hand-written definitions in ``tests/_reference_metrics.py`` (the module this one replaced),
on hand cases and on a suite set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .extras import require

__all__ = ["evaluate", "require_backend"]

# trec_eval measure -> our name ("{k}" filled with each cut-off)
_CUT = {"ndcg_cut": "ndcg", "recall": "recall", "map_cut": "map"}


def require_backend() -> None:
    """Check that pytrec_eval imports, before long work whose end computes metrics.

    Raises:
        ImportError: it is not installed (the message names the extra).
    """
    _pytrec_eval()


def _pytrec_eval() -> Any:
    return require(
        "pytrec_eval", "pip install 'metaembed-rag[eval]' (the pytrec-eval-terrier wheel)",
        "Ranking metrics",
    )  # fmt: skip


def _run(rankings: Mapping[str, Sequence[str]], qids: Sequence[str], depth: int | None) -> dict:
    out: dict[str, dict[str, float]] = {}
    for q in qids:
        ranked = list(dict.fromkeys(rankings.get(q, [])))[:depth]
        if ranked:
            out[q] = {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
    return out


def evaluate(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Mean metrics over the queries that have relevant documents.

    Args:
        rankings: ``{query_id: [doc_id, ...]}`` best first (missing queries rank nothing).
        qrels: ``{query_id: {doc_id: gain}}``.
        ks: cut-offs.

    Returns:
        ``{"ndcg@10", "recall@10", "mrr@10", "map@10", ..., "map"}`` (one set per cut-off);
        ``{}`` when no query has a relevant document.

    Raises:
        ImportError: pytrec_eval is not installed (the message names the extra).
    """
    qids = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not qids:
        return {}
    pte = _pytrec_eval()
    judged = {q: {d: int(g) for d, g in qrels[q].items() if g > 0} for q in qids}
    cuts = ",".join(str(k) for k in ks)
    measures = {f"{m}.{cuts}" for m in _CUT} | {"map"}
    per_query = pte.RelevanceEvaluator(judged, measures).evaluate(_run(rankings, qids, None))
    sums: dict[str, float] = {}
    for res in per_query.values():
        for key, value in res.items():
            sums[key] = sums.get(key, 0.0) + value
    for k in ks:  # MRR@k: reciprocal rank over the top k
        mrr = pte.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(_run(rankings, qids, k))
        sums[f"mrr@{k}"] = sum(r["recip_rank"] for r in mrr.values())
    n = len(qids)  # queries without a ranking are absent from per_query: they add 0
    out: dict[str, float] = {}
    for k in ks:
        for measure, name in _CUT.items():
            out[f"{name}@{k}"] = sums.get(f"{measure}_{k}", 0.0) / n
        out[f"mrr@{k}"] = sums[f"mrr@{k}"] / n
    out["map"] = sums.get("map", 0.0) / n
    return {key: out[key] for key in _order(ks)}


def _order(ks: Sequence[int]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in ("ndcg", "recall", "mrr", "map")] + ["map"]
