"""``MultiVectorIndex``: documents stored once at full size, FAISS coarse recall, exact MaxSim.

Layout (one directory per saved index)::

    manifest.json              format version, model fingerprint, dims, budgets, dtype, counts,
                               sha256 checksums of every file (written last: the commit point)
    vectors-<tag>.bin          (N, K, D) raw rows in the stored dtype (bf16 as uint16 bits;
                               packed codes for the residual and tiered kinds)
    scales-<tag>.bin           (N, K) per-vector scales (int8: float32; tiered: float16 gains)
    codes-<tag>.bin            (N, K) uint16 centroid ids (residual kinds)
    codebook-<tag>.safetensors the residual or tiered codebook
    coarse-<tag>.bin           (N, D) float16 coarse vectors (one per document; float32 in
                               indexes saved before format version 2)
    docs-<tag>.jsonl           one line per row: {"id", "text", "metadata"} or null (deleted)
    faiss-<tag>.faiss          the coarse FAISS index (faiss.write_index; HNSW and IVF only:
                               a flat one is rebuilt from the coarse rows on load)
    lexical-<tag>.safetensors  the BM25 sidecar for hybrid search (:mod:`.lexical`)

Rows ("slots") are append-only: ``upsert`` writes a new row and tombstones the old one, ``delete``
only tombstones. ``compact()`` (also run by ``save`` when at least ``compact_ratio`` of the rows
are deleted) rewrites the live rows into new files. See ``docs/index-and-search.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch

from ..budget import DEFAULT_BUDGETS, Budget, BudgetLike
from ..scorers import MaxSimScorer, Scorer
from .backend import SearchPlan, StorageBackend
from .coarse import CoarseIndex
from .filters import Filter
from .hits import Hit, stable_topk
from .hybrid import hybrid_rows
from .lexical import LexicalIndex
from .local import LocalBackend
from .lock import DEFAULT_LOCK_TIMEOUT, IndexStaleError, WriterLock
from .manifest import disk_generation
from .params import SearchOptions, SearchParams
from .persist import MANIFEST, IndexMismatchError
from .rowset import CoarseVector, RowSet
from .save_load import LOAD_ATTEMPTS, load_index, save_index
from .storage import VectorCodec
from .validate import check_batch, prepare_queries

__all__ = ["LOAD_ATTEMPTS", "MultiVectorIndex"]

logger = logging.getLogger(__name__)


class MultiVectorIndex:
    """A multi-vector document index with two-stage (coarse + exact MaxSim) search.

    Args:
        dim: vector width D.
        num_vectors: vectors stored per document K (64 for MetaEmbed candidates).
        budgets: the budgets searches may use (default: MetaEmbed's groups that fit K).
        dtype: the storage kind, ``"bfloat16"`` (default), ``"float16"``, ``"float32"``,
            ``"int8"`` (per-vector scale), or a compressed residual kind ``"residual1"``,
            ``"residual2"``, ``"residual4"`` (a k-means centroid id + 1/2/4 bits per
            dimension, codebook trained on the first batch added and kept afterwards;
            decoded to unit length when that batch's vectors have unit length, and then
            later batches must too: :mod:`metaembed_rag.index.residual`), or ``"tiered"``
            (tiered gain-shape transform coding, 3,971 bytes per document at 64 x 384, the
            coarse vector made from its stored centre: :mod:`metaembed_rag.index.tiered`);
            ``docs/storage.md`` compares them.
        storage: the same as ``dtype`` (give one of the two).
        stored_vectors: index-time truncation: keep only the first ``stored_vectors`` of the
            ``num_vectors`` per document (``None``: all); searches with a larger ``r_c`` are
            refused with an error that says so.
        num_centroids: residual kinds: k-means centroids (``None``: PLAID's rule on the
            training sample, at most 1024).
        coarse_vector: ``"first"`` (default: the (1,1) embedding, the query's first vector)
            or ``"mean"`` (the mean of the K vectors, renormalised; the query side uses the
            renormalised mean of its vectors). The default is the one that keeps two-stage
            search at the exhaustive figure with the packaged model: nDCG@10 at fetch_k=100 on
            SciFact 0.5825 (first) vs 0.4616 (mean) at (1,1), 0.5628 vs 0.4539 at (16,64),
            exhaustive 0.5825 / 0.5586; on CACM 0.4366 vs 0.3735 and 0.4172 vs 0.3567
            (``benchmarks/coarse_vector.py``). A model whose (1,1) vector was not trained as
            an embedding of its own may need ``"mean"``: re-measure with that script.
        coarse_index: ``"auto"`` (flat, HNSW from 200k docs), ``"flat"``, ``"hnsw"``, ``"ivf"``.
        path: a directory to keep the rows in (memory-mapped files, not bounded by RAM);
            ``None`` keeps them in RAM until :meth:`save`.
        fingerprint: the encoder's ``MetaEmbedModel.fingerprint()``; loads and
            :class:`~metaembed_rag.retriever.TwoStageRetriever` refuse other models.
        use_gpu: search the coarse index with faiss-gpu when present.
        exact_subset_max: filtered searches whose matching set is at most this large use an
            exact coarse scan over the matching rows instead of FAISS with a selector.
        recall_pool_factor: with ``recall_budget != (1,1)``, the coarse stage fetches
            ``recall_pool_factor * fetch_k`` rows, rescored exactly at ``recall_budget``.
        compact_ratio: ``save`` compacts first when this fraction of rows is deleted.
        hnsw_m: FAISS HNSW graph degree (see :class:`~metaembed_rag.index.coarse.CoarseIndex`).
        ef_construction: HNSW build beam.
        ef_search: HNSW search beam.
        ivf_nlist: IVF list count.
        nprobe: IVF lists probed per search.
        backend: the storage to search (a :class:`~metaembed_rag.index.backend.StorageBackend`
            of the same ``dim`` and ``num_vectors``); default: a new
            :class:`~metaembed_rag.index.local.LocalBackend` built from ``path``, ``dtype`` and
            the coarse-index options above (ignored when a backend is given).
        lexical: keep the BM25 sidecar (:mod:`metaembed_rag.index.lexical`) up to date on
            every add and delete and save it with the index, for ``hybrid`` searches. An
            index saved without one builds it from its stored texts at the first hybrid
            search. ``False``: no sidecar, hybrid searches refused.
        lock_timeout: seconds a change waits for another writer of the same folder before
            :class:`~metaembed_rag.index.lock.IndexLockedError` (see :mod:`.lock`).
    """

    def __init__(
        self,
        dim: int,
        *,
        num_vectors: int = 64,
        budgets: Iterable[BudgetLike] | None = None,
        dtype: str | None = None,
        storage: str | None = None,
        stored_vectors: int | None = None,
        num_centroids: int | None = None,
        coarse_vector: CoarseVector = "first",
        coarse_index: str = "auto",
        path: str | os.PathLike[str] | None = None,
        fingerprint: str | None = None,
        use_gpu: bool = False,
        exact_subset_max: int = 20_000,
        recall_pool_factor: int = 4,
        compact_ratio: float = 0.3,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        ivf_nlist: int | None = None,
        nprobe: int = 32,
        backend: StorageBackend | None = None,
        lexical: bool = True,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        #: The manifest generation this object's state derives from (0: never saved).
        self._generation = 0
        self.lock_timeout = float(lock_timeout)
        self._lock: WriterLock | None = None
        if dim < 1 or num_vectors < 1:
            raise ValueError(f"dim and num_vectors must be >= 1, got {dim} and {num_vectors}.")
        if coarse_vector not in ("first", "mean"):
            raise ValueError(f"coarse_vector must be 'first' or 'mean', got {coarse_vector!r}.")
        if storage is not None and dtype is not None and storage != dtype:
            raise ValueError(
                f"dtype={dtype!r} and storage={storage!r} disagree; pass only storage=."
            )
        dtype = dtype or storage
        if dtype is None:
            dtype = "float16" if use_gpu and torch.cuda.is_available() else "bfloat16"
        self.dim = int(dim)
        self.num_vectors = int(num_vectors)
        if stored_vectors is not None and not 1 <= stored_vectors <= self.num_vectors:
            raise ValueError(
                f"stored_vectors must be in 1..{self.num_vectors}, got {stored_vectors}."
            )
        #: Vectors kept per document (index-time truncation; ``num_vectors`` when none).
        self.stored_vectors = self.num_vectors if stored_vectors is None else int(stored_vectors)
        self.codec = VectorCodec(dtype, self.dim, num_centroids, self.stored_vectors)
        if budgets is None:
            budgets = [b for b in DEFAULT_BUDGETS if b.r_c <= self.num_vectors]
        self.budgets: list[Budget] = sorted({Budget.parse(b) for b in budgets})
        for b in self.budgets:
            if b.r_c > self.num_vectors:
                raise ValueError(
                    f"Budget {b} needs {b.r_c} vectors but documents have {num_vectors}."
                )
        self.coarse_vector: CoarseVector = coarse_vector
        self.fingerprint = fingerprint
        self.recall_pool_factor = int(recall_pool_factor)
        self.compact_ratio = float(compact_ratio)
        #: Filtered searches matching at most this many documents scan them exactly.
        self.exact_subset_max = int(exact_subset_max)
        #: Whether the BM25 sidecar is kept (see ``lexical`` above).
        self.lexical_enabled = bool(lexical)
        self._lexical: LexicalIndex | None = LexicalIndex() if lexical else None
        self._lexical_rows: tuple[tuple[int, ...], np.ndarray] | None = None
        if backend is not None:
            if (backend.dim, backend.num_vectors) != (self.dim, self.num_vectors):
                raise ValueError(
                    f"The backend stores ({backend.num_vectors}, {backend.dim}) vectors per "
                    f"document but the index was asked for ({self.num_vectors}, {self.dim}): "
                    "pass the backend's dim and num_vectors."
                )
            #: The storage under the two-stage search (see :mod:`metaembed_rag.index.backend`).
            self.backend: StorageBackend = backend
            return
        folder = None
        if path is not None:
            folder = Path(path)
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = WriterLock(folder, self.lock_timeout)
            self._lock.acquire()  # a new index in a folder is a writer from the start
            if (folder / MANIFEST).exists():
                self._lock.release()
                raise FileExistsError(
                    f"{folder} already holds an index; open it with "
                    "MultiVectorIndex.load(path) or choose an empty directory."
                )
        coarse = CoarseIndex(
            self.dim, coarse_index, hnsw_m=hnsw_m, ef_construction=ef_construction,
            ef_search=ef_search, ivf_nlist=ivf_nlist, nprobe=nprobe, use_gpu=use_gpu,
        )  # fmt: skip
        rows = RowSet(
            self.num_vectors, self.dim, self.codec, coarse_vector, folder,
            stored_vectors=self.stored_vectors,
        )  # fmt: skip
        self.backend = LocalBackend(rows, coarse, exact_subset_max=exact_subset_max)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_model(cls, model: Any, **kwargs: Any) -> MultiVectorIndex:
        """An empty index matching a :class:`~metaembed_rag.MetaEmbedModel` (dim, K, budgets,
        fingerprint). ``kwargs`` go to the constructor."""
        return cls(
            model.dim,
            num_vectors=model.config.num_candidate_tokens,
            budgets=model.budgets,
            fingerprint=model.fingerprint(),
            **kwargs,
        )

    def check_compatible(
        self, model: Any = None, *, fingerprint: str | None = None, dim: int | None = None
    ) -> None:
        """The one model/index compatibility check: ``model`` (a ``MetaEmbedModel``), or an
        expected ``fingerprint`` / ``dim``, must be what the index was built with.

        An empty index that records no fingerprint adopts the model's.

        Raises:
            IndexMismatchError: another model fingerprint, vector width or vectors per
                document; or a non-empty index that records no fingerprint (its vectors cannot
                be checked). The message says what to do.
        """
        where = "" if self.path is None else f" at {self.path}"
        num_vectors = None
        if model is not None:
            fingerprint = fingerprint or model.fingerprint()
            dim = dim or model.dim
            num_vectors = getattr(getattr(model, "config", None), "num_candidate_tokens", None)
        if fingerprint is not None and self.fingerprint is None:
            if self.num_rows:
                raise IndexMismatchError(
                    f"The index{where} records no model fingerprint, so its vectors cannot be "
                    f"checked against this model ({fingerprint}); build it with "
                    "MultiVectorIndex.for_model(model) or pass fingerprint=model.fingerprint()."
                )
            self.fingerprint = fingerprint
        for what, stored, expected in (
            ("model fingerprint", self.fingerprint, fingerprint),
            ("dim", self.dim, dim),
            ("vectors per document", self.num_vectors, num_vectors),
        ):
            if expected is not None and stored != expected:
                raise IndexMismatchError(
                    f"The index{where} was built with {what} {stored!r}, but {expected!r} was "
                    "requested (the model's): load the model the index was built with, or "
                    "rebuild the index with this model."
                )

    @property
    def path(self) -> Path | None:
        """The directory the rows live in (``None``: RAM until :meth:`save`)."""
        return self.backend.path

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        """Number of live (not deleted) documents."""
        return len(self.backend)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and bool(self.backend.rows_of([doc_id])[0] >= 0)

    @property
    def num_rows(self) -> int:
        """Rows in storage, deleted ones included (until :meth:`compact`)."""
        return self.backend.num_rows

    @property
    def num_deleted(self) -> int:
        return self.num_rows - len(self)

    @property
    def coarse_kind(self) -> str:
        """The coarse stage in use now (local FAISS: ``flat``, ``hnsw`` or ``ivf``)."""
        return self.backend.describe()["coarse_kind"]

    @property
    def bytes_per_document(self) -> int:
        """Stored bytes per document: vectors (+ int8 scales) + coarse vector."""
        return self.backend.describe()["bytes_per_document"]

    @property
    def dtype(self) -> str:
        """Stored dtype name."""
        return self.codec.name

    @property
    def ids(self) -> list[str]:
        """Live document ids in row order."""
        return self.ids_where(None)

    def ids_where(self, filter: Filter | None) -> list[str]:
        """Live document ids (row order) whose metadata matches ``filter`` (see
        :mod:`metaembed_rag.index.filters`; ``None`` matches every document). Reads metadata
        only, no vectors: used to delete or list documents by metadata."""
        rows = np.flatnonzero(self.backend.allowed(filter))
        return [r.id for r in self.backend.records(rows)]

    def get(self, doc_id: str) -> dict[str, Any]:
        """``{"id", "text", "metadata", "vectors"}`` of one document (vectors float32
        ``(stored_vectors, D)``: all K unless the index truncates; decoded for compressed kinds).

        Raises:
            KeyError: the id is not in the index.
        """
        rows = self.backend.rows_of([doc_id])
        if rows[0] < 0:
            raise KeyError(f"Document id {doc_id!r} is not in the index.")
        record = self.backend.records(rows)[0]
        return {
            "id": doc_id,
            "text": record.text,
            "metadata": record.metadata,
            "vectors": self.backend.fetch(rows)[0],
        }

    def __repr__(self) -> str:
        return (
            f"MultiVectorIndex(docs={len(self)}, dim={self.dim}, num_vectors={self.num_vectors}, "
            f"dtype={self.dtype}, coarse={self.coarse_vector}/{self.coarse_kind}, "
            f"path={str(self.path) if self.path else None})"
        )

    # ------------------------------------------------------------------ writing
    def add(
        self,
        ids: Sequence[str],
        vectors: torch.Tensor | np.ndarray,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """Add new documents.

        Args:
            ids: unique string ids, none already in the index unless ``replace``.
            vectors: ``(n, K, D)`` float vectors (``MetaEmbedModel.encode_documents`` output).
            texts: optional texts, stored and returned with hits.
            metadatas: optional JSON-serialisable dicts, used by filters.
            replace: replace documents whose id exists (what :meth:`upsert` does).

        Raises:
            ValueError: wrong shape/dim, non-finite values, duplicate ids in the call, or (not
                ``replace``) ids already in the index.
        """
        batch = check_batch(self.num_vectors, self.dim, ids, vectors, texts, metadatas)
        self._begin_write()
        existing = [
            i for i, r in zip(batch.ids, self.backend.rows_of(batch.ids), strict=True) if r >= 0
        ]
        if existing and not replace:
            raise ValueError(
                f"{len(existing)} id(s) already in the index, e.g. {existing[:5]}; use "
                "upsert() to replace documents."
            )
        self.delete(existing)
        self.backend.add(batch)
        if self._lexical is not None:
            self._lexical.add(batch.ids, batch.texts)

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        """Add documents, replacing any with the same id (arguments as in :meth:`add`)."""
        self.add(*args, replace=True, **kwargs)

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Delete documents by id (tombstones; rows are reclaimed by :meth:`compact`).

        Returns:
            the number of documents deleted.

        Raises:
            KeyError: an id is not in the index (unless ``missing_ok=True``); nothing is
                deleted in that case.
        """
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        missing = [i for i, r in zip(ids, self.backend.rows_of(ids), strict=True) if r < 0]
        if missing and not missing_ok:
            raise KeyError(
                f"{len(missing)} id(s) not in the index, e.g. {missing[:5]}; nothing was deleted "
                "(pass missing_ok=True to ignore unknown ids)."
            )
        gone = set(missing)
        self._begin_write()
        present = [i for i in ids if i not in gone]
        if self._lexical is not None:
            self._lexical.delete(present)
        return self.backend.delete(present)

    def rebuild_coarse(self, kind: str | None = None) -> None:
        """Rebuild the coarse FAISS index, optionally switching its kind for good.

        Args:
            kind: ``"auto"``, ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``None`` (keep the setting).
                Useful after a streaming build done with ``coarse_index="flat"`` (cheap adds):
                ``rebuild_coarse("ivf")`` then trains IVF once on the whole collection.
        """
        self._begin_write()
        self.backend.rebuild_coarse(kind)

    def reserve(self, num_docs: int) -> None:
        """Pre-size storage for ``num_docs`` rows (avoids repeated growth on big builds)."""
        self._begin_write()
        self.backend.reserve(num_docs)

    def compact(self) -> None:
        """Rewrite the live rows contiguously (new files on disk) and rebuild the coarse index.

        Files named by an already saved manifest are left in place until the next
        :meth:`save`, so the saved index stays loadable.
        """
        self._begin_write()
        self.backend.compact()

    # ------------------------------------------------------------------ the writer lock
    def _begin_write(self) -> None:
        """Before the first change to a folder-backed index: take the folder's writer lock
        (held until :meth:`save` commits or :meth:`close`) and check that no other writer
        committed since this object loaded or last saved.

        Raises:
            IndexLockedError: another writer holds the lock past ``lock_timeout``.
            IndexStaleError: another writer committed in between; load the index again.
        """
        folder = self.path
        if folder is None:
            return
        if self._lock is None:
            self._lock = WriterLock(folder, self.lock_timeout)
        if self._lock.held:
            return
        self._lock.acquire()
        disk = disk_generation(folder)
        if disk != self._generation:
            self._lock.release()
            raise IndexStaleError(
                f"The index at {folder} was saved by another writer (generation {disk}) since "
                f"this object loaded generation {self._generation}; changing it now would "
                "overwrite that commit. Load it again (MultiVectorIndex.load) and redo the change."
            )

    # ------------------------------------------------------------------ search
    def _select(
        self, scores: np.ndarray, cand: np.ndarray, valid: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = cand.shape[0]
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_r = np.full((nq, k), -1, dtype=np.int64)
        for i in range(nq):
            s = np.where(valid[i], scores[i], -np.inf)
            pos = stable_topk(s, cand[i], k)
            out_s[i, : pos.size] = s[pos]
            out_r[i, : pos.size] = cand[i, pos]
        return out_s, out_r

    def search_rows(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int | None = None,
        *,
        params: SearchParams | None = None,
        texts: Sequence[str] | None = None,
        **options: Unpack[SearchOptions],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns arrays: ``(scores (nq, k) float32, rows (nq, k)
        int64)``, padded with ``-inf`` / ``-1`` when fewer than ``k`` documents match (``k`` is
        clamped to the number of documents). Map rows to ids with :meth:`ids_of`."""
        p = SearchParams.of(k, params, **options)
        q = prepare_queries(queries, self.dim)
        recall, rerank = p.check_budgets(self.searchable_budgets(p), q.shape[1])
        if len(self) == 0:
            raise ValueError(
                "The index is empty: add documents (index.add or retriever.add_documents) "
                "before searching."
            )
        # k and fetch_k are clamped to the documents stored (a huge k must not allocate huge
        # arrays); results are padded only up to that many
        k, fetch_k, filter = min(p.k, len(self)), min(p.fetch_k, self.num_rows), p.filter
        scorer = p.scorer or MaxSimScorer()
        scorer.check_compatible(self.fingerprint, self.dim)
        if p.hybrid is not None:
            if texts is None:
                raise ValueError(
                    f"hybrid={p.hybrid!r} needs the query texts for BM25: pass texts=[...] "
                    "(one per query vector), or search through TwoStageRetriever.search."
                )
            return hybrid_rows(self, q, list(texts), p, self.backend.allowed(filter))
        fetch = max(fetch_k, k)
        cascade = recall != Budget(1, 1)
        pool = min(fetch * self.recall_pool_factor, self.num_rows) if cascade else fetch
        plan = SearchPlan(k, fetch, pool, recall, rerank, filter, p.mode == "exhaustive")
        # a backend's own search (Qdrant) scores MaxSim: other scorers rerank here
        native = self.backend.native_search(q, plan) if p.scorer is None else None
        if native is not None:
            return native
        allowed = self.backend.allowed(filter)
        if p.mode == "exhaustive":
            return self._exhaustive(q, k, rerank, allowed, scorer)
        cand, valid = self.backend.candidates(q, pool, allowed, filter is not None)
        if cascade and cand.shape[1] > fetch:
            scores = self.backend.score(q, cand, recall)
            _, cand = self._select(scores, cand, valid, fetch)
            valid = cand >= 0
            cand = np.where(valid, cand, int(np.argmax(allowed)))  # any allowed row as filler
        scores = scorer.rerank(self.backend, q, cand, rerank)
        return self._select(scores, cand, valid, k)

    def searchable_budgets(self, p: SearchParams) -> list[Budget]:
        """The budgets a search with ``p`` may use: the index's budgets whose ``r_c`` is within
        the stored vectors (all of them without index-time truncation).

        Raises:
            ValueError: ``p`` asks for a budget whose ``r_c`` exceeds the stored vectors
                (index-time truncation).
        """
        keep = self.stored_vectors
        for what, b in (("rerank_budget", p.rerank_budget), ("recall_budget", p.recall_budget)):
            if b is not None and keep < Budget.parse(b).r_c <= self.num_vectors:
                raise ValueError(
                    f"{what} {Budget.parse(b)} needs {Budget.parse(b).r_c} vectors per "
                    f"document, but this index stores only the first {keep} (index-time "
                    f"truncation, chosen when it was built): use a budget with r_c <= {keep}, "
                    "or rebuild the index without stored_vectors."
                )
        return [b for b in self.budgets if b.r_c <= keep]

    def _exhaustive(
        self, q: torch.Tensor, k: int, budget: Budget, allowed: np.ndarray, scorer: Scorer
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = q.shape[0]
        best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_r = np.zeros((nq, 0), dtype=np.int64)
        for rows, scores in scorer.scan(self.backend, q, budget, allowed):
            cat_s = np.concatenate([best_s, scores], axis=1)
            cat_r = np.concatenate([best_r, np.broadcast_to(rows, (nq, rows.size))], axis=1)
            best_s, best_r = self._select(cat_s, cat_r, np.isfinite(cat_s), k)
        if best_s.shape[1] < k:
            pad = k - best_s.shape[1]
            best_s = np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_r = np.pad(best_r, ((0, 0), (0, pad)), constant_values=-1)
        return best_s, best_r

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 sidecar, built from the stored texts first if the index was saved
        without one.

        Raises:
            ValueError: the index was built with ``lexical=False``.
        """
        if self._lexical is None:
            if not self.lexical_enabled:
                raise ValueError(
                    "This index keeps no BM25 sidecar (built with lexical=False), so it cannot "
                    "run hybrid searches: rebuild it with lexical=True."
                )
            self._lexical = LexicalIndex.from_records(
                self.backend.records(np.flatnonzero(self.backend.allowed(None)))
            )
        return self._lexical

    def lexical_scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every document for each query text, and the row of each column:
        ``((nq, n) float32, (n,) int64)`` (see :class:`~.lexical.LexicalIndex`)."""
        lex = self.lexical
        key = (lex.version, self.num_rows, len(self), id(self.backend))
        if self._lexical_rows is None or self._lexical_rows[0] != key:
            self._lexical_rows = (key, self.backend.rows_of(lex.ids))
        return lex.scores(texts), self._lexical_rows[1]

    def ids_of(self, rows: np.ndarray) -> list[list[str]]:
        """Map ``(nq, k)`` rows from :meth:`search_rows` to ids (``-1`` entries dropped)."""
        out = []
        for row in np.asarray(rows):
            out.append([r.id for r in self.backend.records(row[row >= 0])])
        return out

    def search(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int | None = None,
        *,
        params: SearchParams | None = None,
        texts: Sequence[str] | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[list[Hit]]:
        """Two-stage search: coarse recall of ``fetch_k`` rows, exact MaxSim rerank to ``k``.

        The options are those of :class:`~metaembed_rag.index.params.SearchParams`, given as
        ``params=`` or as keywords (``**options``, which override ``params``):

        * ``fetch_k``: coarse candidates per query (raised to ``k`` if smaller). When
          ``fetch_k`` (times ``recall_pool_factor`` for a cascade) covers every matching
          document, all of them are reranked, so the result equals ``mode="exhaustive"``.
        * ``recall_budget``: ``(1,1)`` = the coarse vector alone (FAISS). Any other trained
          budget runs a cascade: FAISS fetches ``recall_pool_factor * fetch_k`` rows, they are
          scored exactly at ``recall_budget`` and the best ``fetch_k`` are reranked.
        * ``rerank_budget``: budget of the final exact MaxSim (default: the largest, (16,64)).
        * ``filter``: metadata filter (see :mod:`metaembed_rag.index.filters`), applied inside
          the coarse stage: only matching documents are candidates.
        * ``mode``: ``"two_stage"`` or ``"exhaustive"`` (exact MaxSim at ``rerank_budget`` over
          every matching document, chunked; for evaluation and small corpora).
        * ``hybrid``: ``"rrf"`` or ``"weighted"`` fuses the result with BM25 over the query
          ``texts`` (:mod:`metaembed_rag.index.hybrid`); ``hybrid_weight`` is the
          multi-vector share of the weighted fusion. Hits then carry the fused score.
        * ``scorer``: the exact stage's scorer (default MaxSim; ``"pooled"``, a saved learned
          scorer or a :class:`~metaembed_rag.scorers.Scorer`, see ``docs/scorers.md``); a
          learned scorer trained for another model raises ``ScorerMismatchError``.

        Args:
            queries: ``(nq, Kq, D)`` float query vectors (or one ``(Kq, D)`` query).
            k: hits per query (default 10, or ``params.k``).
            params: the search options as one value.
            texts: the queries as text, one per query (needed by ``hybrid`` only).
            options: the search options as keywords (see above).

        Returns:
            one list of :class:`Hit` per query, best first; ties in score are broken by row
            order (earlier-added first).

        Raises:
            ValueError: empty index, a budget the index was not built for (the message lists
                the valid ones), wrong query shape, a malformed filter.
        """
        scores, rows = self.search_rows(queries, k, params=params, texts=texts, **options)
        out: list[list[Hit]] = []
        for srow, rrow in zip(scores, rows, strict=True):
            found = rrow >= 0  # padding (-1) only at the end
            records = self.backend.records(rrow[found])
            out.append(
                [
                    Hit(rec.id, float(s), rec.text, rec.metadata, rank)
                    for rank, (rec, s) in enumerate(zip(records, srow[found].tolist(), strict=True))
                ]
            )
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save atomically to ``path`` (default: the index's own directory).

        Files are written under temporary names and renamed; ``manifest.json`` goes last, so a
        crash at any point leaves the previously saved index (if any) loadable. Saving into
        the index's own directory writes only what changed (rows are append-only). A save
        compacts first when at least ``compact_ratio`` of the rows are deleted.

        Returns:
            the directory written.
        """
        return save_index(self, Path(path) if path is not None else None)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mmap: bool = True,
        verify: bool = True,
        model: Any = None,
        fingerprint: str | None = None,
        dim: int | None = None,
        dtype: str | None = None,
        use_gpu: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> MultiVectorIndex:
        """Open a saved index: one consistent generation. The files are opened under the
        folder's shared reader lock (:mod:`.readers`), so a concurrent save deletes none of
        them meanwhile; without that lock (Windows, or a folder last saved by an older
        version) a failed open is retried on the new manifest when a save replaced it, up to
        :data:`~metaembed_rag.index.save_load.LOAD_ATTEMPTS` times. Opening never creates or
        changes a file in ``path``; the first change takes its writer lock.

        Args:
            path: the directory given to :meth:`save`.
            mmap: memory-map the vector files (default; the index then keeps working in
                ``path`` and later ``add`` calls append to its files). ``False`` reads everything
                into RAM and detaches the index from ``path``.
            verify: check the sha256 of every file (reads every byte once; for very large
                indexes pass ``False`` to check only that files exist with the right sizes).
            model: a ``MetaEmbedModel``; its fingerprint and dim must match the index.
            fingerprint: expected model fingerprint, checked like ``model``.
            dim: expected vector width.
            dtype: expected storage dtype.
            use_gpu: search the coarse index on a GPU when faiss-gpu is present.
            lock_timeout: see the constructor.

        Raises:
            FileNotFoundError: no manifest at ``path``.
            IndexCorruptedError: missing or truncated files, checksum mismatch.
            IndexMismatchError: another model fingerprint, dim or stored dtype.
        """
        return load_index(
            cls, Path(path), mmap=mmap, verify=verify, model=model, fingerprint=fingerprint,
            dim=dim, dtype=dtype, use_gpu=use_gpu, lock_timeout=lock_timeout,
        )  # fmt: skip

    def close(self) -> None:
        """Release memory maps and the writer lock (the object is unusable afterwards)."""
        self.backend.close()
        if self._lock is not None:
            self._lock.release()
