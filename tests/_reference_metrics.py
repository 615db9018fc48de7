"""Reference ranking metrics, written out by hand: the check on :mod:`metaembed_rag.metrics`
(which computes them with pytrec_eval). nDCG@k, Recall@k, MRR@k, MAP (standard IR
definitions, as in trec_eval).

Inputs everywhere:

* ``ranking``: the retrieved document ids for one query, best first;
* ``qrels``: ``{doc_id: gain}`` for that query; gains > 0 are relevant (graded gains are used
  as-is by nDCG, binary relevance by the others).

``evaluate`` averages over queries; queries with no relevant documents are skipped (as BEIR does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["ndcg_at_k", "recall_at_k", "mrr_at_k", "average_precision", "evaluate"]


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """nDCG@k = DCG@k / IDCG@k with DCG = sum_i gain_i / log2(i + 1), i = 1-based rank.

    >>> round(ndcg_at_k(["a", "b", "c"], {"b": 1, "c": 1}, 3), 4)
    0.6934
    """
    dcg = sum(
        float(qrels.get(d, 0)) / math.log2(i + 2)
        for i, d in enumerate(ranking[:k])
        if qrels.get(d, 0) > 0
    )
    ideal = sorted((float(g) for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """Fraction of the relevant documents found in the top ``k``."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """1 / rank of the first relevant document within the top ``k`` (0 if none)."""
    for i, d in enumerate(ranking[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision(
    ranking: Sequence[str], qrels: Mapping[str, float], k: int | None = None
) -> float:
    """AP: mean over relevant documents of precision at their rank (unretrieved ones count 0);
    ``k`` cuts the ranking (MAP@k), ``None`` uses all of it."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranking if k is None else ranking[:k]):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def evaluate(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Mean metrics over queries that have relevant documents.

    Args:
        rankings: ``{query_id: [doc_id, ...]}`` best first (missing queries rank nothing).
        qrels: ``{query_id: {doc_id: gain}}``.
        ks: cut-offs.

    Returns:
        ``{"ndcg@10": ..., "recall@10": ..., "mrr@10": ..., "map@10": ..., "map": ...}``.
    """
    qids = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    out: dict[str, float] = {}
    if not qids:
        return out
    for k in ks:
        for name, fn in (("ndcg", ndcg_at_k), ("recall", recall_at_k), ("mrr", mrr_at_k),
                         ("map", average_precision)):  # fmt: skip
            out[f"{name}@{k}"] = sum(fn(rankings.get(q, []), qrels[q], k) for q in qids) / len(qids)
    out["map"] = sum(average_precision(rankings.get(q, []), qrels[q]) for q in qids) / len(qids)
    return out
