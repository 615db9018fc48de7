"""Budgeted MaxSim scoring as pure tensor functions.

The MetaEmbed late-interaction score of a query ``q`` (vectors ``q_i``) and a candidate ``c``
(vectors ``c_j``) under a budget ``(r_q, r_c)`` is::

    s(q, c) = sum_{i < r_q} max_{j < r_c} <q_i, c_j>

a **sum** over the first ``r_q`` query vectors (never divided by ``r_q``) of the best match among
the first ``r_c`` candidate vectors. Budgets are prefix slices, so one index stored at the full
vector count serves every budget. At ``(1, 1)`` the score is the plain dot product of the first
vectors.

Three forms:

* :func:`maxsim` - every query against every candidate, ``(nq, Kq, D) x (N, Kc, D) -> (nq, N)``;
* :func:`maxsim_pairwise` - each query against its own ``m`` candidates (reranking),
  ``(n, Kq, D) x (n, m, Kc, D) -> (n, m)``;
* :func:`maxsim_ids` - candidates named by id and read in place from an index array (a torch
  tensor or a numpy memmap), ``(nq, Kq, D) x (N, Kc, D)[ids (nq, m)] -> (nq, m)``.

Two backends compute the same numbers (float32 arithmetic, float32 output):

* ``"torch"`` - pure torch, chunked over candidates and queries so the
  ``(nq, chunk, r_q, r_c)`` similarity block stays within a byte budget; any device.
* ``"kernel"`` - the compiled CPU kernel ``metaembed_rag.scoring._maxsim`` (built by
  ``pip install -e .`` when a C compiler is present). It streams each candidate's vectors once,
  in the natural ``(N, Kc, D)`` layout, keeps running maxima in SIMD registers (query vectors in
  the lanes), converts float16/bfloat16 storage exactly to float32, picks AVX-512 / AVX2 /
  portable C at run time and uses ``torch.get_num_threads()`` threads with the GIL released.
  On CPUs with AMX-BF16 (Intel Sapphire Rapids and later, Linux) 16-bit storage runs on the
  tile unit, with the float32 query split into two bf16 halves so results keep float32
  accuracy (about 1e-6 of ``sum |q c|``).
* ``"auto"`` (default) - the kernel for CPU inputs when it is built, otherwise torch; float32
  ``(1, 1)`` always uses the single BLAS product, bit-identical to ``q[:, 0] @ d[:, 0].T`` (the
  kernel agrees with it to float32 rounding). If the kernel cannot be loaded a warning is logged
  once.

Storage dtypes float32, float16 and bfloat16 are accepted for documents (queries are converted
to float32); 16-bit values are widened exactly, never computed in float16 on the CPU.
Queries and documents may also be ragged Python lists of 2-D tensors: queries are padded with
zero vectors (a zero query vector adds exactly 0) and documents by repeating one of their own
vectors (a duplicate never changes a max), so a budget means "the first ``r`` vectors, or all the
item has if fewer".

When every query's first ``r_q`` vectors are equal (the anchored default's query side), each
scorer computes the ``(1, r_c)`` score once and multiplies it by ``r_q``
(:mod:`metaembed_rag.scoring.repeats`).

The environment variable ``METAEMBED_RAG_MAXSIM_ISA`` (``avx512``, ``avx2``, ``generic``, or a
path variant such as ``avx512-noamx`` or ``amx``) forces the kernel's instruction set, for testing.

>>> import torch
>>> from metaembed_rag.scoring import maxsim
>>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])                  # 1 query, 2 vectors, D=2
>>> d = torch.tensor([[[1.0, 0.0], [0.0, 3.0]], [[2.0, 2.0], [0.0, 0.0]]])  # 2 candidates
>>> maxsim(q, d, budget=(2, 2), backend="torch")
tensor([[4., 4.]])
>>> maxsim(q, d, budget=(1, 1), backend="torch")
tensor([[1., 2.]])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import numpy as np
import torch

__all__ = [
    "BudgetArg",
    "kernel_available",
    "kernel_info",
    "maxsim",
    "maxsim_ids",
    "maxsim_pairwise",
]

logger = logging.getLogger(__name__)

from . import _kernel as _kernel  # noqa: E402 - the kernel state (tests patch it there)
from ._kernel import (  # noqa: E402
    _DTYPE_CODES,
    _MODE_FULL,
    _MODE_IDS,
    _MODE_PAIR,
    _kernel_call,
    _warn_unavailable_once,
    kernel_available,
    kernel_info,
    unavailable_message,
)
from .repeats import collapse_repeated, scale_repeated  # noqa: E402

#: Anything accepted as a budget: ``None`` (all vectors), ``(r_q, r_c)`` or an object with
#: integer attributes ``r_q`` and ``r_c`` (such as :class:`metaembed_rag.budget.Budget`).
BudgetArg = tuple[int, int] | Sequence[int] | Any | None
Backend = Literal["auto", "torch", "kernel"]
ArrayLike = torch.Tensor | np.ndarray

#: Byte budget for the torch backend's per-chunk intermediates (similarity block + widened docs).
_CHUNK_BYTES = 256 * 1024 * 1024

# ------------------------------------------------------------------------------------------------
# Input normalisation


def _budget_pair(budget: BudgetArg) -> tuple[int, int] | None:
    if budget is None:
        return None
    if hasattr(budget, "r_q") and hasattr(budget, "r_c"):
        pair = (budget.r_q, budget.r_c)
    elif isinstance(budget, Sequence) and not isinstance(budget, str) and len(budget) == 2:
        pair = (budget[0], budget[1])
    else:
        raise TypeError(
            f"budget must be None, a pair (r_q, r_c) or an object with r_q and r_c; got {budget!r}"
        )
    out = []
    for name, value in zip(("r_q", "r_c"), pair, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"budget {name} must be an int, got {value!r}")
        out.append(int(value))
    return out[0], out[1]


def _check_r(name: str, r: int, available: int, what: str, shape: Any, ragged: bool) -> None:
    if not 1 <= r <= available:
        kind = "longest item of the ragged " if ragged else ""
        raise ValueError(
            f"budget {name}={r} is out of range for {what} of shape {shape}: the valid range is "
            f"1 <= {name} <= {available} (the {kind}{what} provide {available} vectors)"
        )


def _resolve_budget(
    budget: BudgetArg, kq: int, kc: int, q_shape: Any, d_shape: Any, q_ragged: bool, d_ragged: bool
) -> tuple[int, int]:
    pair = _budget_pair(budget)
    if pair is None:
        return kq, kc
    r_q, r_c = pair
    _check_r("r_q", r_q, kq, "queries", q_shape, q_ragged)
    _check_r("r_c", r_c, kc, "documents", d_shape, d_ragged)
    return r_q, r_c


def _to_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.name == "bfloat16":  # ml_dtypes bfloat16: reinterpret the bits
            return torch.from_numpy(np.ascontiguousarray(x).view(np.uint16)).view(torch.bfloat16)
        return torch.as_tensor(x)
    raise TypeError(f"expected a torch.Tensor, a numpy array or a list of them, got {type(x)}")


def _doc_dtype(t: torch.Tensor) -> torch.Tensor:
    if t.dtype in _DTYPE_CODES:
        return t
    if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"documents must be floating point, got {t.dtype}")
    return t.to(torch.float32)


def _kernel_layout(d: torch.Tensor) -> torch.Tensor:
    """Documents for the kernel: CPU, supported dtype, last dim contiguous."""
    d = _doc_dtype(d)
    if d.stride(-1) != 1:
        d = d.contiguous()
    return d


def _is_ragged_list(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _stack_ragged(
    items: Sequence[ArrayLike], what: str, keep: int | None, pad: Literal["zero", "repeat"]
) -> tuple[torch.Tensor, int]:
    """Stack a list of (L_i, D) arrays into (n, min(max L, keep), D).

    Returns the stacked tensor and the longest length (before truncation to ``keep``).
    """
    tensors = [_to_tensor(t) for t in items]
    if not tensors:
        raise ValueError(f"{what}: empty list")
    for i, t in enumerate(tensors):
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(
                f"{what}: every list item must be a 2-D (num_vectors >= 1, D) array; item {i} "
                f"has shape {tuple(t.shape)}"
            )
    dims = {int(t.shape[1]) for t in tensors}
    if len(dims) != 1:
        raise ValueError(f"{what}: list items have different dims D {sorted(dims)}")
    longest = max(int(t.shape[0]) for t in tensors)
    width = longest if keep is None else min(longest, keep)
    dtypes = {t.dtype for t in tensors}
    dtype = tensors[0].dtype if len(dtypes) == 1 else torch.float32
    device = tensors[0].device
    dim = dims.pop()
    out = torch.zeros((len(tensors), width, dim), dtype=dtype, device=device)
    for i, t in enumerate(tensors):
        n = min(int(t.shape[0]), width)
        out[i, :n] = t[:n].to(dtype=dtype, device=device)
        if pad == "repeat" and n < width:
            out[i, n:] = t[0].to(dtype=dtype, device=device)
    return out, longest


def _prepare_queries(
    queries: ArrayLike | Sequence[ArrayLike], ndim: int = 3
) -> tuple[torch.Tensor, int, bool]:
    """Return (queries (nq, Kq, D) float32, available vectors, ragged?)."""
    if _is_ragged_list(queries):
        q, longest = _stack_ragged(cast(Sequence[ArrayLike], queries), "queries", None, "zero")
        return q.to(torch.float32), longest, True
    q = _to_tensor(cast(ArrayLike, queries))
    if q.dim() != ndim:
        raise ValueError(
            f"queries must be a {ndim}-D (nq, Kq, D) array or a list of 2-D arrays, got shape "
            f"{tuple(q.shape)}"
        )
    if q.dtype != torch.float32:
        q = q.to(torch.float32)
    return q, int(q.shape[1]), False


def _check_dims(q: torch.Tensor, d_dim: int, d_shape: Any) -> None:
    if int(q.shape[-1]) != d_dim:
        raise ValueError(
            f"queries of shape {tuple(q.shape)} and documents of shape {d_shape} have different "
            f"embedding dims D ({int(q.shape[-1])} != {d_dim})"
        )


def _choose_backend(
    backend: str, device: torch.device, r_q: int, r_c: int, dtype: torch.dtype
) -> str:
    if backend not in ("auto", "torch", "kernel"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'kernel', got {backend!r}")
    if backend == "kernel":
        if not kernel_available():
            raise RuntimeError(unavailable_message())
        if device.type != "cpu":
            raise RuntimeError(
                f"backend='kernel' runs on the CPU only; inputs are on {device}. "
                "Use backend='torch' (or 'auto') for accelerator tensors."
            )
        return "kernel"
    if backend == "torch" or device.type != "cpu":
        return "torch"
    if not kernel_available():
        _warn_unavailable_once()
        return "torch"
    # float32 (1, 1) is one BLAS product, bit-identical to q[:, 0] @ d[:, 0].T and at least as
    # fast as the kernel (benchmarks/maxsim.py). With 16-bit storage it would need a widened copy
    # of the first vectors, which the kernel avoids (3-6x faster there).
    if r_q == 1 and r_c == 1 and dtype == torch.float32:
        return "torch"
    return "kernel"


# ------------------------------------------------------------------------------------------------
# Torch backend


def _reduce_block(sim: torch.Tensor) -> torch.Tensor:
    """(..., r_q, m, r_c) similarities -> (..., m) scores: max over r_c, sum over r_q."""
    return sim.amax(dim=-1).sum(dim=-2)


def _torch_full(
    q: torch.Tensor, d: torch.Tensor, r_q: int, r_c: int, chunk_size: int | None
) -> torch.Tensor:
    nq, n, dim = int(q.shape[0]), int(d.shape[0]), int(q.shape[-1])
    device = d.device
    q = q.to(device)
    if r_q == 1 and r_c == 1 and d.dtype == torch.float32:
        # the intermediate is the output itself: one product, bit-identical to q0 @ d0.T
        return q[:, 0] @ d[:, 0].T
    out = torch.empty((nq, n), dtype=torch.float32, device=device)
    per_pair = r_q * r_c * 4
    q_chunk = min(nq, max(1, _CHUNK_BYTES // (per_pair * 1024)))
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (per_pair * q_chunk + r_c * dim * 4))
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        ds = d[s:e, :r_c].to(torch.float32).reshape((e - s) * r_c, dim)
        for qs in range(0, nq, q_chunk):
            qe = min(nq, qs + q_chunk)
            qf = q[qs:qe, :r_q].reshape((qe - qs) * r_q, dim)
            sim = (qf @ ds.T).view(qe - qs, r_q, e - s, r_c)
            out[qs:qe, s:e] = _reduce_block(sim)
    return out


def _torch_grouped(
    q: torch.Tensor,
    fetch: Callable[[int, int, int, int], torch.Tensor],
    m: int,
    r_q: int,
    r_c: int,
    dim: int,
    chunk_size: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Each query against its own m candidates; fetch(qs, qe, ks, ke) -> (qn, kn, r_c, D) f32."""
    nq = int(q.shape[0])
    out = torch.empty((nq, m), dtype=torch.float32, device=device)
    per_cand = r_q * r_c * 4 + r_c * dim * 4
    k_chunk = chunk_size if chunk_size is not None else max(1, _CHUNK_BYTES // per_cand)
    k_chunk = min(k_chunk, max(m, 1))
    q_chunk = max(1, min(nq, _CHUNK_BYTES // (per_cand * k_chunk)))
    q = q.to(device)
    for qs in range(0, nq, q_chunk):
        qe = min(nq, qs + q_chunk)
        qf = q[qs:qe, :r_q]  # (qn, r_q, D)
        for ks in range(0, m, k_chunk):
            ke = min(m, ks + k_chunk)
            ds = fetch(qs, qe, ks, ke)  # (qn, kn, r_c, D)
            qn, kn = qe - qs, ke - ks
            sim = torch.bmm(qf, ds.reshape(qn, kn * r_c, dim).transpose(1, 2))
            out[qs:qe, ks:ke] = _reduce_block(sim.view(qn, r_q, kn, r_c))
    return out


# ------------------------------------------------------------------------------------------------
# Public API


def maxsim(
    queries: ArrayLike | Sequence[ArrayLike],
    documents: ArrayLike | Sequence[ArrayLike],
    budget: BudgetArg = None,
    *,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Budgeted MaxSim of every query against every document.

    Args:
        queries: ``(nq, Kq, D)`` tensor or numpy array (any float dtype; computed in float32), or a
            list of ``(Kq_i, D)`` arrays of different lengths.
        documents: ``(N, Kc, D)`` tensor or numpy array stored as float32, float16 or bfloat16, or
            a list of ``(Kc_i, D)`` arrays. Only the first ``r_c`` vectors of each document are
            read.
        budget: ``None`` (all vectors), ``(r_q, r_c)`` or an object with ``r_q``/``r_c`` attributes
            (e.g. :class:`metaembed_rag.budget.Budget`). Must satisfy ``1 <= r_q <= Kq`` and ``1 <=
            r_c <= Kc`` (for ragged lists: at most the longest item).
        chunk_size: Documents per chunk for the torch backend (default: chosen so the ``(nq, chunk,
            r_q, r_c)`` float32 block plus the widened documents stay within ~256 MiB). The kernel
            needs no chunking (its memory use does not grow with N beyond the output).
        backend: ``"auto"``, ``"torch"`` or ``"kernel"`` (see the module docstring).

    Returns:
        float32 ``(nq, N)`` scores ``sum_{i<r_q} max_{j<r_c} <q_i, d_j>`` on the documents' device.

    Examples:
        >>> import torch
        >>> from metaembed_rag.scoring import maxsim
        >>> queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
        ...                         [[0.5, 0.5], [0.0, 0.0]]])
        >>> documents = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]],
        ...                           [[0.0, 1.0], [3.0, 0.0], [1.0, 1.0]]])
        >>> maxsim(queries, documents, backend="torch")
        tensor([[8.0000, 4.0000],
                [4.0000, 1.5000]])
        >>> maxsim(queries, documents, budget=(2, 2), backend="torch")
        tensor([[3.0000, 4.0000],
                [1.0000, 1.5000]])
        >>> maxsim(queries, documents, budget=(1, 1), backend="torch")
        tensor([[1.0000, 0.0000],
                [0.5000, 0.5000]])
        >>> maxsim(queries, documents.to(torch.bfloat16), budget=(2, 3), backend="torch").dtype
        torch.float32

        Ragged lists: a budget means "first r vectors, or all the item has if fewer".

        >>> maxsim([torch.tensor([[1.0, 0.0]])], [torch.tensor([[2.0, 0.0]]),
        ...        torch.tensor([[1.0, 0.0], [5.0, 0.0]])], budget=(1, 2), backend="torch")
        tensor([[2., 5.]])
    """
    q_ragged = _is_ragged_list(queries)
    d_ragged = _is_ragged_list(documents)
    q, kq, _ = _prepare_queries(queries)
    if d_ragged:
        pair = _budget_pair(budget)
        d, kc = _stack_ragged(
            cast(Sequence[ArrayLike], documents), "documents",
            None if pair is None else pair[1], "repeat",
        )  # fmt: skip
        d_shape: Any = f"list of {len(documents)} arrays (longest {kc} vectors)"
    else:
        d = _to_tensor(cast(ArrayLike, documents))
        if d.dim() != 3:
            raise ValueError(
                f"documents must be a 3-D (N, Kc, D) array or a list of 2-D arrays, got shape "
                f"{tuple(d.shape)}"
            )
        kc, d_shape = int(d.shape[1]), tuple(d.shape)
    d = _doc_dtype(d)
    q_shape: Any = (
        f"list of {len(queries)} arrays (longest {kq} vectors)" if q_ragged else tuple(q.shape)
    )
    _check_dims(q, int(d.shape[-1]), d_shape)
    r_q, r_c = _resolve_budget(budget, kq, kc, q_shape, d_shape, q_ragged, d_ragged)
    # ragged inputs were padded only up to the budget
    r_q, r_c = min(r_q, int(q.shape[1])), min(r_c, int(d.shape[1]))
    q, r_q, times = collapse_repeated(q, r_q)
    if _choose_backend(backend, d.device, r_q, r_c, d.dtype) == "torch":
        return scale_repeated(_torch_full(q, d, r_q, r_c, chunk_size), times)
    d = _kernel_layout(d)
    out = _kernel_call(
        q, r_q, d.data_ptr(), d.dtype, d.stride(0), d.stride(1), r_c, int(d.shape[-1]),
        _MODE_FULL, int(d.shape[0]),
    )  # fmt: skip
    return scale_repeated(out, times)


def maxsim_pairwise(
    queries: ArrayLike | Sequence[ArrayLike],
    documents: ArrayLike,
    budget: BudgetArg = None,
    *,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Budgeted MaxSim of each query against its own candidates (reranking form).

    Args:
        queries: ``(n, Kq, D)`` array (computed in float32) or a list of ``n`` ``(Kq_i, D)``
            arrays.
        documents: ``(n, m, Kc, D)`` array stored as float32, float16 or bfloat16: ``documents[i]``
            are the ``m`` candidates of query ``i``.
        budget: As in :func:`maxsim` (``chunk_size`` counts candidates per query).
        chunk_size: As in :func:`maxsim` (``chunk_size`` counts candidates per query).
        backend: As in :func:`maxsim` (``chunk_size`` counts candidates per query).

    Returns:
        float32 ``(n, m)``: ``out[i, k] = s(queries[i], documents[i, k])``.

    Examples:
        >>> import torch
        >>> from metaembed_rag.scoring import maxsim_pairwise
        >>> queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> documents = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]],
        ...                            [[0.0, 0.0], [2.0, 0.0]]]])
        >>> maxsim_pairwise(queries, documents, backend="torch")
        tensor([[2., 2.]])
        >>> maxsim_pairwise(queries, documents, budget=(1, 1), backend="torch")
        tensor([[1., 0.]])
    """
    q_ragged = _is_ragged_list(queries)
    q, kq, _ = _prepare_queries(queries)
    d = _doc_dtype(_to_tensor(documents))
    if d.dim() != 4:
        raise ValueError(f"documents must be a 4-D (n, m, Kc, D) array, got {tuple(d.shape)}")
    if int(d.shape[0]) != int(q.shape[0]):
        raise ValueError(
            f"maxsim_pairwise needs one candidate list per query: {int(q.shape[0])} queries but "
            f"documents of shape {tuple(d.shape)}"
        )
    q_shape: Any = f"list of {len(queries)} arrays" if q_ragged else tuple(q.shape)
    _check_dims(q, int(d.shape[-1]), tuple(d.shape))
    r_q, r_c = _resolve_budget(
        budget, kq, int(d.shape[2]), q_shape, tuple(d.shape), q_ragged, False
    )
    q, r_q, times = collapse_repeated(q, min(r_q, int(q.shape[1])))
    m, dim = int(d.shape[1]), int(d.shape[-1])
    if _choose_backend(backend, d.device, r_q, r_c, d.dtype) == "torch":

        def fetch(qs: int, qe: int, ks: int, ke: int) -> torch.Tensor:
            return d[qs:qe, ks:ke, :r_c].to(torch.float32)

        out = _torch_grouped(q, fetch, m, r_q, r_c, dim, chunk_size, d.device)
        return scale_repeated(out, times)
    d = _kernel_layout(d)
    out = _kernel_call(
        q, r_q, d.data_ptr(), d.dtype, d.stride(1), d.stride(2), r_c, dim,
        _MODE_PAIR, m, pair_s0=d.stride(0),
    )  # fmt: skip
    return scale_repeated(out, times)


