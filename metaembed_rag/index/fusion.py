"""Hybrid fusion: one ranking from a multi-vector (dense) score and a lexical (BM25) score.

Both functions take the two signals' scores of the same candidates, ``(nq, C)`` arrays, and a
``(nq, C)`` boolean ``valid`` mask (padding columns are ``False``); they return ``(nq, C)``
float64 fused scores, ``-inf`` where not ``valid``. Higher is better.

* :func:`rrf` — reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009):
  ``1 / (rrf_k + rank_dense) + 1 / (rrf_k + rank_lexical)``, ranks 1-based among the valid
  candidates, ties broken by column order (earlier first), ``rrf_k`` = :data:`RRF_K` (60).
* :func:`weighted` — normalised-score fusion: each signal min-max normalised over the valid
  candidates of its query (a constant signal normalises to 0), then
  ``weight * dense + (1 - weight) * lexical``; ``weight`` 1 is dense alone, 0 lexical alone
  (LlamaIndex's ``alpha``, Weaviate's relative-score fusion).

Which candidates are fused is the caller's rule (:meth:`MultiVectorIndex.search` fuses the
union of each signal's top ``fetch_k``, both signals scored on every one of them).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["FUSIONS", "HybridFusion", "RRF_K", "fuse", "ranks", "rrf", "weighted"]

HybridFusion = Literal["rrf", "weighted"]
#: The fusion methods ``SearchParams(hybrid=...)`` accepts.
FUSIONS: tuple[str, ...] = ("rrf", "weighted")
#: The RRF constant (the paper's 60, also the default of Elasticsearch, Qdrant and LlamaIndex).
RRF_K = 60


def ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based rank of each valid candidate by descending score, ties by column order;
    invalid entries get rank 0.

    >>> ranks(np.array([[0.5, 2.0, 0.5, 9.0]]), np.array([[True, True, True, False]])).tolist()
    [[2, 1, 3, 0]]
    """
    s = np.where(valid, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    out = np.empty(s.shape, dtype=np.int64)
    np.put_along_axis(out, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
    return np.where(valid, out, 0)


def rrf(
    dense: np.ndarray, lexical: np.ndarray, valid: np.ndarray, rrf_k: int = RRF_K
) -> np.ndarray:
    """Reciprocal rank fusion of two ``(nq, C)`` score arrays (see the module docstring).

    >>> rrf(np.array([[3.0, 2.0]]), np.array([[0.0, 5.0]]), np.ones((1, 2), bool), 1).tolist()
    [[0.8333333333333333, 0.8333333333333333]]
    """
    d, lx = ranks(dense, valid), ranks(lexical, valid)
    fused = 1.0 / (rrf_k + d) + 1.0 / (rrf_k + lx)
    return np.where(valid, fused, -np.inf)


def _minmax(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    safe = np.where(ok, span, 1.0)
    return np.where(valid & ok, (s - np.where(ok, lo, 0.0)) / safe, 0.0)


def weighted(
    dense: np.ndarray, lexical: np.ndarray, valid: np.ndarray, weight: float
) -> np.ndarray:
    """``weight * minmax(dense) + (1 - weight) * minmax(lexical)`` per query over the valid
    candidates (see the module docstring).

    >>> weighted(np.array([[1.0, 3.0]]), np.array([[4.0, 0.0]]), np.ones((1, 2), bool), 0.75)
    array([[0.25, 0.75]])
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the hybrid weight must be in [0, 1], got {weight!r}.")
    fused = weight * _minmax(dense, valid) + (1.0 - weight) * _minmax(lexical, valid)
    return np.where(valid, fused, -np.inf)


def fuse(
    method: HybridFusion,
    dense: np.ndarray,
    lexical: np.ndarray,
    valid: np.ndarray,
    weight: float = 0.5,
) -> np.ndarray:
    """:func:`rrf` or :func:`weighted` by name (``weight`` is used by ``"weighted"`` only).

    Raises:
        ValueError: an unknown method, shapes that differ, or a weight outside [0, 1].
    """
    if not (np.shape(dense) == np.shape(lexical) == np.shape(valid)):
        raise ValueError(
            f"dense {np.shape(dense)}, lexical {np.shape(lexical)} and valid "
            f"{np.shape(valid)} must have one (nq, C) shape."
        )
    if method == "rrf":
        return rrf(dense, lexical, valid)
    if method == "weighted":
        return weighted(dense, lexical, valid, weight)
    raise ValueError(f"hybrid must be one of {', '.join(FUSIONS)}, got {method!r}.")
