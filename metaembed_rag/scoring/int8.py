"""Budgeted MaxSim against int8 candidate rows (``x ~= q * scale``, one scale per vector).

:func:`maxsim_int8_ids` scores each query against its own candidate rows, like
:func:`metaembed_rag.scoring.maxsim_ids`. ``backend="kernel"`` uses the compiled coded-row
kernel (``_residual.c``, which decodes one candidate at a time into a per-thread buffer, as for
residual rows); ``backend="torch"`` dequantises blocks of :data:`TORCH_BLOCK` candidates and
calls :func:`~metaembed_rag.scoring.maxsim_pairwise`. Neither holds float32 copies of the whole
candidate set. Dequantised values are bit-identical to
candidate set. :func:`dequantize_int8` is the one dequantisation (``float32(q) * scale``), also
used by :meth:`metaembed_rag.index.storage.VectorCodec.decode`; the kernel's values are
bit-identical to it, and its scores agree with float32 MaxSim over them within float32
rounding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .repeats import collapse_repeated, scale_repeated
from .residual import (
    _as_queries,
    _blockwise_scores,
    _c_order,
    _check_call,
    _ext,
    _kernel_threads,
    _residual_isa,
)

__all__ = ["dequantize_int8", "maxsim_int8_ids", "TORCH_BLOCK"]

#: Candidates dequantised per step by the torch backend.
TORCH_BLOCK = 256


def dequantize_int8(rows: np.ndarray, scales: np.ndarray) -> torch.Tensor:
    """float32 ``(..., D)`` values of int8 rows ``(..., D)`` with scales ``(...,)``:
    ``float32(q) * scale``, the values the kernel scores.

    >>> dequantize_int8(np.array([[127, -64]], np.int8), np.array([0.5], np.float32)).tolist()
    [[63.5, -32.0]]
    """
    out = torch.from_numpy(np.asarray(rows, dtype=np.float32))
    return out * torch.from_numpy(np.asarray(scales, dtype=np.float32))[..., None]


def maxsim_int8_ids(
    queries: torch.Tensor,
    rows: np.ndarray,
    scales: np.ndarray,
    ids: np.ndarray,
    r_q: int,
    r_c: int,
    backend: Literal["auto", "kernel", "torch"] = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """``s[i, k] = sum_{a < r_q} max_{b < r_c} <queries[i, a], rows[ids[i, k], b] * scale>``.

    Args:
        queries: ``(nq, Kq, D)`` float queries.
        rows: ``(N, Ks, D)`` int8 stored rows (memory-mapped is fine).
        scales: ``(N, Ks)`` float32 per-vector scales.
        ids: ``(nq, m)`` int64 candidate rows per query.
        r_q: query vectors used (``<= Kq``).
        r_c: candidate vectors used (``<= Ks``).
        backend: ``"kernel"`` (compiled; an error if missing), ``"torch"`` or ``"auto"``.
        threads: kernel threads (default: torch's intra-op threads, 1 for small work).

    Returns:
        ``(nq, m)`` float32 scores.

    Raises:
        ValueError: shapes or budgets that do not fit.
        RuntimeError: ``backend="kernel"`` without the compiled kernel.
        IndexError: a candidate row out of range.

    >>> rows = np.array([[[127, 0], [0, 127]]], np.int8); scales = np.full((1, 2), 1 / 127, np.float32)
    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> maxsim_int8_ids(q, rows, scales, np.zeros((1, 1), np.int64), 2, 2).tolist()
    [[2.0]]
    """
    q = _as_queries(queries)
    nq, dim = int(q.shape[0]), int(q.shape[2])
    if rows.ndim != 3 or rows.shape[2] != dim or scales.shape != rows.shape[:2]:
        raise ValueError(
            f"stored rows {tuple(rows.shape)} and scales {tuple(scales.shape)} do not fit "
            f"queries of width {dim}: rows must be (N, Ks, {dim}), scales (N, Ks)"
        )
    n, ks = (int(s) for s in rows.shape[:2])
    ids_t, use_kernel = _check_call(q, n, ks, ids, r_q, r_c, backend)
    q, r_q, times = collapse_repeated(q, r_q)
    m = int(ids_t.shape[1])
    if nq == 0 or m == 0:
        return torch.zeros((nq, m), dtype=torch.float32)
    if not use_kernel:
        return scale_repeated(_torch_scores(q, rows, scales, ids_t, r_q, r_c), times)
    assert _ext is not None
    qc = q[:, :r_q].to(torch.float32).contiguous()
    rows_c = _c_order(rows, np.int8)
    scales_c = _c_order(scales, np.float32)
    out = torch.empty((nq, m), dtype=torch.float32)
    _ext.score_int8(
        out.data_ptr(), nq, m, qc.data_ptr(), r_q, dim, r_c, ids_t.ctypes.data, n,
        rows_c.ctypes.data, scales_c.ctypes.data, ks, _kernel_threads(threads, out, r_q, r_c, dim),
        _residual_isa(),
    )  # fmt: skip
    return scale_repeated(out, times)


def _torch_scores(
    q: torch.Tensor, rows: np.ndarray, scales: np.ndarray, ids: np.ndarray, r_q: int, r_c: int
) -> torch.Tensor:
    """The torch backend: dequantise :data:`TORCH_BLOCK` candidates at a time, then MaxSim."""
    return _blockwise_scores(
        q[:, :r_q], ids, r_c, TORCH_BLOCK,
        lambda sel: dequantize_int8(rows[sel, :r_c], scales[sel, :r_c]),
    )  # fmt: skip