def maxsim_ids(
    queries: ArrayLike | Sequence[ArrayLike],
    documents: ArrayLike,
    ids: ArrayLike,
    budget: BudgetArg = None,
    *,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Budgeted MaxSim of each query against the index rows named by ``ids``, read in place.

    Only the first ``r_c`` vectors of the rows named in ``ids`` are read; ``documents`` is never
    copied as a whole, so it can be a large numpy memmap or a memory-mapped tensor.

    Args:
        queries: ``(nq, Kq, D)`` array (computed in float32) or a list of ``(Kq_i, D)`` arrays.
        documents: ``(N, Kc, D)`` index: a torch tensor (float32, float16 or bfloat16) or a numpy
            array / memmap (float32, float16, or ``ml_dtypes.bfloat16``).
        ids: ``(nq, m)`` integer ids into ``documents`` (0 <= id < N), one row per query.
        budget: As in :func:`maxsim` (``chunk_size`` counts candidates per query).
        chunk_size: As in :func:`maxsim` (``chunk_size`` counts candidates per query).
        backend: As in :func:`maxsim` (``chunk_size`` counts candidates per query).

    Returns:
        float32 ``(nq, m)``: ``out[i, k] = s(queries[i], documents[ids[i, k]])``.

    Examples:
        >>> import torch
        >>> from metaembed_rag.scoring import maxsim_ids
        >>> queries = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> index = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]])
        >>> maxsim_ids(queries, index, torch.tensor([[2, 0], [1, 1]]), backend="torch")
        tensor([[5., 1.],
                [4., 4.]])
    """
    q_ragged = _is_ragged_list(queries)
    q, kq, _ = _prepare_queries(queries)
    ids_t = _to_tensor(ids)
    if ids_t.dim() != 2 or int(ids_t.shape[0]) != int(q.shape[0]):
        raise ValueError(
            f"ids must be (nq, m) with nq = {int(q.shape[0])} queries, got shape "
            f"{tuple(ids_t.shape)}"
        )
    if ids_t.dtype.is_floating_point or ids_t.dtype == torch.bool:
        raise TypeError(f"ids must be integers, got {ids_t.dtype}")
    ids_t = ids_t.to(torch.int64)
    # exactly one of the two is set: a numpy array / memmap or a torch tensor
    arr = documents if isinstance(documents, np.ndarray) else None
    t_docs = None if isinstance(documents, np.ndarray) else documents
    shape = tuple(int(s) for s in documents.shape)
    if len(shape) != 3:
        raise ValueError(f"documents must be a 3-D (N, Kc, D) index, got shape {shape}")
    n_docs, kc, dim = shape
    q_shape: Any = f"list of {len(queries)} arrays" if q_ragged else tuple(q.shape)
    _check_dims(q, dim, shape)
    r_q, r_c = _resolve_budget(budget, kq, kc, q_shape, shape, q_ragged, False)
    q, r_q, times = collapse_repeated(q, min(r_q, int(q.shape[1])))
    if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= n_docs):
        raise ValueError(
            f"ids out of range: min {int(ids_t.min())}, max {int(ids_t.max())}, but documents "
            f"has N = {n_docs} rows"
        )
    m = int(ids_t.shape[1])
    device = torch.device("cpu") if t_docs is None else t_docs.device
    if arr is not None:
        if arr.dtype.name == "bfloat16":
            arr = arr.view(np.uint16)
            dtype = torch.bfloat16
        elif arr.dtype == np.float16:
            dtype = torch.float16
        elif arr.dtype == np.float32:
            dtype = torch.float32
        else:
            raise TypeError(
                f"numpy documents must be float32, float16 or bfloat16, got {arr.dtype}"
            )
    else:
        assert t_docs is not None
        dtype = _doc_dtype(t_docs[:0]).dtype
    if _choose_backend(backend, device, r_q, r_c, dtype) == "torch":
        ids_dev = ids_t.to(device)

        def fetch(qs: int, qe: int, ks: int, ke: int) -> torch.Tensor:
            sel = ids_t[qs:qe, ks:ke]
            if arr is not None:
                rows = np.asarray(arr[:, :r_c][sel.numpy().reshape(-1)])
                t = torch.from_numpy(rows)
                if dtype == torch.bfloat16:
                    t = t.view(torch.bfloat16)
            else:
                assert t_docs is not None
                t = t_docs[:, :r_c][ids_dev[qs:qe, ks:ke].reshape(-1)]
            return t.to(torch.float32).view(qe - qs, ke - ks, r_c, dim)

        out = _torch_grouped(q, fetch, m, r_q, r_c, dim, chunk_size, device)
        return scale_repeated(out, times)
    ids_c = ids_t.to("cpu")
    if arr is not None:
        item = arr.dtype.itemsize
        strides = arr.strides
        if strides[2] != item or any(s % item for s in strides):
            arr = np.ascontiguousarray(arr)
            strides = arr.strides
        ptr = arr.__array_interface__["data"][0]
        s0, s1 = strides[0] // item, strides[1] // item
        keep: Any = arr
    else:
        assert t_docs is not None
        d = _kernel_layout(t_docs)
        ptr, s0, s1, keep = d.data_ptr(), d.stride(0), d.stride(1), d
    out = _kernel_call(q, r_q, ptr, dtype, s0, s1, r_c, dim, _MODE_IDS, m, ids=ids_c)
    del keep
    return scale_repeated(out, times)
