"""Budgeted MaxSim against candidates stored by tiered gain-shape transform coding
(:mod:`metaembed_rag.index.tiered`).

A stored vector is ``c + o_k + g_k * sum_a vals[a][code_a] * scale[a] * axes[:, a]`` (the
document's centre ``c``, slot ``k``'s offset, the vector's gain, its tier's coded axes). Its dot
product with a query vector ``q`` is therefore
``<q, c> + <q, o_k> + g_k * sum_a qrot[a] * vals[a][code_a]`` with ``qrot = (q @ axes) * scale``
computed once per query, so scoring never rotates a candidate back:

* :func:`maxsim_tiered_ids` scores each query against its own candidate rows.
  ``backend="kernel"`` (the compiled ``_tiered.c``) decodes 16 stored vectors' coded values at
  a time into a per-thread buffer (one vector a lane; their codes sit side by side in the row);
  ``backend="torch"`` decodes :data:`TORCH_BLOCK` candidates with :meth:`~metaembed_rag.index.tiered.TieredTables.decode` and calls
  :func:`~metaembed_rag.scoring.maxsim_pairwise`. Neither holds float32 copies of the whole
  candidate set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ._kernel import _isa_code
from .repeats import collapse_repeated, scale_repeated
from .residual import _as_queries, _blockwise_scores, _c_order, _check_call, _kernel_threads

__all__ = ["TieredTables", "maxsim_tiered_ids", "tiered_kernel_available", "TORCH_BLOCK"]

logger = logging.getLogger(__name__)

#: Candidates decoded per step by the torch backend.
TORCH_BLOCK = 64

try:  # the compiled kernel is optional
    from . import _tiered as _ext  # type: ignore[attr-defined]

    _EXT_ERROR: BaseException | None = None
except ImportError as _err:  # pragma: no cover - depends on the build
    _ext = None
    _EXT_ERROR = _err


def tiered_kernel_available() -> bool:
    """Whether the compiled tiered MaxSim kernel was built and loads here.

    >>> isinstance(tiered_kernel_available(), bool)
    True
    """
    return _ext is not None


@dataclass(frozen=True)
class TieredTables:
    """What scoring needs of a trained tiered codebook, in the kernel's layout.

    ``G`` tiers (consecutive slots), ``K'`` stored slots, ``A`` coded axes at most per tier
    (padded to a multiple of 16): ``slot_offset`` ``(K'+1,)`` int64 code bytes of the slots
    before each slot, so a tier's block starts at ``slot_offset`` of its first slot (inside
    it the slots are interleaved byte by byte: byte ``j`` of the tier's slot ``s`` of ``S`` is
    at ``block[j * S + s]``); ``slot_group`` ``(K',)`` int32 tier of each slot; ``proj``
    ``(C, D)`` float32: rows ``coff[g]`` to ``coff[g] + nact[g]`` are tier ``g``'s coded axes
    times their scales (each tier's rows padded with zeros to a multiple of 16), then the
    ``K'`` slot offsets ``o_k`` (:attr:`offsets`), so one product gives a query every
    coefficient scoring needs; ``coff`` ``(G,)`` int32; ``nact`` ``(G,)``
    int32; ``pos`` / ``mask`` / ``voff`` ``(G, A)`` int32 bit offset in a slot, ``2**bits - 1``
    and where its values start in ``vals`` of each coded axis; ``vals`` ``(G, V)`` float32 the
    value of every code, axis after axis (and 64 spare values: the kernel reads 32 or 64 from
    a narrow axis's start).
    """

    slot_offset: np.ndarray
    slot_group: np.ndarray
    proj: np.ndarray
    coff: np.ndarray
    nact: np.ndarray
    pos: np.ndarray
    mask: np.ndarray
    voff: np.ndarray
    vals: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        """``(K', D)`` float32 slot offsets ``o_k``: the last ``K'`` rows of :attr:`proj`."""
        return self.proj[self.proj.shape[0] - self.slot_group.size :]

    def tier_slots(self, g: int) -> tuple[int, int]:
        """Tier ``g``'s first slot and its number of slots."""
        members = np.flatnonzero(self.slot_group == g)
        return int(members[0]), int(members.size)

    def decode(
        self, codes: np.ndarray, gains: np.ndarray, centres: np.ndarray, r: int
    ) -> np.ndarray:
        """float32 ``(n, r, D)`` vectors of rows ``codes`` ``(n, > slot_offset[r])`` uint8,
        ``gains`` ``(n, >= r)`` and ``centres`` ``(n, D)`` (any float dtype): the values the
        kernel scores, decoded with numpy (the reference for the kernel's tests)."""
        n = codes.shape[0]
        cen = np.asarray(centres, dtype=np.float32)
        g32 = np.asarray(gains, dtype=np.float32)
        out = np.empty((n, r, cen.shape[1]), np.float32)
        for k in range(r):
            g = int(self.slot_group[k])
            a = int(self.nact[g])
            p, mask = self.pos[g, :a], self.mask[g, :a].astype(np.uint32)
            start, size = self.tier_slots(g)
            byte = self.slot_offset[start] + (p >> 3).astype(np.int64) * size + (k - start)
            # a code that runs into the next byte reads it too (the slot's byte S further on)
            cross = (p & 7) + np.log2(mask + 1.0).round().astype(np.int32) > 8
            sp = np.asarray(codes, dtype=np.uint8)
            lo = sp[:, byte].astype(np.uint32)
            hi = sp[:, np.where(cross, byte + size, byte)].astype(np.uint32) * cross
            code = (((hi << 8) | lo) >> (p & 7)) & mask
            values = self.vals[g, self.voff[g, :a] + code.astype(np.int64)]  # (n, a)
            axes = self.proj[self.coff[g] : self.coff[g] + a]  # (a, D)
            out[:, k] = cen + self.offsets[k] + g32[:, k : k + 1] * (values @ axes)
        return out


def maxsim_tiered_ids(
    queries: torch.Tensor,
    codes: np.ndarray,
    gains: np.ndarray,
    centres: np.ndarray,
    tables: TieredTables,
    ids: np.ndarray,
    r_q: int,
    r_c: int,
    backend: Literal["auto", "kernel", "torch"] = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """``s[i, k] = sum_{a < r_q} max_{b < r_c} <queries[i, a], decode(ids[i, k])[b]>``.

    Args:
        queries: ``(nq, Kq, D)`` float queries.
        codes: ``(N, W)`` uint8 stored rows (memory-mapped is fine).
        gains: ``(N, K')`` float16 gains of the stored vectors (memory-mapped is fine; the
            kernel reads them in place, and converts another dtype whole first).
        centres: ``(N, D)`` float16 centres of the stored documents (read like ``gains``).
        tables: the codebook's :class:`TieredTables`.
        ids: ``(nq, m)`` int64 candidate rows per query.
        r_q: query vectors used (``<= Kq``).
        r_c: candidate vectors used (``<= K'``).
        backend: ``"kernel"`` (compiled; an error if missing), ``"torch"`` or ``"auto"``.
        threads: kernel threads (default: torch's intra-op threads, 1 for small work).

    Returns:
        ``(nq, m)`` float32 scores.

    Raises:
        ValueError: shapes or budgets that do not fit.
        RuntimeError: ``backend="kernel"`` without the compiled kernel.
        IndexError: a candidate row out of range.
    """
    q = _as_queries(queries)
    dim, ks = int(q.shape[2]), int(gains.shape[1])
    n = int(codes.shape[0])
    if (
        centres.shape != (n, dim)
        or gains.shape[0] != n
        or tables.offsets.shape != (ks, dim)
        or codes.shape[1] < int(tables.slot_offset[-1])
    ):
        raise ValueError(
            f"stored rows {tuple(codes.shape)}, gains {tuple(gains.shape)}, centres "
            f"{tuple(centres.shape)} and offsets {tuple(tables.offsets.shape)} do not fit "
            f"queries of width {dim}"
        )
    ids_t, use_kernel = _check_call(q, n, ks, ids, r_q, r_c, backend, _ext, _EXT_ERROR)
    q, r_q, times = collapse_repeated(q, r_q)
    nq, m = ids_t.shape
    if nq == 0 or m == 0:
        return torch.zeros((nq, m), dtype=torch.float32)
    q32 = q[:, :r_q].to(torch.float32)
    if not use_kernel:
        return scale_repeated(_torch_scores(q32, codes, gains, centres, tables, ids_t, r_c), times)
    assert _ext is not None
    rq = -(-r_q // 16) * 16  # query vectors padded to whole 16-lane blocks (zero vectors)
    nblk, ng, amax = rq // 16, int(tables.nact.shape[0]), int(tables.pos.shape[1])
    qp = torch.zeros((nq, rq, dim), dtype=torch.float32)
    qp[:, :r_q] = q32
    # every coefficient in one product, through torch (numpy's BLAS threads would keep
    # spinning on the cores the kernel's threads need): (nq, C, RQ)
    proj = torch.from_numpy(tables.proj)
    coef = torch.matmul(proj, qp.transpose(1, 2))
    nc = proj.shape[0] - ks
    # (nq, nblk, C, 16): one query vector a lane
    qrot = coef.reshape(nq, -1, nblk, 16).transpose(1, 2).contiguous().numpy()
    qo = coef[:, nc:].transpose(1, 2).contiguous().numpy()  # (nq, RQ, K')
    qt = qp.reshape(nq, nblk, 16, dim).transpose(2, 3).contiguous().numpy()  # (nq, nblk, D, 16)
    cen = _c_order(centres, np.float16)
    g16 = _c_order(gains, np.float16)
    codes_c = _c_order(codes, np.uint8)
    t = tables
    out = torch.empty((nq, m), dtype=torch.float32)
    _ext.score(
        out.data_ptr(), qrot.ctypes.data, qo.ctypes.data, qt.ctypes.data, cen.ctypes.data,
        g16.ctypes.data, ids_t.ctypes.data, codes_c.ctypes.data, nq, m, r_q, rq, r_c, amax, ng,
        int(proj.shape[0]), dim, int(codes_c.shape[1]), ks, n, t.slot_offset.ctypes.data,
        t.slot_group.ctypes.data, t.nact.ctypes.data, t.coff.ctypes.data, t.pos.ctypes.data,
        t.mask.ctypes.data, t.voff.ctypes.data, t.vals.ctypes.data, int(t.vals.shape[1]),
        _kernel_threads(threads, out, r_q, r_c, dim), _tiered_isa(),
    )  # fmt: skip
    return scale_repeated(out, times)


def _tiered_isa() -> int:
    """``METAEMBED_RAG_MAXSIM_ISA``'s base instruction set for this kernel: 0 (generic) or 2
    (AVX-512); ``avx2`` runs the generic build here; -1: the fastest."""
    code = _isa_code()
    if code < 0:
        return -1
    return 2 if code & 15 == 2 else 0


def _torch_scores(
    q32: torch.Tensor,
    codes: np.ndarray,
    gains: np.ndarray,
    centres: np.ndarray,
    tables: TieredTables,
    ids: np.ndarray,
    r_c: int,
) -> torch.Tensor:
    """The torch backend: decode :data:`TORCH_BLOCK` candidates at a time, then MaxSim."""
    return _blockwise_scores(
        q32, ids, r_c, TORCH_BLOCK,
        lambda rows: tables.decode(codes[rows], gains[rows], centres[rows], r_c),
    )  # fmt: skip
