"""Hybrid search: the multi-vector ranking and BM25 fused into one (``SearchParams(hybrid=)``).

For each query:

1. the multi-vector search as the other options ask (two-stage or exhaustive, budgets,
   filter) returns its top ``max(fetch_k, k)`` documents;
2. BM25 (:class:`~metaembed_rag.index.lexical.LexicalIndex`) over the documents the filter
   allows returns its top ``max(fetch_k, k)``;
3. every document of the union is scored by both signals: exact MaxSim at the rerank budget
   and its BM25 score (0 when it shares no term with the query);
4. :func:`~metaembed_rag.index.fusion.fuse` combines them (``"rrf"`` or ``"weighted"``) and
   the best ``k`` are returned, ties broken by row order. A hit's ``score`` is the fused score.

With ``fetch_k`` at least the number of matching documents, the union is every matching
document, so the result is the brute-force fusion over the whole collection (the reference
the tests check).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .fusion import fuse
from .hits import stable_topk
from .params import SearchParams

__all__ = ["hybrid_rows"]


def _lexical_top(
    scores: np.ndarray, rows: np.ndarray, ok: np.ndarray, depth: int
) -> list[np.ndarray]:
    """Per query, the rows of the ``depth`` best BM25 scores among ``ok`` columns (documents
    sharing no term with the query are left out)."""
    out = []
    for s in scores:
        keep = ok & (s > 0)
        out.append(rows[keep][stable_topk(s[keep], rows[keep], depth)])
    return out


def hybrid_rows(
    index: Any,
    queries: torch.Tensor,
    texts: Sequence[str],
    params: SearchParams,
    allowed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``(scores (nq, k) float32, rows (nq, k) int64)``, padded with ``-inf`` / ``-1``
    (see the module docstring). ``queries`` are prepared ``(nq, Kq, D)`` vectors, ``texts``
    the same queries as text, ``allowed`` the filter's row mask. ``index`` is the
    :class:`~metaembed_rag.index.multivector.MultiVectorIndex` searched (its ``search_rows``,
    ``lexical_scores``, ``backend``, ``budgets`` and ``num_rows``)."""
    p = params
    assert p.hybrid is not None
    nq = queries.shape[0]
    if len(texts) != nq:
        raise ValueError(f"{nq} query vectors but {len(texts)} query texts for hybrid search.")
    depth = max(p.fetch_k, p.k)
    _, rerank = p.check_budgets(index.budgets, queries.shape[1])
    dense_p = p.replace(k=depth, fetch_k=depth, hybrid=None, hybrid_weight=None)
    _, dense_rows = index.search_rows(queries, params=dense_p)
    lex_scores, lex_rows = index.lexical_scores(texts)  # (nq, n_lex), (n_lex,)
    ok = lex_rows >= 0
    ok[ok] = allowed[lex_rows[ok]]
    lex_top = _lexical_top(lex_scores, lex_rows, ok, depth)
    union = [np.union1d(d[d >= 0], lx) for d, lx in zip(dense_rows, lex_top, strict=True)]
    width = max((u.size for u in union), default=0)
    if width == 0:
        return np.full((nq, p.k), -np.inf, np.float32), np.full((nq, p.k), -1, np.int64)
    filler = int(np.argmax(allowed))
    cand = np.full((nq, width), filler, dtype=np.int64)
    valid = np.zeros((nq, width), dtype=bool)
    for i, u in enumerate(union):
        cand[i, : u.size], valid[i, : u.size] = u, True
    dense = index.backend.score(queries, cand, rerank).astype(np.float64)
    column = np.full(index.num_rows, -1, dtype=np.int64)
    column[lex_rows[lex_rows >= 0]] = np.flatnonzero(lex_rows >= 0)
    cols = column[cand]
    lexical = np.where(cols >= 0, np.take_along_axis(lex_scores, np.maximum(cols, 0), 1), 0.0)
    fused = fuse(p.hybrid, dense, lexical.astype(np.float64), valid, p.weight)
    out_s = np.full((nq, p.k), -np.inf, dtype=np.float32)
    out_r = np.full((nq, p.k), -1, dtype=np.int64)
    for i in range(nq):
        pos = stable_topk(np.where(valid[i], fused[i], -np.inf), cand[i], p.k)
        pos = pos[valid[i, pos]]
        out_s[i, : pos.size] = fused[i, pos]
        out_r[i, : pos.size] = cand[i, pos]
    return out_s, out_r
