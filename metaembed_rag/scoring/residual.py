"""Budgeted MaxSim against residual-compressed candidates (PLAID-style rows).

A stored candidate vector is a centroid id plus packed residual codes; its value is
``centroids[cid] + table[p, byte, t]`` for dimension ``p * g + t`` (``g = 8 // nbits``
dimensions a byte; the table is :meth:`metaembed_rag.index.residual.ResidualCodebook.byte_table`).

* :func:`maxsim_residual_ids` scores each query against its own candidate rows, like
  :func:`metaembed_rag.scoring.maxsim_ids`. ``backend="kernel"`` (the compiled ``_residual.c``)
  decodes one candidate at a time into a per-thread buffer (AVX-512, AVX2 or portable loops,
  chosen as the float kernel's: ``METAEMBED_RAG_MAXSIM_ISA`` = ``generic`` / ``avx2`` /
  ``avx512`` asks for one); ``backend="torch"`` decodes blocks
  of :data:`TORCH_BLOCK` candidates and calls :func:`~metaembed_rag.scoring.maxsim_pairwise`.
  Neither ever holds float32 copies of the whole candidate set.
* :func:`decode_residual` is the decoding both are checked against (bit-identical values
  without ``normalize``; with it, the kernel's float32 rescaling differs from numpy's in the
  last bits).
* ``normalize=True`` rescales every decoded vector to unit length before scoring
  (:func:`unit_length`), as a codebook trained on unit vectors decodes
  (:attr:`metaembed_rag.index.residual.ResidualCodebook.unit_norm`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from . import maxsim_pairwise
from ._kernel import _isa_code
from .repeats import collapse_repeated, scale_repeated

__all__ = [
    "decode_residual",
    "unit_length",
    "maxsim_residual_ids",
    "residual_kernel_available",
    "TORCH_BLOCK",
]

logger = logging.getLogger(__name__)

#: Candidates decoded per step by the torch backend.
TORCH_BLOCK = 256

try:  # the compiled kernel is optional
    from . import _residual as _ext  # type: ignore[attr-defined]

    _EXT_ERROR: BaseException | None = None
except ImportError as _err:  # pragma: no cover - depends on the build
    _ext = None
    _EXT_ERROR = _err


def residual_kernel_available() -> bool:
    """Whether the compiled residual MaxSim kernel was built and loads here.

    >>> isinstance(residual_kernel_available(), bool)
    True
    """
    return _ext is not None


def unit_length(x: np.ndarray) -> np.ndarray:
    """float32 ``(..., D)`` vectors rescaled to unit length (zero vectors stay zero).

    >>> unit_length(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = np.asarray(x, dtype=np.float32)
    length = np.sqrt((x * x).sum(axis=-1, keepdims=True, dtype=np.float32))
    return (x / np.where(length > 0, length, np.float32(1))).astype(np.float32)


def decode_residual(
    cid: np.ndarray,
    packed: np.ndarray,
    centroids: np.ndarray,
    table: np.ndarray,
    normalize: bool = False,
) -> np.ndarray:
    """float32 ``(..., D)`` vectors of centroid ids ``(...,)`` and packed codes ``(..., P)``.

    Args:
        cid: centroid ids (uint16).
        packed: packed residual bytes (uint8), ``P = D // g``.
        centroids: ``(C, D)`` float32.
        table: ``(P, 256, g)`` float32 decoding table.
        normalize: rescale every decoded vector to unit length (:func:`unit_length`).

    >>> cent = np.zeros((1, 8), np.float32); tab = np.ones((2, 256, 4), np.float32)
    >>> decode_residual(np.zeros(1, np.uint16), np.zeros((1, 2), np.uint8), cent, tab).sum()
    np.float32(8.0)
    """
    p_idx = np.arange(table.shape[0])
    resid = table[p_idx, np.asarray(packed, dtype=np.int64)]  # (..., P, g)
    resid = resid.reshape(*resid.shape[:-2], -1)
    out = centroids[np.asarray(cid, dtype=np.int64)] + resid
    return unit_length(out) if normalize else out


def maxsim_residual_ids(
    queries: torch.Tensor,
    cid: np.ndarray,
    packed: np.ndarray,
    centroids: np.ndarray,
    table: np.ndarray,
    ids: np.ndarray,
    r_q: int,
    r_c: int,
    backend: Literal["auto", "kernel", "torch"] = "auto",
    threads: int | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """``s[i, k] = sum_{a < r_q} max_{b < r_c} <queries[i, a], decode(ids[i, k])[b]>``.

    Args:
        queries: ``(nq, Kq, D)`` float queries.
        cid: ``(N, Ks)`` uint16 centroid ids of the stored rows (memory-mapped is fine).
        packed: ``(N, Ks, P)`` uint8 packed residuals of the stored rows.
        centroids: ``(C, D)`` float32.
        table: ``(P, 256, g)`` float32 decoding table.
        ids: ``(nq, m)`` int64 candidate rows per query.
        r_q: query vectors used (``<= Kq``).
        r_c: candidate vectors used (``<= Ks``).
        backend: ``"kernel"`` (compiled; an error if missing), ``"torch"`` or ``"auto"``.
        threads: kernel threads (default: torch's intra-op threads, 1 for small work).
        normalize: score the decoded vectors rescaled to unit length (a codebook trained on
            unit vectors: ``ResidualCodebook.unit_norm``).

    Returns:
        ``(nq, m)`` float32 scores.

    Raises:
        ValueError: shapes or budgets that do not fit; a centroid id out of range (kernel).
        RuntimeError: ``backend="kernel"`` without the compiled kernel.
        IndexError: a candidate row out of range.
    """
    q = _as_queries(queries)
    dim = int(q.shape[2])
    n, ks = (int(s) for s in cid.shape)
    p_bytes = int(packed.shape[-1])
    g = int(table.shape[2])
    if packed.shape[:2] != cid.shape or p_bytes * g != dim or centroids.shape[1] != dim:
        raise ValueError(
            f"stored rows {tuple(cid.shape)} / {tuple(packed.shape)}, centroids "
            f"{tuple(centroids.shape)} and table {tuple(table.shape)} do not fit queries of "
            f"width {dim}"
        )
    ids_t, use_kernel = _check_call(q, n, ks, ids, r_q, r_c, backend)
    q, r_q, times = collapse_repeated(q, r_q)
    nq, m = ids_t.shape
    if nq == 0 or m == 0:
        return torch.zeros((nq, m), dtype=torch.float32)
    if not use_kernel:
        out = _torch_scores(q, cid, packed, centroids, table, ids_t, r_q, r_c, normalize)
        return scale_repeated(out, times)
    assert _ext is not None
    qc = q[:, :r_q].to(torch.float32).contiguous()
    cid_c = _c_order(cid, np.uint16)
    packed_c = _c_order(packed, np.uint8)
    cent = np.ascontiguousarray(centroids, dtype=np.float32)
    tab = np.ascontiguousarray(table, dtype=np.float32)
    out = torch.empty((nq, m), dtype=torch.float32)
    _ext.score(
        out.data_ptr(), nq, m, qc.data_ptr(), r_q, dim, r_c, ids_t.ctypes.data, n,
        cid_c.ctypes.data, packed_c.ctypes.data, ks, p_bytes, cent.ctypes.data,
        int(cent.shape[0]), tab.ctypes.data, g, _kernel_threads(threads, out, r_q, r_c, dim),
        _residual_isa(), int(normalize),
    )  # fmt: skip
    return scale_repeated(out, times)


def _as_queries(queries: torch.Tensor) -> torch.Tensor:
    """``queries`` as a tensor, checked first by every coded-row scorer: ``(nq, Kq, D)``.

    Raises:
        ValueError: another number of dimensions.
    """
    q = torch.as_tensor(queries)
    if q.dim() != 3:
        raise ValueError(f"queries must be (nq, Kq, D), got shape {tuple(q.shape)}")
    return q


def _check_call(
    q: torch.Tensor,
    n: int,
    ks: int,
    ids: np.ndarray,
    r_q: int,
    r_c: int,
    backend: str,
    ext: object = None,
    error: BaseException | None = None,
) -> tuple[np.ndarray, bool]:
    """The checks shared by the coded-row scorers (residual, int8, tiered): the budget against
    the queries' and ``n`` stored rows' vector counts ``ks``, the ids' shape and range (for
    both backends: numpy indexing would wrap negative ids), the backend. ``ext`` / ``error``:
    the compiled module the scorer calls and why it failed to load (default: this module's).
    Returns the int64 ``(nq, m)`` ids and whether the kernel runs.

    Raises:
        ValueError: the budget or the ids' shape do not fit.
        IndexError: a candidate row out of range.
        RuntimeError: ``backend="kernel"`` without the compiled kernel.
    """
    nq, kq = int(q.shape[0]), int(q.shape[1])
    if not 1 <= r_q <= kq or not 1 <= r_c <= ks:
        raise ValueError(
            f"budget ({r_q},{r_c}) out of range: queries have {kq} vectors, stored rows {ks}"
        )
    ids_t = np.ascontiguousarray(ids, dtype=np.int64)
    if ids_t.ndim != 2 or ids_t.shape[0] != nq:
        raise ValueError(f"ids must be (nq={nq}, m), got shape {ids_t.shape}")
    if ids_t.size and (ids_t.min() < 0 or ids_t.max() >= n):
        bad = int(ids_t[(ids_t < 0) | (ids_t >= n)][0])
        raise IndexError(f"candidate row {bad} out of range [0, {n})")
    if ext is None and error is None:
        ext, error = _ext, _EXT_ERROR
    if backend == "kernel" and ext is None:
        raise RuntimeError(
            f"backend='kernel' requested but the compiled coded-row kernel is not available "
            f"({error}); build it with `pip install -e .`, or use backend='torch'."
        )
    # the kernel keeps one running maximum per query vector on the stack: r_q <= 256
    return ids_t, backend == "kernel" or (backend == "auto" and ext is not None and r_q <= 256)


def _kernel_threads(threads: int | None, out: torch.Tensor, r_q: int, r_c: int, dim: int) -> int:
    """``threads``, or by default torch's intra-op threads (1 for work too small to split)."""
    if threads is not None:
        return int(threads)
    work = float(out.numel()) * r_q * r_c * dim
    return 1 if work < 2e6 else max(1, torch.get_num_threads())


def _residual_isa() -> int:
    """The loops ``METAEMBED_RAG_MAXSIM_ISA`` asks for (its base instruction set: 0 generic,
    1 AVX2, 2 AVX-512; the float kernel's flags do not apply here), or -1: the fastest."""
    code = _isa_code()
    return -1 if code < 0 else code & 15


def _c_order(a: np.ndarray, dtype: type) -> np.ndarray:
    """``a`` itself when it is C-contiguous in ``dtype`` (memory maps stay mapped)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=dtype)


def _torch_scores(
    q: torch.Tensor,
    cid: np.ndarray,
    packed: np.ndarray,
    centroids: np.ndarray,
    table: np.ndarray,
    ids: np.ndarray,
    r_q: int,
    r_c: int,
    normalize: bool,
) -> torch.Tensor:
    """The torch backend: decode :data:`TORCH_BLOCK` candidates at a time, then MaxSim."""
    return _blockwise_scores(
        q[:, :r_q], ids, r_c, TORCH_BLOCK,
        lambda rows: decode_residual(
            cid[rows, :r_c], packed[rows, :r_c], centroids, table, normalize
        ),
    )  # fmt: skip


def _blockwise_scores(
    q: torch.Tensor,
    ids: np.ndarray,
    r_c: int,
    block: int,
    decode: Callable[[np.ndarray], np.ndarray | torch.Tensor],
) -> torch.Tensor:
    """The torch backend of every coded-row scorer: ``decode(rows)`` (float32 ``(b, r_c, D)``)
    ``block`` candidates of a query at a time, then MaxSim of the query's ``q.shape[1]``
    vectors against them; never more than one block in float32."""
    nq, m = ids.shape
    out = torch.empty((nq, m), dtype=torch.float32)
    q32 = q.to(torch.float32)
    budget = (int(q32.shape[1]), r_c)
    for i in range(nq):
        for s in range(0, m, max(1, block)):
            rows = ids[i, s : s + block]
            docs = torch.as_tensor(decode(rows))
            out[i, s : s + rows.size] = maxsim_pairwise(
                q32[i : i + 1], docs[None], budget, backend="torch"
            )[0]
    return out
