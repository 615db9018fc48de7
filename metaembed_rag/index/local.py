"""``LocalBackend``: the :class:`~metaembed_rag.index.backend.StorageBackend` on local files.

Parts, each saving itself: a :class:`~metaembed_rag.index.doctable.DocumentTable` (ids, texts,
metadata: ``docs-<tag>.jsonl``), a :class:`~metaembed_rag.index.rowset.RowSet` (memory-mapped
vector, scale and coarse rows: ``<kind>-<tag>.bin``) and a
:class:`~metaembed_rag.index.coarse.CoarseIndex` (FAISS over the coarse rows:
``faiss-<tag>.faiss``, for HNSW and IVF; a flat one is rebuilt from the rows on load).
:mod:`~metaembed_rag.index.saving` writes the manifest that names them (last: the commit point)
and checks them on load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..budget import Budget
from ..scoring import kernel_available, maxsim, maxsim_ids
from ..scoring.int8 import maxsim_int8_ids
from ..scoring.residual import maxsim_residual_ids, residual_kernel_available
from ..scoring.tiered import maxsim_tiered_ids, tiered_kernel_available
from .backend import SCAN_CHUNK, Record, StorageBackend, StorageInfo
from .coarse import CoarseIndex
from .doctable import DocumentTable
from .filters import Filter
from .hits import stable_topk
from .readers import remove_unread
from .rowset import RowSet, new_tag
from .saving import check_files, finish_save, manifest_files, write_faiss
from .validate import DocumentBatch

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

#: Flat coarse searches with at most this many queries use a torch scan instead of FAISS.
_TORCH_FLAT_MAX_QUERIES = 8


def scoring_backend() -> Literal["kernel", "torch"]:
    """The scoring backend for rerank and exhaustive search: one code path for both, so a
    document gets bit-identical scores however it was reached (BLAS rounding depends on a row's
    position in the batch, which would break ties between duplicate documents differently)."""
    return "kernel" if kernel_available() else "torch"


def _coded_backend() -> Literal["kernel", "torch"]:
    """The backend for coded rows (int8, residual): the coded-row kernel when it was built."""
    return "kernel" if residual_kernel_available() else "torch"


class LocalBackend(StorageBackend):
    """Rows in RAM or memory-mapped files under ``path``, FAISS coarse recall.

    Args:
        rows: the (empty or loaded) row set.
        coarse: the FAISS coarse index over the coarse rows.
        table: the document table (default: empty).
        exact_subset_max: filtered searches whose matching set is at most this large scan the
            matching coarse rows exactly instead of FAISS with a selector.
    """

    def __init__(
        self,
        rows: RowSet,
        coarse: CoarseIndex,
        table: DocumentTable | None = None,
        exact_subset_max: int = 20_000,
    ) -> None:
        self.rows, self.coarse = rows, coarse
        self.table = table or DocumentTable()
        self.dim, self.num_vectors = rows.dim, rows.num_vectors
        self.exact_subset_max = int(exact_subset_max)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def num_rows(self) -> int:
        return self.rows.count

    def describe(self) -> StorageInfo:
        """The FAISS index kind in use now; vector (+ int8 scale) + coarse row bytes."""
        return {"coarse_kind": self.coarse.kind, "bytes_per_document": self.rows.row_bytes}

    @property
    def path(self) -> Path | None:
        """The folder the rows live in (``None``: RAM)."""
        return self.rows.folder

    # ------------------------------------------------------------------ writing
    def add(self, batch: DocumentBatch) -> None:
        if not batch.ids:
            return
        slots, coarse = self.rows.append(batch.vectors)
        self.table.append(batch.ids, batch.texts, batch.metadatas)
        kind = self.coarse.due(len(self))
        if kind is not None:  # a switch of kind, or IVF lists fitted to far fewer documents
            self._rebuild(kind)
        else:
            self.coarse.add(coarse, slots)

    def delete(self, ids: Sequence[str]) -> int:
        slots = self.table.delete(ids)
        self.coarse.remove(slots)
        return int(slots.size)

    def rebuild_coarse(self, kind: str | None = None) -> None:
        """Rebuild FAISS, switching its setting to ``kind`` for good when given (``"ivf"``
        trains IVF now whatever the collection size).

        Raises:
            ValueError: ``kind`` is not ``auto``, ``flat``, ``hnsw``, ``ivf`` or ``None``.
        """
        if kind is not None:
            if kind not in ("auto", "flat", "hnsw", "ivf"):
                raise ValueError(f"kind must be auto, flat, hnsw or ivf, got {kind!r}.")
            self.coarse.setting = kind
        self._rebuild("ivf" if kind == "ivf" else self.coarse.target_kind(len(self)))

    def _rebuild(self, kind: str) -> None:
        """Rebuild FAISS of ``kind`` from the live coarse rows."""
        live = np.flatnonzero(self.table.alive).astype(np.int64)
        self.coarse.rebuild(kind, self.rows.coarse_rows(live), live)

    def reserve(self, num_docs: int) -> None:
        self.rows.reserve(num_docs)

    def close(self) -> None:
        self.rows.close()

    def compact(self) -> None:
        """Rewrite the live rows into new files and rebuild FAISS; files named by a saved
        manifest stay until the next save."""
        live = np.flatnonzero(self.table.alive)
        if live.size == self.rows.count:
            return
        logger.info("compacting: %d live of %d rows", live.size, self.rows.count)
        old_paths = [s.path for _, s in self.rows.stores() if s.path is not None]
        self.rows = self.rows.compacted(live)
        self.table.keep(live)
        self._rebuild(self.coarse.target_kind(len(self)))
        if self.path is None:
            for p in old_paths:
                p.unlink(missing_ok=True)
        else:  # a reader may be opening the saved generation: delete only what it does not name
            referenced = manifest_files(self.path)
            remove_unread(self.path, [p for p in old_paths if p.name not in referenced])

    # ------------------------------------------------------------------ records
    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        slot_of = self.table.slot_of
        return np.array([slot_of.get(i, -1) for i in ids], dtype=np.int64)

    def records(self, rows: np.ndarray) -> list[Record]:
        t = self.table
        out = []
        for r in np.asarray(rows).tolist():
            doc_id = t.ids[r]
            if doc_id is None:
                raise KeyError(f"Row {r} holds no live document (deleted or compacted away).")
            out.append(Record(doc_id, t.texts[r], dict(t.metas[r] or {})))
        return out

    # ------------------------------------------------------------------ reading
    def allowed(self, filter: Filter | None) -> np.ndarray:
        return self.table.allowed(filter)

    def fetch(self, rows: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        return self.rows.decode(rows, r_c)

    def _query_coarse(self, q: torch.Tensor) -> np.ndarray:
        if self.rows.coarse_vector == "first":
            return np.ascontiguousarray(q[:, 0].numpy())
        mean = torch.nn.functional.normalize(q.mean(dim=1), dim=-1)
        return np.ascontiguousarray(mean.numpy())

    def candidates(
        self, queries: torch.Tensor, pool: int, allowed: np.ndarray, filtered: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = queries.shape[0]
        allowed_rows = np.flatnonzero(allowed).astype(np.int64)
        if pool >= allowed_rows.size:  # every matching row is a candidate: exact
            cand = np.broadcast_to(allowed_rows, (nq, allowed_rows.size)).copy()
            return cand, np.ones(cand.shape, dtype=bool)
        qc = self._query_coarse(queries)
        if filtered and allowed_rows.size <= self.exact_subset_max:
            sims = qc @ self.rows.coarse_rows(allowed_rows).T  # (nq, n_allowed)
            cand = np.empty((nq, pool), dtype=np.int64)
            for i in range(nq):
                cand[i] = allowed_rows[stable_topk(sims[i], allowed_rows, pool)]
            return cand, np.ones(cand.shape, dtype=bool)
        if self.coarse.kind == "flat" and nq <= _TORCH_FLAT_MAX_QUERIES and not self.coarse.use_gpu:
            # FAISS's flat search uses one thread per query; for a few queries a two-thread
            # torch mat-vec over FAISS's own float32 vectors is about 2x faster (memory-bound)
            # and exact.
            vectors, slots = self.coarse.flat_rows()
            sims = (torch.from_numpy(qc) @ torch.from_numpy(vectors).T).numpy()  # (nq, n)
            ok = allowed[slots]
            cand = np.empty((nq, pool), dtype=np.int64)
            for i in range(nq):
                cand[i] = slots[stable_topk(np.where(ok, sims[i], -np.inf), slots, pool)]
            return cand, np.ones(cand.shape, dtype=bool)
        need_selector = filtered or self.coarse.stale > 0
        _, cand = self.coarse.search(qc, pool, allowed if need_selector else None)
        valid = cand >= 0
        return np.where(valid, cand, allowed_rows[0]), valid

    def _residual_scores(
        self, queries: torch.Tensor, rows: np.ndarray, budget: Budget
    ) -> np.ndarray:
        """MaxSim on residual-coded rows, decoded one candidate at a time (never the whole
        candidate set): :func:`~metaembed_rag.scoring.residual.maxsim_residual_ids`."""
        codebook = self.rows.codec.codebook
        assert codebook is not None and codebook.centroids is not None
        assert self.rows.side is not None
        out = maxsim_residual_ids(
            queries, self.rows.side[1].array, self.rows.vectors.array, codebook.centroids,
            codebook.byte_table(), rows, budget.r_q, budget.r_c,
            backend=_coded_backend(), normalize=codebook.unit_norm,
        )  # fmt: skip
        return out.numpy()

    def _tiered_scores(self, queries: torch.Tensor, rows: np.ndarray, budget: Budget) -> np.ndarray:
        """MaxSim on tiered rows, decoded vector by vector inside the kernel:
        :func:`~metaembed_rag.scoring.tiered.maxsim_tiered_ids`."""
        book = self.rows.codec.tiered
        assert book is not None and self.rows.side is not None
        return maxsim_tiered_ids(
            queries, self.rows.vectors.array, self.rows.side[1].array, self.rows.coarse.array,
            book.tables(), rows, budget.r_q, budget.r_c,
            backend="kernel" if tiered_kernel_available() else "torch",
        ).numpy()  # fmt: skip

    def score(self, queries: torch.Tensor, rows: np.ndarray, budget: Budget) -> np.ndarray:
        """Exact MaxSim on the stored rows in place (no copy) when the dtype allows; coded
        rows (int8, residual, tiered) are decoded candidate by candidate inside a kernel."""
        if rows.shape[1] == 0:
            return np.zeros(rows.shape, dtype=np.float32)
        self.rows.check_r_c(budget.r_c)
        if self.rows.codec.codebook is not None:
            return self._residual_scores(queries, rows, budget)
        if self.rows.codec.tiered is not None:
            return self._tiered_scores(queries, rows, budget)
        view = self.rows.codec.torch_view(self.rows.vectors.array)
        if view is None:  # int8: dequantised candidate by candidate inside the kernel
            assert self.rows.side is not None
            return maxsim_int8_ids(
                queries, self.rows.vectors.array, self.rows.side[1].array, rows,
                budget.r_q, budget.r_c, backend=_coded_backend(),
            ).numpy()  # fmt: skip
        out = maxsim_ids(
            queries, view, torch.from_numpy(rows), budget.as_tuple(), backend=scoring_backend()
        )
        return out.numpy()

    def scan(
        self, queries: torch.Tensor, budget: Budget, allowed: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Contiguous row ranges scored in place (no copy) when the dtype allows, and coded rows
        (int8, residual) through :meth:`score`, as a rerank scores them (the same scores however
        a row was reached); rows not ``allowed`` score ``-inf``."""
        self.rows.check_r_c(budget.r_c)
        view = self.rows.codec.torch_view(self.rows.vectors.array)
        n = self.rows.count
        for start in range(0, n, SCAN_CHUNK):
            end = min(n, start + SCAN_CHUNK)
            ok = allowed[start:end]
            if not ok.any():
                continue
            if view is None:
                ids = np.broadcast_to(np.arange(start, end), (queries.shape[0], end - start))
                scores = self.score(queries, ids, budget)
            else:
                docs = view[start:end]
                scores = maxsim(queries, docs, budget.as_tuple(), backend=scoring_backend()).numpy()
            yield np.arange(start, end, dtype=np.int64), np.where(ok[None, :], scores, -np.inf)

    # ------------------------------------------------------------------ persistence
    def save(self, target: Path, header: dict[str, Any]) -> Path:
        """Rows, documents and FAISS under fresh names (or appended in place), then the
        manifest (``header`` + counts + file checksums) last."""
        target.mkdir(parents=True, exist_ok=True)
        tag = new_tag()
        files = {**header.get("files", {}), **self.rows.save(target, tag)}
        files["docs"] = self.table.write(target / f"docs-{tag}.jsonl")
        if self.coarse.saved:
            files["faiss"] = write_faiss(self.coarse, target / f"faiss-{tag}.faiss")
        counts = {
            "rows": self.rows.count,
            "documents": len(self),
            "deleted": self.rows.count - len(self),
        }
        manifest = {
            **header,
            "coarse_index": self.coarse.settings(),
            "counts": counts,
            "files": files,
        }
        own = {
            s.path.name
            for _, s in self.rows.stores()
            if s.path is not None and s.path.parent.resolve() == target.resolve()
        }
        return finish_save(target, manifest, own)

    @classmethod
    def load(
        cls,
        folder: Path,
        manifest: dict[str, Any],
        empty: LocalBackend,
        mmap: bool,
        verify: bool,
    ) -> LocalBackend:
        """Open the parts a manifest names, with the settings of ``empty`` (a new in-RAM
        backend built from the manifest's header).

        Raises:
            IndexCorruptedError: missing or truncated files, checksum mismatch.
        """
        files = check_files(folder, manifest, verify)
        rows = RowSet.load(folder, files, empty.rows, mmap)
        table = DocumentTable.read(folder / files["docs"]["name"], rows.count)
        coarse = manifest["coarse_index"]
        backend = cls(rows, empty.coarse, table, empty.exact_subset_max)
        if "faiss" not in files:  # the manifest check allows this only for a flat index
            backend._rebuild("flat")
            return backend
        backend.coarse.read(
            str(folder / files["faiss"]["name"]), coarse["kind"], coarse.get("stale", 0)
        )
        if backend.coarse.ids_shift_on_remove and not table.alive.all():
            logger.warning(
                "%s: rebuilding its IVF coarse index, whose ids were shifted by deletions "
                "(format version 1); save the index to keep the rebuilt one",
                folder,
            )
            backend._rebuild("ivf")
        return backend
