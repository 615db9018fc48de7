"""The coarse (first-stage) index: one vector per document in FAISS, by inner product.

Kinds:

* ``"flat"`` - exact ``IndexFlatIP`` (float32 in memory; never saved: a load rebuilds it from
  the float16 coarse rows, a copy, so its bytes are not stored twice);
* ``"hnsw"`` - ``IndexHNSWSQ`` with float16 codes (inner product), graph ANN, no training;
* ``"ivf"``  - ``IndexIVFScalarQuantizer`` with float16 codes of the vectors themselves (not of
  their residuals; inner product), trained on the vectors present.

The coarse rows are float16 (:data:`~metaembed_rag.index.rowset.COARSE_DTYPE`), so the
float16 codes of HNSW and IVF hold them exactly and every kind scores the stored rows.

Every kind is searched by the index's row numbers ("slots"), so a rebuild or a removal never
renumbers rows: IVF stores them in its lists itself; flat and HNSW are wrapped in
``IndexIDMap2``. (An ``IndexIDMap2`` around IVF, which indexes of format version 1 have, maps
wrong ids after a removal: it assumes removal shifts the later rows, as flat does, but IVF keeps
their ids. Such an index is rebuilt when loaded with deleted rows.) ``flat`` and ``ivf`` support
removal; HNSW does not, so deleted rows stay in its graph and searches pass a selector that
excludes them.

Setting ``"auto"`` (the default) uses ``flat`` below :data:`AUTO_FLAT_MAX` live documents and
switches to ``hnsw`` once, when an ``add`` crosses it (a one-time rebuild from the stored coarse
vectors). Rationale: a flat scan of 200k x 384 floats costs ~77 M multiply-adds per query,
about 10 ms on two cores, and is exact; above that HNSW keeps latency flat. ``"ivf"`` starts flat,
is trained once :data:`IVF_MIN_TRAIN` documents are present, and is trained again on all live
documents whenever an ``add`` finds :data:`IVF_RETRAIN_GROWTH` times as many as it was trained
on (lists fitted to the first 12k of 100k synthetic documents found 0.64 of the exact top 10 at
``nprobe`` 32, lists fitted to all 100k 0.91: ``docs/storage.md``). The rebuilds grow
geometrically, so their cost is a constant factor on the adds.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..extras import require

__all__ = [
    "CoarseIndex", "import_faiss", "AUTO_FLAT_MAX", "IVF_MIN_TRAIN", "IVF_RETRAIN_GROWTH",
    "COARSE_KINDS",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: ``coarse_index="auto"`` stays exact (flat) below this many live documents.
AUTO_FLAT_MAX = 200_000
#: ``coarse_index="ivf"`` trains its quantizer once this many documents are present.
IVF_MIN_TRAIN = 10_000
#: ``coarse_index="ivf"`` is trained again once the live documents reach this multiple of the
#: number it was trained on.
IVF_RETRAIN_GROWTH = 4
COARSE_KINDS = ("auto", "flat", "hnsw", "ivf")


def import_faiss() -> Any:
    """Import FAISS or raise ImportError with the install command."""
    return require(
        "faiss", "pip install 'metaembed-rag[faiss]' (or 'metaembed-rag[gpu]' for faiss-gpu)",
        "The multi-vector index's coarse stage",
    )  # fmt: skip


class CoarseIndex:
    """FAISS index over one vector per slot (see the module docstring).

    Args:
        dim: vector width D.
        setting: ``"auto"``, ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        hnsw_m: HNSW graph degree M.
        ef_construction / ef_search: HNSW build / search beam (search uses
            ``max(ef_search, k)``).
        ivf_nlist: IVF list count (default ``4 * sqrt(N)`` at training time, 16..65536).
        nprobe: IVF lists visited per query.
        use_gpu: search flat/IVF indexes on a GPU when faiss-gpu and a GPU are present
            (unfiltered searches only; filtered ones and HNSW stay on the CPU).
    """

    def __init__(
        self,
        dim: int,
        setting: str = "auto",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        ivf_nlist: int | None = None,
        nprobe: int = 32,
        use_gpu: bool = False,
    ) -> None:
        if setting not in COARSE_KINDS:
            raise ValueError(f"coarse_index must be one of {COARSE_KINDS}, got {setting!r}.")
        self.faiss = import_faiss()
        self.dim = int(dim)
        self.setting = setting
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.ivf_nlist = ivf_nlist
        self.nprobe = nprobe
        self.use_gpu = use_gpu
        self.kind = "hnsw" if setting == "hnsw" else "flat"
        self.index = self._new(self.kind, None)
        self.stale = 0  # rows still inside FAISS that are deleted (HNSW keeps them)
        self.trained_on = 0  # IVF: the documents its lists were fitted to
        self._gpu_index: Any = None
        self._gpu_dirty = True

    # ------------------------------------------------------------------ construction
    def _new(self, kind: str, train: np.ndarray | None, total: int = 0) -> Any:
        """A new FAISS index of ``kind``; IVF is trained on ``train``, a sample of the
        ``total`` vectors it will hold (its list count follows ``total``)."""
        faiss = self.faiss
        fp16, ip = faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            base = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            base = faiss.IndexHNSWSQ(self.dim, fp16, self.hnsw_m, ip)
            base.hnsw.efConstruction = self.ef_construction
            base.hnsw.efSearch = self.ef_search
        elif kind == "ivf":
            assert train is not None
            n = max(total, len(train))
            nlist = self.ivf_nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
            nlist = min(nlist, max(1, len(train) // 39))
            quantizer = faiss.IndexFlatIP(self.dim)
            # by_residual=False: float16 codes of the vectors themselves, exact for float16 rows
            base = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, fp16, ip, False)
            base.train(np.ascontiguousarray(train, dtype=np.float32))
            base.nprobe = self.nprobe
            base.own_fields = True
            quantizer.this.disown()
            return base  # IVF keeps the slots as its own ids (no IndexIDMap2: module docstring)
        else:  # pragma: no cover - validated earlier
            raise ValueError(kind)
        index = faiss.IndexIDMap2(base)
        index.own_fields = True
        base.this.disown()
        return index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def saved(self) -> bool:
        """Whether a save writes this index (HNSW, IVF); a flat one is rebuilt on load."""
        return self.kind != "flat"

    def flat_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """A flat index's own float32 vectors ``(n, D)`` and their int64 slots ``(n,)`` (views,
        no copies), in FAISS's order: for scanning them without FAISS.

        Raises:
            ValueError: the index is not flat.
        """
        if self.kind != "flat":
            raise ValueError(f"flat_rows needs a flat coarse index, this one is {self.kind}.")
        base = self.faiss.downcast_index(self.index.index)
        n = int(base.ntotal)
        vectors = self.faiss.rev_swig_ptr(base.get_xb(), n * self.dim).reshape(n, self.dim)
        return vectors, self.faiss.rev_swig_ptr(self.index.id_map.data(), n)

    @property
    def supports_remove(self) -> bool:
        """Whether removed rows leave FAISS; otherwise they are stale (excluded by a selector)."""
        return self.kind != "hnsw" and not self.ids_shift_on_remove

    def add(self, vectors: np.ndarray, slots: np.ndarray) -> None:
        """Add ``(n, D)`` float32 vectors under int64 ``slots``."""
        if len(slots):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(slots, dtype=np.int64),
            )
            self._gpu_dirty = True

    def remove(self, slots: np.ndarray) -> None:
        """Remove slots (flat/IVF), or count them as stale (HNSW: excluded at search time)."""
        if not len(slots):
            return
        if self.supports_remove:
            sel = self.faiss.IDSelectorBatch(np.ascontiguousarray(slots, dtype=np.int64))
            self.index.remove_ids(sel)
            self._gpu_dirty = True
        else:
            self.stale += len(slots)

    def target_kind(self, live: int) -> str:
        """The kind this index should have with ``live`` documents."""
        if self.setting == "auto":
            return "flat" if live < AUTO_FLAT_MAX else "hnsw"
        if self.setting == "ivf":
            return "ivf" if live >= IVF_MIN_TRAIN else "flat"
        return self.setting

    def due(self, live: int) -> str | None:
        """The kind to rebuild into after an add that leaves ``live`` documents, or ``None``:
        the setting's kind for ``live`` differs from the current one, or an IVF index has
        :data:`IVF_RETRAIN_GROWTH` times the documents it was trained on."""
        target = self.target_kind(live)
        if target != self.kind:
            return target
        if self.kind == "ivf" and live >= IVF_RETRAIN_GROWTH * self.trained_on:
            return "ivf"
        return None

    def rebuild(self, kind: str, vectors: np.ndarray, slots: np.ndarray) -> None:
        """Replace the FAISS index by a new one of ``kind`` over ``vectors`` / ``slots``."""
        logger.info("building a %s coarse index over %d vectors", kind, len(slots))
        train = vectors if kind == "ivf" else None
        if kind == "ivf" and len(vectors) > 200_000:
            pick = np.random.default_rng(0).choice(len(vectors), 200_000, replace=False)
            train = vectors[np.sort(pick)]
        self.index = self._new(kind, train, len(slots))
        self.kind = kind
        self.stale = 0
        self.trained_on = len(slots) if kind == "ivf" else 0
        step = 65536
        for s in tqdm(
            range(0, len(slots), step),
            desc=f"Building {kind} coarse index",
            unit="chunk",
            disable=len(slots) < 4 * step,
        ):
            self.add(np.asarray(vectors[s : s + step], dtype=np.float32), slots[s : s + step])
        self._gpu_dirty = True

    # ------------------------------------------------------------------ search
    def _params(self, k: int, selector: Any) -> Any:
        faiss = self.faiss
        if self.kind == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = max(self.ef_search, k)
        elif self.kind == "ivf":
            p = faiss.SearchParametersIVF()
            p.nprobe = self.nprobe
        else:
            p = faiss.SearchParameters()
        if selector is not None:
            p.sel = selector
        return p

    def _gpu(self) -> Any:
        faiss = self.faiss
        if not self.use_gpu or self.kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
            return None
        if faiss.get_num_gpus() < 1:
            return None
        if self._gpu_dirty or self._gpu_index is None:
            self._res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._res, 0, self.index)
            self._gpu_dirty = False
        return self._gpu_index

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` slots by inner product among ``allowed`` slots.

        Args:
            queries: ``(nq, D)`` float32.
            k: results per query.
            allowed: boolean ``(num_slots,)`` mask or ``None`` (every slot in FAISS).

        Returns:
            ``(scores (nq, k) float32, slots (nq, k) int64)``; missing results have slot -1.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        selector = None
        keep: Any = None
        if allowed is not None:
            keep = np.packbits(allowed.astype(np.uint8), bitorder="little")
            selector = self.faiss.IDSelectorBitmap(len(allowed), self.faiss.swig_ptr(keep))
        gpu = self._gpu() if selector is None else None
        if gpu is not None:
            scores, slots = gpu.search(q, k)
        else:
            scores, slots = self.index.search(q, k, params=self._params(k, selector))
        del keep  # the bitmap must outlive the search call
        return scores, slots

    # ------------------------------------------------------------------ persistence
    def settings(self) -> dict[str, Any]:
        """What a manifest records to rebuild this index object (see :meth:`read`)."""
        return {
            "setting": self.setting, "kind": self.kind, "stale": self.stale,
            "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
            "ef_search": self.ef_search, "ivf_nlist": self.ivf_nlist, "nprobe": self.nprobe,
        }  # fmt: skip

    def write(self, path: str) -> None:
        """Write with ``faiss.write_index`` (never pickle)."""
        self.faiss.write_index(self.index, path)

    @property
    def ids_shift_on_remove(self) -> bool:
        """Whether removing rows would map wrong ids: an ``IndexIDMap2`` around IVF, as saved
        by format version 1 (module docstring)."""
        wrapped = self.index.index if isinstance(self.index, self.faiss.IndexIDMap2) else None
        return wrapped is not None and isinstance(
            self.faiss.downcast_index(wrapped), self.faiss.IndexIVF
        )

    def read(self, path: str, kind: str, stale: int) -> None:
        """Replace the FAISS index by the one in ``path``."""
        self.index = self.faiss.read_index(path)  # already of its own class, and owning it
        self.kind = kind
        self.stale = stale
        self.trained_on = self.ntotal if kind == "ivf" else 0  # or fewer: retrains no earlier
        self._gpu_dirty = True
