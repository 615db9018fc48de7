"""Maximal marginal relevance (MMR, Carbonell & Goldstein 1998) over stored multi-vectors.

(Not to be confused with Matryoshka Multi-Vector Retrieval, the training recipe.) A search
fetches ``fetch_k`` candidates, then picks ``k`` of them greedily, each time the candidate
maximising ``lambda_mult * rel(q, d) - (1 - lambda_mult) * max_{s picked} sim(d, s)``:
``lambda_mult = 1`` is plain relevance order, ``0`` maximal diversity.

Both terms come from the vectors the index stores (no re-encoding), on one scale (mean
cosines in ``[-1, 1]``):

* ``rel(q, d) = MaxSim(q, d) / r_q`` at the rerank budget ``(r_q, r_c)``;
* ``sim(d, e)``: the symmetrised document-document MaxSim, each document's first ``r_q``
  vectors against the other's first ``r_c`` (:func:`document_similarity`).

:func:`mmr` is the pure selection; :func:`mmr_search` runs it over an index's stored rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..budget import Budget
from ..scoring import maxsim
from .hits import Hit
from .params import SearchParams

__all__ = ["document_similarity", "mmr", "mmr_search"]


def _check_lambda(lambda_mult: float) -> float:
    value = float(lambda_mult)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lambda_mult must be in [0, 1], got {lambda_mult}.")
    return value


def mmr(
    relevance: torch.Tensor | np.ndarray,
    similarity: torch.Tensor | np.ndarray,
    k: int,
    lambda_mult: float = 0.5,
) -> list[int]:
    """Greedy MMR selection.

    Args:
        relevance: ``(n,)`` query-document relevance of the candidates.
        similarity: ``(n, n)`` document-document similarity.
        k: how many to pick (at most ``n``).
        lambda_mult: weight of relevance against diversity, in ``[0, 1]``.

    Returns:
        the positions picked, in pick order; ties go to the earlier candidate.

    >>> mmr([0.9, 0.8, 0.1], [[1, 0.95, 0], [0.95, 1, 0], [0, 0, 1]], 2, lambda_mult=0.5)
    [0, 2]
    >>> mmr([0.9, 0.8, 0.1], [[1, 0.95, 0], [0.95, 1, 0], [0, 0, 1]], 2, lambda_mult=1.0)
    [0, 1]
    """
    lam = _check_lambda(lambda_mult)
    rel = np.asarray(relevance, dtype=np.float64).reshape(-1)
    sim = np.asarray(similarity, dtype=np.float64)
    n = rel.size
    if sim.shape != (n, n):
        raise ValueError(f"similarity must be ({n}, {n}) for {n} candidates, got {sim.shape}.")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}.")
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)  # max similarity to a picked document
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        value = lam * rel - (1.0 - lam) * penalty
        value = np.where(free, value, -np.inf)
        best = int(np.argmax(value))  # first maximum: the earlier candidate wins ties
        picked.append(best)
        free[best] = False
        redundancy = np.maximum(redundancy, sim[best])
    return picked


def document_similarity(docs: torch.Tensor, budget: Budget) -> torch.Tensor:
    """``(n, n)`` symmetrised document-document MaxSim, normalised to ``[-1, 1]``:
    ``(MaxSim(d_i[:r_q] -> d_j[:r_c]) + MaxSim(d_j[:r_q] -> d_i[:r_c])) / (2 r_q)``.

    Args:
        docs: ``(n, R, D)`` unit document vectors (``R >= r_c``).
        budget: the rerank budget ``(r_q, r_c)`` (``r_q <= r_c``, as every trained budget).
    """
    r_q, r_c = budget.r_q, budget.r_c
    as_query = docs[:, : min(r_q, docs.shape[1])].float()
    s = maxsim(as_query, docs[:, :r_c].float(), (as_query.shape[1], min(r_c, docs.shape[1])))
    return (s + s.T) / (2.0 * as_query.shape[1])


def mmr_search(
    index: Any,
    query: torch.Tensor | np.ndarray,
    params: SearchParams,
    lambda_mult: float = 0.5,
) -> list[Hit]:
    """MMR over a :class:`~metaembed_rag.index.MultiVectorIndex`: the index's own search
    (filters, budgets, mode) fetches ``params.fetch_k`` candidates (at least ``k``), their
    stored vectors give the document-document similarity, and :func:`mmr` picks ``params.k``.

    Args:
        index: the index.
        query: one ``(Kq, D)`` query multi-vector (or ``(1, Kq, D)``).
        params: ``k`` (results), ``fetch_k`` (candidates), budgets, filter, mode.
        lambda_mult: relevance against diversity, in ``[0, 1]``.

    Returns:
        up to ``k`` hits in MMR order; ``score`` is each hit's raw MaxSim at the rerank budget
        and ``rank`` its MMR position. An empty index gives ``[]``.
    """
    _check_lambda(lambda_mult)
    q = torch.as_tensor(np.asarray(query, dtype=np.float32))
    if q.dim() == 2:
        q = q.unsqueeze(0)
    if q.dim() != 3 or q.shape[0] != 1:
        raise ValueError(f"query must be one (Kq, D) multi-vector, got {tuple(q.shape)}.")
    if len(index) == 0:
        return []
    _, rerank = params.check_budgets(index.budgets, q.shape[1])
    pool = SearchParams(
        k=max(params.fetch_k, params.k),
        fetch_k=max(params.fetch_k, params.k),
        recall_budget=params.recall_budget,
        rerank_budget=rerank,
        filter=params.filter,
        mode=params.mode,
    )
    scores, rows = index.search_rows(q, params=pool)
    found = rows[0] >= 0
    rows, scores = rows[0][found], scores[0][found]
    if rows.size == 0:
        return []
    docs = index.backend.fetch(rows, rerank.r_c)
    picked = mmr(scores / rerank.r_q, document_similarity(docs, rerank), params.k, lambda_mult)
    records = index.backend.records(rows[picked])
    return [
        Hit(rec.id, float(scores[i]), rec.text, rec.metadata, rank)
        for rank, (rec, i) in enumerate(zip(records, picked, strict=True))
    ]
