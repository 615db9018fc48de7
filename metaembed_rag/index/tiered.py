"""Tiered gain-shape transform coding of a document's vectors (the ``tiered`` storage kind).

A document's stored vectors ``x_k`` (``k < K'``, float32 ``D``) are kept as

* its **centre** ``c`` (float16 ``D``): the mean of its stored vectors, one per document;
* per vector, a **gain** ``g_k`` (float16): the length of its residual
  ``r_k = x_k - c - o_k``, where ``o_k`` is slot ``k``'s mean offset from the centre over the
  training sample;
* per vector, the residual's **shape** ``r_k / g_k`` rotated onto principal axes and coded with
  a fixed number of bits, split over the axes by reverse water-filling (0-8 bits an axis; each
  bit width's quantile buckets, bucket means as values).

Decoding: ``x_k ~= c + o_k + g_k * sum_a values[a][code_a] * scale[a] * axes[:, a]``.

**Tiers.** The first vectors are the ones every budget reads, so they get the most bits:
slots 0-7 get ``8/3`` bits a dimension (1,024 bits at D=384), slots 8-15 ``4/3`` (512) and
the rest ``2/3`` (256). Each tier has its own axes, scales and allocation. At D=384 and 64
vectors a document takes 3,072 code bytes + 128 gain bytes + 768 centre bytes: 3,968 bytes.

**Why gain-shape.** Coding the residuals themselves fits the quantiser's range to typical
residuals and clips the few documents whose residuals are much longer; their decoded vectors
collapse towards ``c + o_k``, directions many queries share, and such documents turn into
hubs at the large budgets (``docs/storage.md``, the quantiser study). Coding every residual at
unit length and keeping its length separately leaves no residual out of range, with no
threshold to choose. The recipe was chosen on the default recipe's dev split of held-out
training pairs (``benchmarks/quantiser_study.py --dev-recipe``), not on the zero-shot suite.

**Training.** Like the residual kinds, the codebook is trained once, on a sample of the first
batch added to an index, and kept on later adds (rows never change); a later batch whose first
documents (``storage.DRIFT_SAMPLE``) are coded much worse than the training sample logs a
warning (:func:`~metaembed_rag.index.residual.warn_drift`, the residual kinds' rule).

**Layout.** A document row is ``row_bytes(K')`` code bytes, tier after tier. A tier of ``S``
slots of ``B`` bytes each (its codes packed little-endian, axis after axis, skipping 0-bit
axes) is a block of ``B * S`` bytes with the slots interleaved byte by byte: byte ``j`` of slot
``s`` is at ``block[j * S + s]``, so the scoring kernel reads one code of 16 vectors with one
16-byte load and no gather. The first ``r_c`` vectors therefore lie in the row's first tier
blocks, ``row[: read_bytes(r_c)]``. :meth:`TieredCodebook.decode` and the scoring kernel
(:mod:`metaembed_rag.scoring.tiered`) read the same :class:`~metaembed_rag.scoring.tiered.TieredTables`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save

from ..scoring.tiered import TieredTables
from .persist import IndexCorruptedError, IndexMismatchError
from .residual import warn_drift

__all__ = ["TieredCodebook", "TIERS", "tiered_centres", "LAYOUT"]

logger = logging.getLogger(__name__)

#: ``(first slot after the tier, bits per dimension)``; the last tier runs to K'.
TIERS: tuple[tuple[int, float], ...] = ((8, 8 / 3), (16, 4 / 3), (1 << 30, 2 / 3))
#: Version of the row layout, saved with the codebook: 2 interleaves a tier's slots byte by
#: byte (version 1, unmarked, kept each slot's bytes together and is refused on load).
LAYOUT = 2
#: Most bits one axis gets.
MAX_BITS = 8
#: Spare values after each tier's value table (the kernel reads 64 from any axis's start).
VALUE_SPARE = 64
#: Documents sampled from the first batch to train the codebook.
TRAIN_DOCS = 4096
#: Fewer training documents than this log a warning: each tier's principal axes and buckets
#: need a few thousand vectors (the CLI's first batch of one sample file left the other chunks
#: 0.15 squared error from their vectors; 2,000 chunks of a suite corpus leave 0.02).
SMALL_TRAIN_DOCS = 1000
#: Values sampled to fit each bit width's quantile buckets.
BUCKET_SAMPLE = 200_000
_MIN_GAIN = 1e-6


def tier_bits(slot: int, dim: int) -> int:
    """Code bits of vector ``slot`` at width ``dim`` (a multiple of 8 bits).

    >>> [tier_bits(k, 384) for k in (0, 7, 8, 15, 16, 63)]
    [1024, 1024, 512, 512, 256, 256]
    """
    for end, rate in TIERS:
        if slot < end:
            return max(8, int(round(dim * rate / 8)) * 8)
    raise AssertionError("unreachable")  # pragma: no cover


def _groups(num_vectors: int) -> list[tuple[int, int]]:
    """Slot ranges ``[(start, end)]`` of the tiers present in ``num_vectors`` slots."""
    out, start = [], 0
    for end, _ in TIERS:
        if start >= num_vectors:
            break
        out.append((start, min(end, num_vectors)))
        start = end
    return out


class TieredCodebook:
    """Axes, scales, bit allocation and bucket values of every tier (module docstring).

    Args:
        dim: vector width D.
        num_vectors: stored vectors per document K'.
        seed: sampling seed (training is deterministic for a given batch and seed).
    """

    def __init__(self, dim: int, num_vectors: int, seed: int = 0) -> None:
        if dim < 1 or num_vectors < 1:
            raise ValueError(f"dim and num_vectors must be >= 1, got {dim}, {num_vectors}.")
        self.dim, self.num_vectors, self.seed = int(dim), int(num_vectors), int(seed)
        self.groups = _groups(self.num_vectors)
        #: Byte offset of every slot's codes in a row, and the row's code bytes (no padding).
        sizes = [tier_bits(k, self.dim) // 8 for k in range(self.num_vectors)]
        self.slot_offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.offsets: np.ndarray | None = None  # (K', D) float32 o_k
        self.axes: np.ndarray | None = None  # (G, D, D) float32, columns = axes
        self.scale: np.ndarray | None = None  # (G, D) float32
        self.bits: np.ndarray | None = None  # (G, D) int8 bits per axis
        self.edges: np.ndarray | None = None  # (G, 9, 255) float32, +inf padded
        self.means: np.ndarray | None = None  # (G, 9, 256) float32, 0 padded
        self.train_mse = 0.0
        self._tables: TieredTables | None = None

    # ------------------------------------------------------------------ layout
    @property
    def trained(self) -> bool:
        return self.axes is not None

    def row_bytes(self, r: int | None = None) -> int:
        """Code bytes of the first ``r`` vectors (default: all ``K'``)."""
        return int(self.slot_offset[self.num_vectors if r is None else r])

    def read_bytes(self, r: int) -> int:
        """The prefix of a row that decoding its first ``r`` vectors reads: the blocks of the
        tiers they belong to (a tier's slots are interleaved byte by byte)."""
        return int(self.slot_offset[next(e for s, e in self.groups if s <= r - 1 < e)])

    def group_of(self, slot: int) -> int:
        """The tier of vector ``slot``."""
        return next(g for g, (s, e) in enumerate(self.groups) if s <= slot < e)

    # ------------------------------------------------------------------ training
    def train(self, x: np.ndarray) -> None:
        """Train on float32 documents ``(n, K', D)`` (a sample of :data:`TRAIN_DOCS`)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check_shape(x)
        if x.shape[0] == 0:
            raise ValueError("cannot train a tiered codebook on no documents.")
        if x.shape[0] < SMALL_TRAIN_DOCS:
            logger.warning(
                "tiered codebook trained on %d document(s): later documents will be coded "
                "poorly unless they resemble these. Build a tiered index from a first batch of "
                "at least %d representative chunks (the codebook is kept on later adds), or "
                "use storage bfloat16 / int8 for a small collection",
                x.shape[0], SMALL_TRAIN_DOCS,
            )  # fmt: skip
        rng = np.random.default_rng(self.seed)
        if x.shape[0] > TRAIN_DOCS:
            x = x[np.sort(rng.choice(x.shape[0], TRAIN_DOCS, replace=False))]
        gen = torch.Generator().manual_seed(self.seed)
        xt = torch.from_numpy(x)
        centre = _centre(xt)
        self.offsets = (xt - centre).mean(0).numpy().astype(np.float32)
        d, ng = self.dim, len(self.groups)
        self.axes = np.zeros((ng, d, d), np.float32)
        self.scale = np.ones((ng, d), np.float32)
        self.bits = np.zeros((ng, d), np.int8)
        self.edges = np.full((ng, MAX_BITS + 1, 255), np.inf, np.float32)
        self.means = np.zeros((ng, MAX_BITS + 1, 256), np.float32)
        for g, (start, end) in enumerate(self.groups):
            part = xt[:, start:end]
            flat = part.reshape(-1, d).double()
            lam, axes = torch.linalg.eigh(flat.T @ flat / flat.shape[0])
            lam, axes = lam.flip(0).clamp_min(1e-12), axes.flip(1).float()
            _, shape = _gain_shape(part - centre - torch.from_numpy(self.offsets[start:end]))
            coef = shape.reshape(-1, d) @ axes
            scale = coef.std(0).clamp_min(1e-8)
            budget = tier_bits(start, d)
            bits = _allocate(lam * scale.double() ** 2, budget)
            y = coef / scale
            self.axes[g], self.scale[g], self.bits[g] = axes.numpy(), scale.numpy(), bits
            for b in sorted(set(bits.tolist()) - {0}):
                vals = y[:, torch.from_numpy(bits == b)].reshape(-1)
                vals = vals[torch.randperm(vals.numel(), generator=gen)[:BUCKET_SAMPLE]]
                edges, means = _buckets(vals, b)
                self.edges[g, b, : edges.numel()] = edges.numpy()
                self.means[g, b, : means.numel()] = means.numpy()
            logger.info("tiered codebook, slots %d-%d at %d bits: axes per width %s",
                        start, end - 1, budget, np.bincount(bits, minlength=9).tolist())  # fmt: skip
        self._tables = None
        self.train_mse = self.mse(x)

    # ------------------------------------------------------------------ coding
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 ``(n, K', D)`` -> (codes ``(n, row_bytes())`` uint8, gains ``(n, K')``
        float16, centres ``(n, D)``: :func:`tiered_centres`, float32 holding float16 values)."""
        self._need_trained()
        assert self.offsets is not None and self.axes is not None and self.scale is not None
        assert self.bits is not None and self.edges is not None
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check_shape(x)
        n = x.shape[0]
        xt = torch.from_numpy(x)
        centre = _centre(xt)
        gain, shape = _gain_shape(xt - centre - torch.from_numpy(self.offsets))
        codes = np.zeros((n, self.row_bytes()), np.uint8)
        for g, (start, end) in enumerate(self.groups):
            y = (shape[:, start:end] @ torch.from_numpy(self.axes[g])) / torch.from_numpy(
                self.scale[g]
            )
            q = np.zeros(y.shape, np.uint8)
            for b in sorted(set(self.bits[g].tolist()) - {0}):
                cols = np.flatnonzero(self.bits[g] == b)
                edges = torch.from_numpy(self.edges[g, b, : (1 << b) - 1].copy())
                q[..., cols] = torch.bucketize(y[..., cols].contiguous(), edges).numpy()
            lo, hi = self.slot_offset[start], self.slot_offset[end]
            # byte j of every slot of the tier side by side: (n, bytes, S)
            codes[:, lo:hi] = self._pack(q, g).transpose(0, 2, 1).reshape(n, -1)
        return codes, gain.numpy(), centre[:, 0].numpy()

    def _pack(self, q: np.ndarray, g: int) -> np.ndarray:
        """Codes ``(n, S, D)`` (uint8) of tier ``g``'s ``S`` slots -> their bytes
        ``(n, S, bits/8)``: each coded axis's bits at its offset, lowest bit first."""
        active, pos, bits = self.axis_layout(g)
        total = tier_bits(self.groups[g][0], self.dim)
        stream = np.zeros((*q.shape[:2], total), np.uint8)
        for t in range(MAX_BITS):  # bit plane t of every axis with more than t bits
            sel = bits > t
            if sel.any():
                stream[..., pos[sel] + t] = (q[..., active[sel]] >> t) & 1
        return np.packbits(stream, axis=-1, bitorder="little")

    def axis_layout(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tier ``g``'s coded axes: (axis numbers, bit offsets in a slot, bits), int32."""
        assert self.bits is not None
        bits = self.bits[g].astype(np.int32)
        pos = np.concatenate([[0], np.cumsum(bits)])[:-1].astype(np.int32)
        active = np.flatnonzero(bits).astype(np.int32)
        return active, pos[active], bits[active]

    def tables(self) -> TieredTables:
        """The codebook in the scoring kernel's layout (built once, then cached)."""
        self._need_trained()
        if self._tables is None:
            assert self.offsets is not None and self.axes is not None and self.scale is not None
            assert self.bits is not None and self.means is not None
            ng, d = len(self.groups), self.dim
            lay = [self.axis_layout(g) for g in range(ng)]
            amax = max(16, -(-max(a.size for a, _, _ in lay) // 16) * 16)
            tier_rows = [max(16, -(-a.size // 16) * 16) for a, _, _ in lay]
            coff = np.concatenate([[0], np.cumsum(tier_rows)])[:-1].astype(np.int32)
            proj = np.zeros((sum(tier_rows) + self.num_vectors, d), np.float32)
            pos = np.zeros((ng, amax), np.int32)
            mask = np.zeros((ng, amax), np.int32)
            voff = np.zeros((ng, amax), np.int32)
            width = max(int((1 << b.astype(np.int64)).sum()) for _, _, b in lay)
            # + VALUE_SPARE: the kernel loads a narrow axis's values as 32 or 64 floats
            vals = np.zeros((ng, width + VALUE_SPARE), np.float32)
            for g, (active, p, b) in enumerate(lay):
                a = active.size
                proj[coff[g] : coff[g] + a] = (self.axes[g][:, active] * self.scale[g][active]).T
                pos[g, :a], mask[g, :a] = p, (1 << b) - 1
                sizes = 1 << b.astype(np.int64)
                voff[g, :a] = np.concatenate([[0], np.cumsum(sizes)])[:-1]
                for t in range(a):
                    vals[g, voff[g, t] : voff[g, t] + sizes[t]] = self.means[g][b[t], : sizes[t]]
            proj[sum(tier_rows) :] = self.offsets
            self._tables = TieredTables(
                slot_offset=self.slot_offset.copy(),
                slot_group=np.array([self.group_of(k) for k in range(self.num_vectors)],
                                    np.int32),
                proj=proj, coff=coff,
                nact=np.array([a.size for a, _, _ in lay], np.int32),
                pos=pos, mask=mask, voff=voff, vals=vals,
            )  # fmt: skip
        return self._tables

    def decode(self, codes: np.ndarray, gains: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Rows ``(n, >= read_bytes(r))``, gains ``(n, r)`` (the first ``r`` vectors) and
        centres ``(n, D)`` -> float32 ``(n, r, D)`` (:meth:`TieredTables.decode`, the values
        the kernel scores)."""
        return self.tables().decode(codes, gains, centres, int(gains.shape[-1]))

    def mse(self, x: np.ndarray) -> float:
        """Mean squared reconstruction error per vector of float32 ``(n, K', D)``."""
        codes, gains, centres = self.encode(x)
        dec = self.decode(codes, gains, centres)
        return float(((dec - x) ** 2).sum(axis=-1).mean())

    def check_drift(self, x: np.ndarray, decoded: np.ndarray) -> float:
        """Mean squared error of ``decoded`` against ``x``; logs a warning when the kept
        codebook fits it much worse than its training sample (:func:`.residual.warn_drift`)."""
        err = float(((decoded - x) ** 2).sum(axis=-1).mean())
        warn_drift(logger, "tiered", err, self.train_mse)
        return err

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """safetensors bytes of the trained codebook."""
        self._need_trained()
        assert self.offsets is not None and self.axes is not None and self.scale is not None
        assert self.bits is not None and self.edges is not None and self.means is not None
        tensors = {
            "offsets": self.offsets, "axes": self.axes, "scale": self.scale,
            "bits": self.bits, "edges": self.edges, "means": self.means,
            "train_mse": np.array([self.train_mse], dtype=np.float64),
        }  # fmt: skip
        meta = {"kind": "tiered", "dim": str(self.dim), "num_vectors": str(self.num_vectors),
                "layout": str(LAYOUT)}  # fmt: skip
        return save(tensors, metadata=meta)

    def load(self, path: Path) -> None:
        """Load a codebook saved by :meth:`to_bytes`.

        Raises:
            IndexCorruptedError: unreadable, or shapes that do not fit this index.
            IndexMismatchError: saved in another row layout (:data:`LAYOUT`).
        """
        try:
            t = load_file(str(path))
            with safe_open(str(path), "np") as f:
                layout = (f.metadata() or {}).get("layout", "1")
        except Exception as exc:
            raise IndexCorruptedError(f"{path}: unreadable tiered codebook ({exc}).") from exc
        if layout != str(LAYOUT):
            raise IndexMismatchError(
                f"{path}: tiered rows in layout {layout}; this metaembed-rag reads layout "
                f"{LAYOUT} (a tier's slots interleaved byte by byte). Rebuild the index with "
                "this version, or open it with the metaembed-rag that wrote it."
            )
        d, k, ng = self.dim, self.num_vectors, len(self.groups)
        want = {
            "offsets": (k, d), "axes": (ng, d, d), "scale": (ng, d), "bits": (ng, d),
            "edges": (ng, MAX_BITS + 1, 255), "means": (ng, MAX_BITS + 1, 256),
            "train_mse": (1,),
        }  # fmt: skip
        for name, shape in want.items():
            if name not in t or tuple(t[name].shape) != shape:
                got = None if name not in t else tuple(t[name].shape)
                raise IndexCorruptedError(
                    f"{path}: tiered codebook tensor {name!r} has shape {got}, expected "
                    f"{shape}; restore the index from a backup or rebuild it."
                )
        bits = t["bits"].astype(np.int8)
        budgets = [tier_bits(s, d) for s, _ in self.groups]
        if (
            bits.min() < 0
            or bits.max() > MAX_BITS
            or any(int(bits[g].astype(np.int64).sum()) > budgets[g] for g in range(ng))
        ):
            raise IndexCorruptedError(
                f"{path}: tiered codebook bit allocation out of range; restore the index "
                "from a backup or rebuild it."
            )
        self.offsets = t["offsets"].astype(np.float32)
        self.axes, self.scale = t["axes"].astype(np.float32), t["scale"].astype(np.float32)
        self.bits = bits
        self.edges, self.means = t["edges"].astype(np.float32), t["means"].astype(np.float32)
        self._tables = None
        self.train_mse = float(t["train_mse"][0])

    # ------------------------------------------------------------------ helpers
    def _need_trained(self) -> None:
        if not self.trained:
            raise RuntimeError("the tiered codebook is not trained yet (add documents first).")

    def _check_shape(self, x: np.ndarray) -> None:
        if x.ndim != 3 or x.shape[1:] != (self.num_vectors, self.dim):
            raise ValueError(
                f"tiered coding takes (n, {self.num_vectors}, {self.dim}) vectors, got "
                f"shape {x.shape}."
            )


def tiered_centres(x: np.ndarray) -> np.ndarray:
    """The centres of documents ``(n, K', D)``: float16-rounded means, float32 ``(n, D)``.

    >>> tiered_centres(np.array([[[1.0, 2.0], [3.0, 2.0]]], np.float32)).tolist()
    [[2.0, 2.0]]
    """
    return np.asarray(x, np.float32).mean(axis=1).astype(np.float16).astype(np.float32)


def _centre(x: torch.Tensor) -> torch.Tensor:
    """:func:`tiered_centres` of a torch tensor, ``(n, 1, D)``."""
    return torch.from_numpy(tiered_centres(x.numpy()))[:, None]


def _gain_shape(resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals ``(..., D)`` -> their float16 lengths (the gains) and the residuals divided
    by them (the shapes), as training and encoding both split them."""
    gain = resid.norm(dim=-1).half()
    return gain, resid / gain.float().clamp_min(_MIN_GAIN)[..., None]


def _allocate(importance: torch.Tensor, budget: int) -> np.ndarray:
    """Reverse water-filling: ``round(log2(importance / t) / 2)`` bits an axis, clamped to
    0-8, for the smallest threshold ``t`` whose total fits ``budget``."""
    imp = importance.double()

    def alloc(threshold: float) -> torch.Tensor:
        return (0.5 * torch.log2(imp / threshold)).clamp(0, MAX_BITS).round()

    lo, hi = 1e-30, float(imp.max()) * 4
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if alloc(mid).sum() > budget else (lo, mid)
    return alloc(hi).numpy().astype(np.int8)


def _buckets(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantile edges ``(2**bits - 1,)`` and bucket means ``(2**bits,)`` of ``values``."""
    n = 1 << bits
    edges = torch.quantile(values, torch.linspace(0, 1, n + 1)[1:-1])
    which = torch.bucketize(values, edges)
    counts = torch.bincount(which, minlength=n)
    sums = torch.zeros(n, dtype=values.dtype).index_add_(0, which, values)
    means = sums / counts.clamp_min(1)
    empty = counts == 0
    fill = torch.cat([edges[:1], edges])  # an empty bucket (ties) gets its lower edge
    return edges.float(), torch.where(empty, fill, means).float()
