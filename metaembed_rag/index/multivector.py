"""``MultiVectorIndex``: documents stored once at full size, FAISS coarse recall, exact MaxSim.

Layout (one directory per saved index)::

    manifest.json              format version, model fingerprint, dims, budgets, dtype, counts,
                               sha256 checksums of every file (written last: the commit point)
    vectors-<tag>.bin          (N, K, D) raw rows in the stored dtype (bf16 as uint16 bits)
    scales-<tag>.bin           (N, K) float32 per-vector scales (int8 storage only)
    coarse-<tag>.bin           (N, D) float32 coarse vectors (one per document)
    docs-<tag>.jsonl           one line per row: {"id", "text", "metadata"} or null (deleted)
    faiss-<tag>.faiss          the coarse FAISS index (faiss.write_index)

Rows ("slots") are append-only: ``upsert`` writes a new row and tombstones the old one, ``delete``
only tombstones. ``compact()`` (also run by ``save`` when at least ``compact_ratio`` of the rows
are deleted) rewrites the live rows into new files. See ``docs/index-and-search.md``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

import numpy as np
import torch

from ..budget import DEFAULT_BUDGETS, Budget, BudgetLike
from ..scoring import kernel_available, maxsim, maxsim_ids, maxsim_pairwise
from .coarse import CoarseIndex
from .filters import Filter, compile_filter, filter_mask
from .hits import Hit, stable_topk
from .params import SearchOptions, SearchParams
from .persist import IndexMismatchError
from .saving import load_index, manifest_files, new_tag, save_index
from .storage import RowStore, VectorCodec

__all__ = ["MultiVectorIndex"]

logger = logging.getLogger(__name__)

CoarseVector = Literal["first", "mean"]
_COPY_ROWS_BYTES = 64 * 1024 * 1024
_EXHAUSTIVE_CHUNK = 16384
#: Flat coarse searches with at most this many queries use a torch scan instead of FAISS.
_TORCH_FLAT_MAX_QUERIES = 8


def _as_float_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(x, dtype=np.float32)
    return arr



def _backend() -> Literal["kernel", "torch"]:
    """The scoring backend for rerank and exhaustive search: one code path for both, so a
    document gets bit-identical scores however it was reached (BLAS rounding depends on a row's
    position in the batch, which would break ties between duplicate documents differently)."""
    return "kernel" if kernel_available() else "torch"

class MultiVectorIndex:
    """A multi-vector document index with two-stage (coarse + exact MaxSim) search.

    Args:
        dim: vector width D.
        num_vectors: vectors stored per document K (64 for MetaEmbed candidates).
        budgets: the budgets searches may use (default: MetaEmbed's groups that fit K).
        dtype: stored dtype, ``"bfloat16"`` (default), ``"float16"``, ``"float32"`` or
            ``"int8"`` (per-vector scale).
        coarse_vector: ``"mean"`` (default: mean of the K vectors, renormalised; the query side
            uses the renormalised mean of its vectors) or ``"first"`` (the (1,1) embedding, the
            query's first vector). The default is the one that measured better on SciFact
            (top-10 overlap with exhaustive (16,64) search at fetch_k=200: 0.999 vs 0.291 with
            the packaged model); re-measure with ``benchmarks/two_stage.py --model``.
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
    """

    def __init__(
        self,
        dim: int,
        *,
        num_vectors: int = 64,
        budgets: Iterable[BudgetLike] | None = None,
        dtype: str | None = None,
        coarse_vector: CoarseVector = "mean",
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
    ) -> None:
        if dim < 1 or num_vectors < 1:
            raise ValueError(f"dim and num_vectors must be >= 1, got {dim} and {num_vectors}.")
        if coarse_vector not in ("first", "mean"):
            raise ValueError(f"coarse_vector must be 'first' or 'mean', got {coarse_vector!r}.")
        if dtype is None:
            dtype = "float16" if use_gpu and torch.cuda.is_available() else "bfloat16"
        self.codec = VectorCodec(dtype)
        self.dim = int(dim)
        self.num_vectors = int(num_vectors)
        if budgets is None:
            budgets = [b for b in DEFAULT_BUDGETS if b.r_c <= self.num_vectors]
        self.budgets: list[Budget] = sorted({Budget.parse(b) for b in budgets})
        for b in self.budgets:
            if b.r_c > self.num_vectors:
                raise ValueError(f"Budget {b} needs {b.r_c} vectors but documents have {num_vectors}.")
        self.coarse_vector: CoarseVector = coarse_vector
        self.fingerprint = fingerprint
        self.exact_subset_max = int(exact_subset_max)
        self.recall_pool_factor = int(recall_pool_factor)
        self.compact_ratio = float(compact_ratio)
        self._coarse = CoarseIndex(
            self.dim, coarse_index, hnsw_m=hnsw_m, ef_construction=ef_construction,
            ef_search=ef_search, ivf_nlist=ivf_nlist, nprobe=nprobe, use_gpu=use_gpu,
        )  # fmt: skip
        self.path: Path | None = None
        if path is not None:
            self.path = Path(path)
            self.path.mkdir(parents=True, exist_ok=True)
            if (self.path / "manifest.json").exists():
                raise FileExistsError(
                    f"{self.path} already holds an index; open it with "
                    "MultiVectorIndex.load(path) or choose an empty directory."
                )
        self._open_stores(new_tag(), 0, writable=True)
        self._ids: list[str | None] = []
        self._texts: list[str | None] = []
        self._metas: list[dict[str, Any] | None] = []
        self._alive = np.zeros(0, dtype=bool)
        self._slot_of: dict[str, int] = {}
        self._hash_cache: dict[str, list[dict[str, Any]]] = {}
        self._mask_cache: dict[str, np.ndarray] = {}

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
            num_vectors = model.config.num_candidate_tokens
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

    def _store_path(self, kind: str, tag: str) -> Path | None:
        return None if self.path is None else self.path / f"{kind}-{tag}.bin"

    def _open_stores(self, tag: str, count: int, writable: bool) -> None:
        k, d = self.num_vectors, self.dim
        self._vectors = RowStore((k, d), self.codec.np_dtype, self._store_path("vectors", tag), count, writable)
        self._scales = (
            RowStore((k,), np.dtype(np.float32), self._store_path("scales", tag), count, writable)
            if self.codec.has_scales
            else None
        )
        self._coarse_vecs = RowStore((d,), np.dtype(np.float32), self._store_path("coarse", tag), count, writable)

    def _stores(self) -> list[tuple[str, RowStore]]:
        out = [("vectors", self._vectors), ("coarse", self._coarse_vecs)]
        if self._scales is not None:
            out.append(("scales", self._scales))
        return out

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        """Number of live (not deleted) documents."""
        return len(self._slot_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot_of

    @property
    def dtype(self) -> str:
        """Stored dtype name."""
        return self.codec.name

    @property
    def num_rows(self) -> int:
        """Rows in storage, deleted ones included (until :meth:`compact`)."""
        return self._vectors.count

    @property
    def num_deleted(self) -> int:
        return self.num_rows - len(self)

    @property
    def coarse_kind(self) -> str:
        """The FAISS index kind in use now (``flat``, ``hnsw`` or ``ivf``)."""
        return self._coarse.kind

    @property
    def bytes_per_document(self) -> int:
        """Stored bytes per document: vectors (+ int8 scales) + coarse vector."""
        return sum(store.row_bytes for _, store in self._stores())

    @property
    def ids(self) -> list[str]:
        """Live document ids in row order."""
        return [i for i in self._ids if i is not None]

    def ids_where(self, filter: Filter | None) -> list[str]:
        """Live document ids (row order) whose metadata matches ``filter`` (see
        :mod:`metaembed_rag.index.filters`; ``None`` matches every document). Reads metadata
        only, no vectors: used to delete or list documents by metadata."""
        rows = np.flatnonzero(self._allowed(filter))
        return [self._ids[r] for r in rows.tolist()]  # type: ignore[misc]

    def get(self, doc_id: str) -> dict[str, Any]:
        """``{"id", "text", "metadata", "vectors"}`` of one document (vectors float32 (K, D))."""
        slot = self._slot(doc_id)
        return {
            "id": doc_id,
            "text": self._texts[slot],
            "metadata": dict(self._metas[slot] or {}),
            "vectors": self._decode_rows(np.array([slot]))[0],
        }

    def _slot(self, doc_id: str) -> int:
        try:
            return self._slot_of[doc_id]
        except KeyError:
            raise KeyError(f"Document id {doc_id!r} is not in the index.") from None

    def __repr__(self) -> str:
        return (
            f"MultiVectorIndex(docs={len(self)}, dim={self.dim}, num_vectors={self.num_vectors}, "
            f"dtype={self.dtype}, coarse={self.coarse_vector}/{self._coarse.kind}, "
            f"path={str(self.path) if self.path else None})"
        )

    # ------------------------------------------------------------------ writing
    def _check_batch(
        self,
        ids: Sequence[str],
        vectors: Any,
        texts: Sequence[str | None] | None,
        metadatas: Sequence[dict[str, Any] | None] | None,
    ) -> tuple[list[str], np.ndarray, list[str | None], list[dict[str, Any]]]:
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of strings, not one string; wrap it: [id].")
        ids = [str(i) if not isinstance(i, str) else i for i in ids]
        arr = _as_float_array(vectors)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (self.num_vectors, self.dim):
            raise ValueError(
                f"vectors must have shape (n, {self.num_vectors}, {self.dim}) for this index "
                f"(num_vectors={self.num_vectors}, dim={self.dim}); got {tuple(arr.shape)}. "
                "Encode documents with the model this index was built for."
            )
        if arr.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {arr.shape[0]} vector sets were given.")
        if not np.isfinite(arr).all():
            raise ValueError("vectors contain NaN or infinite values.")
        seen: set[str] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"Duplicate ids within one call: {sorted(set(dups))[:5]}.")
        n = len(ids)
        texts_l: list[str | None] = [None] * n if texts is None else list(texts)
        metas_l: list[Any] = [None] * n if metadatas is None else list(metadatas)
        if len(texts_l) != n or len(metas_l) != n:
            raise ValueError(
                f"{n} ids but {len(texts_l)} texts and {len(metas_l)} metadatas were given."
            )
        clean_metas: list[dict[str, Any]] = []
        for i, m in zip(ids, metas_l, strict=True):
            if m is None:
                m = {}
            if not isinstance(m, dict):
                raise TypeError(f"metadata of {i!r} must be a dict, got {type(m).__name__}.")
            try:
                json.dumps(m)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metadata of {i!r} is not JSON-serialisable: {exc}") from exc
            clean_metas.append(m)
        return ids, arr, texts_l, clean_metas

    def add(
        self,
        ids: Sequence[str],
        vectors: torch.Tensor | np.ndarray,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Add new documents.

        Args:
            ids: unique string ids, none already in the index (use :meth:`upsert` to replace).
            vectors: ``(n, K, D)`` float vectors (``MetaEmbedModel.encode_documents`` output).
            texts: optional texts, stored and returned with hits.
            metadatas: optional JSON-serialisable dicts, used by filters.

        Raises:
            ValueError: wrong shape/dim, non-finite values, duplicate or existing ids.
        """
        ids, arr, texts_l, metas = self._check_batch(ids, vectors, texts, metadatas)
        existing = [i for i in ids if i in self._slot_of]
        if existing:
            raise ValueError(
                f"{len(existing)} id(s) already in the index, e.g. {existing[:5]}; use "
                "upsert() to replace documents."
            )
        self._append(ids, arr, texts_l, metas)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: torch.Tensor | np.ndarray,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Add documents, replacing any with the same id (arguments as in :meth:`add`)."""
        ids, arr, texts_l, metas = self._check_batch(ids, vectors, texts, metadatas)
        self.delete([i for i in ids if i in self._slot_of])
        self._append(ids, arr, texts_l, metas)

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
        missing = [i for i in ids if i not in self._slot_of]
        if missing and not missing_ok:
            raise KeyError(
                f"{len(missing)} id(s) not in the index, e.g. {missing[:5]}; nothing was deleted "
                "(pass missing_ok=True to ignore unknown ids)."
            )
        slots = np.array([self._slot_of.pop(i) for i in ids if i not in missing], dtype=np.int64)
        for s in slots:
            self._ids[s] = None
            self._texts[s] = None
            self._metas[s] = None
        self._alive[slots] = False
        self._coarse.remove(slots)
        self._mask_cache.clear()
        return int(len(slots))

    def _coarse_of(self, arr: np.ndarray) -> np.ndarray:
        """Coarse vectors ``(n, D)`` float32 of float32 documents ``(n, K, D)``."""
        if self.coarse_vector == "first":
            return np.ascontiguousarray(arr[:, 0])
        mean = arr.mean(axis=1)
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norm, 1e-12)).astype(np.float32)

    def _append(
        self, ids: list[str], arr: np.ndarray, texts: list[str | None], metas: list[dict[str, Any]]
    ) -> None:
        n = len(ids)
        if n == 0:
            return
        stored, scales = self.codec.encode(arr)
        coarse = self._coarse_of(arr)
        start = self._vectors.append(stored)
        if self._scales is not None:
            assert scales is not None
            self._scales.append(scales)
        self._coarse_vecs.append(coarse)
        slots = np.arange(start, start + n, dtype=np.int64)
        self._ids.extend(ids)
        self._texts.extend(texts)
        self._metas.extend(metas)
        self._alive = np.concatenate([self._alive, np.ones(n, dtype=bool)])
        for i, s in zip(ids, slots.tolist(), strict=True):
            self._slot_of[i] = s
        self._mask_cache.clear()
        target = self._coarse.target_kind(len(self))
        if target != self._coarse.kind:
            self._rebuild_coarse(target)
        else:
            self._coarse.add(coarse, slots)

    def _rebuild_coarse(self, kind: str | None = None) -> None:
        kind = kind or self._coarse.target_kind(len(self))
        live = np.flatnonzero(self._alive).astype(np.int64)
        self._coarse.rebuild(kind, self._coarse_vecs.array[live], live)

    def rebuild_coarse(self, kind: str | None = None) -> None:
        """Rebuild the coarse FAISS index, optionally switching its kind for good.

        Args:
            kind: ``"auto"``, ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``None`` (keep the setting).
                Useful after a streaming build done with ``coarse_index="flat"`` (cheap adds):
                ``rebuild_coarse("ivf")`` then trains IVF once on the whole collection.
        """
        if kind is not None:
            if kind not in ("auto", "flat", "hnsw", "ivf"):
                raise ValueError(f"kind must be auto, flat, hnsw or ivf, got {kind!r}.")
            self._coarse.setting = kind
        target = self._coarse.target_kind(len(self))
        if kind == "ivf":
            target = "ivf"
        self._rebuild_coarse(target)

    def reserve(self, num_docs: int) -> None:
        """Pre-size storage for ``num_docs`` rows (avoids repeated growth on big builds)."""
        for _, store in self._stores():
            store.reserve(num_docs)

    def compact(self) -> None:
        """Rewrite the live rows contiguously (new files on disk) and rebuild the coarse index.

        Files named by an already saved manifest are left in place until the next
        :meth:`save`, so the saved index stays loadable.
        """
        live = np.flatnonzero(self._alive)
        if live.size == self.num_rows:
            return
        logger.info("compacting: %d live of %d rows", live.size, self.num_rows)
        old = self._stores()
        old_paths = [s.path for _, s in old if s.path is not None]
        tag = new_tag()
        self._open_stores(tag, 0, writable=True)
        for (_, new), (_, prev) in zip(self._stores(), old, strict=True):
            new.reserve(live.size)
            step = max(1, _COPY_ROWS_BYTES // max(prev.row_bytes, 1))
            for s in range(0, live.size, step):
                new.append(np.asarray(prev.array[live[s : s + step]]))
            prev.close()
        self._ids = [self._ids[s] for s in live]
        self._texts = [self._texts[s] for s in live]
        self._metas = [self._metas[s] for s in live]
        self._alive = np.ones(live.size, dtype=bool)
        self._slot_of = {i: s for s, i in enumerate(self._ids) if i is not None}
        self._mask_cache.clear()
        self._hash_cache.clear()
        self._rebuild_coarse()
        referenced = manifest_files(self.path) if self.path is not None else set()
        for p in old_paths:
            if p.name not in referenced:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ search
    def _prepare_queries(self, queries: Any) -> torch.Tensor:
        if isinstance(queries, np.ndarray):
            queries = torch.from_numpy(queries)
        if not isinstance(queries, torch.Tensor):
            raise TypeError(
                f"queries must be a (nq, Kq, D) tensor (MetaEmbedModel.encode_queries output), "
                f"got {type(queries).__name__}; use TwoStageRetriever for text or images."
            )
        q = queries.detach().to("cpu", torch.float32)
        if q.dim() == 2:
            q = q.unsqueeze(0)
        if q.dim() != 3 or q.shape[-1] != self.dim:
            raise ValueError(
                f"queries must have shape (nq, Kq, {self.dim}) for this index (dim={self.dim}); "
                f"got {tuple(queries.shape)}."
            )
        return q.contiguous()

    def _allowed(self, filter: Filter | None) -> np.ndarray:
        if filter is None:
            return self._alive
        key = json.dumps(filter, sort_keys=True, default=str)
        mask = self._mask_cache.get(key)
        if mask is None:
            compile_filter(filter)  # validate before scanning
            mask = filter_mask(filter, self._metas) & self._alive
            if len(self._mask_cache) > 64:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def _query_coarse(self, q: torch.Tensor) -> np.ndarray:
        if self.coarse_vector == "first":
            return np.ascontiguousarray(q[:, 0].numpy())
        mean = torch.nn.functional.normalize(q.mean(dim=1), dim=-1)
        return np.ascontiguousarray(mean.numpy())

    def _decode_rows(self, slots: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        r_c = self.num_vectors if r_c is None else r_c
        stored = self._vectors.array[slots][:, :r_c]
        scales = None if self._scales is None else self._scales.array[slots][:, :r_c]
        return self.codec.decode(stored, scales)

    def _score_ids(self, q: torch.Tensor, cand: np.ndarray, budget: Budget) -> np.ndarray:
        """Exact MaxSim of each query against its candidate rows ``cand (nq, m)``."""
        if cand.shape[1] == 0:
            return np.zeros(cand.shape, dtype=np.float32)
        view = self.codec.torch_view(self._vectors.array)
        if view is not None:
            out = maxsim_ids(q, view, torch.from_numpy(cand), budget.as_tuple(), backend=_backend())
        else:  # int8: dequantise the candidate rows, then score
            rows = self._decode_rows(cand.reshape(-1), budget.r_c)
            rows = rows.view(cand.shape[0], cand.shape[1], budget.r_c, self.dim)
            out = maxsim_pairwise(q, rows, budget.as_tuple(), backend=_backend())
        return out.numpy()

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

    def _coarse_candidates(
        self, q: torch.Tensor, pool: int, allowed: np.ndarray, filtered: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cand (nq, m) int64 rows, valid (nq, m) bool) from the coarse stage."""
        nq = q.shape[0]
        allowed_rows = np.flatnonzero(allowed).astype(np.int64)
        if pool >= allowed_rows.size:  # every matching row is a candidate: exact
            cand = np.broadcast_to(allowed_rows, (nq, allowed_rows.size)).copy()
            return cand, np.ones(cand.shape, dtype=bool)
        qc = self._query_coarse(q)
        if filtered and allowed_rows.size <= self.exact_subset_max:
            sims = qc @ self._coarse_vecs.array[allowed_rows].T  # (nq, n_allowed)
            cand = np.empty((nq, pool), dtype=np.int64)
            for i in range(nq):
                cand[i] = allowed_rows[stable_topk(sims[i], allowed_rows, pool)]
            return cand, np.ones(cand.shape, dtype=bool)
        if self._coarse.kind == "flat" and nq <= _TORCH_FLAT_MAX_QUERIES and not self._coarse.use_gpu:
            # FAISS's flat search uses one thread per query; for a few queries a two-thread
            # torch mat-vec over the coarse vectors is about 2x faster (memory-bound) and exact.
            with warnings.catch_warnings():  # read-only memmap: never written through
                warnings.simplefilter("ignore", UserWarning)
                coarse = torch.from_numpy(self._coarse_vecs.array)
            sims = (torch.from_numpy(qc) @ coarse.T).numpy()  # (nq, rows)
            rows = np.arange(sims.shape[1], dtype=np.int64)
            cand = np.empty((nq, pool), dtype=np.int64)
            for i in range(nq):
                cand[i] = stable_topk(np.where(allowed, sims[i], -np.inf), rows, pool)
            return cand, np.ones(cand.shape, dtype=bool)
        need_selector = filtered or self._coarse.stale > 0
        _, cand = self._coarse.search(qc, pool, allowed if need_selector else None)
        valid = cand >= 0
        fill = allowed_rows[0]
        cand = np.where(valid, cand, fill)
        return cand, valid

    def search_rows(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int | None = None,
        *,
        params: SearchParams | None = None,
        **options: Unpack[SearchOptions],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns arrays: ``(scores (nq, k) float32, rows (nq, k)
        int64)``, padded with ``-inf`` / ``-1`` when fewer than ``k`` documents match. Map rows
        to ids with :meth:`ids_of`."""
        p = SearchParams.of(k, params, **options)
        q = self._prepare_queries(queries)
        recall, rerank = p.check_budgets(self.budgets, q.shape[1])
        if len(self) == 0:
            raise ValueError(
                "The index is empty: add documents (index.add or retriever.add_documents) "
                "before searching."
            )
        k, fetch_k, filter = p.k, p.fetch_k, p.filter
        allowed = self._allowed(filter)
        if p.mode == "exhaustive":
            return self._exhaustive(q, k, rerank, allowed)
        fetch = max(fetch_k, k)
        cascade = recall != Budget(1, 1)
        pool = fetch * self.recall_pool_factor if cascade else fetch
        cand, valid = self._coarse_candidates(q, pool, allowed, filter is not None)
        if cascade and cand.shape[1] > fetch:
            scores = self._score_ids(q, cand, recall)
            _, cand = self._select(scores, cand, valid, fetch)
            valid = cand >= 0
            cand = np.where(valid, cand, int(np.argmax(allowed)))  # any allowed row as filler
        scores = self._score_ids(q, cand, rerank)
        return self._select(scores, cand, valid, k)

    def _exhaustive(
        self, q: torch.Tensor, k: int, budget: Budget, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        nq, n = q.shape[0], self.num_rows
        best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_r = np.zeros((nq, 0), dtype=np.int64)
        view = self.codec.torch_view(self._vectors.array)
        for s in range(0, n, _EXHAUSTIVE_CHUNK):
            e = min(n, s + _EXHAUSTIVE_CHUNK)
            ok = allowed[s:e]
            if not ok.any():
                continue
            if view is not None:
                scores = maxsim(q, view[s:e], budget.as_tuple(), backend=_backend()).numpy()
            else:
                docs = self._decode_rows(np.arange(s, e), budget.r_c)
                scores = maxsim(q, docs, budget.as_tuple(), backend=_backend()).numpy()
            scores = np.where(ok[None, :], scores, -np.inf)
            rows = np.arange(s, e, dtype=np.int64)
            cat_s = np.concatenate([best_s, scores], axis=1)
            cat_r = np.concatenate([best_r, np.broadcast_to(rows, (nq, e - s))], axis=1)
            best_s, best_r = self._select(cat_s, cat_r, np.isfinite(cat_s), k)
        if best_s.shape[1] < k:
            pad = k - best_s.shape[1]
            best_s = np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_r = np.pad(best_r, ((0, 0), (0, pad)), constant_values=-1)
        return best_s, best_r

    def ids_of(self, rows: np.ndarray) -> list[list[str]]:
        """Map ``(nq, k)`` rows from :meth:`search_rows` to ids (``-1`` entries dropped)."""
        return [[self._ids[r] for r in row if r >= 0] for row in np.asarray(rows).tolist()]  # type: ignore[misc]

    def search(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int | None = None,
        *,
        params: SearchParams | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[list[Hit]]:
        """Two-stage search: coarse recall of ``fetch_k`` rows, exact MaxSim rerank to ``k``.

        The options are those of :class:`~metaembed_rag.index.params.SearchParams`, given as
        ``params=`` or as keywords (keywords override ``params``).

        Args:
            queries: ``(nq, Kq, D)`` float query vectors (or one ``(Kq, D)`` query).
            k: hits per query (default 10, or ``params.k``).
            params: the search options as one value.
            fetch_k: coarse candidates per query (raised to ``k`` if smaller). When
                ``fetch_k`` (times ``recall_pool_factor`` for a cascade) covers every matching
                document, all of them are reranked, so the result equals ``mode="exhaustive"``.
            recall_budget: ``(1,1)`` = the coarse vector alone (FAISS). Any other trained budget
                runs a cascade: FAISS fetches ``recall_pool_factor * fetch_k`` rows, they are
                scored exactly at ``recall_budget`` and the best ``fetch_k`` are reranked.
            rerank_budget: budget of the final exact MaxSim (default: the largest, (16,64)).
            filter: metadata filter (see :mod:`metaembed_rag.index.filters`), applied inside
                the coarse stage: only matching documents are candidates.
            mode: ``"two_stage"`` or ``"exhaustive"`` (exact MaxSim at ``rerank_budget`` over
                every matching document, chunked; for evaluation and small corpora).

        Returns:
            one list of :class:`Hit` per query, best first; ties in score are broken by row
            order (earlier-added first).

        Raises:
            ValueError: empty index, a budget the index was not built for (the message lists
                the valid ones), wrong query shape, a malformed filter.
        """
        scores, rows = self.search_rows(queries, k, params=params, **options)
        out: list[list[Hit]] = []
        for srow, rrow in zip(scores.tolist(), rows.tolist(), strict=True):
            hits = []
            for rank, (s, r) in enumerate(zip(srow, rrow, strict=True)):
                if r < 0:
                    break
                doc_id = self._ids[r]
                assert doc_id is not None
                hits.append(Hit(doc_id, float(s), self._texts[r], dict(self._metas[r] or {}), rank))
            out.append(hits)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save atomically to ``path`` (default: the index's own directory).

        Files are written under temporary names and renamed; ``manifest.json`` goes last, so a
        crash at any point leaves the previously saved index (if any) loadable. Saving into
        the index's own directory writes only what changed (rows are append-only).

        Returns:
            the directory written.
        """
        return save_index(self, path)

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
    ) -> MultiVectorIndex:
        """Open a saved index.

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

        Raises:
            FileNotFoundError: no manifest at ``path``.
            IndexCorruptedError: missing or truncated files, checksum mismatch.
            IndexMismatchError: another model fingerprint, dim or stored dtype.
        """
        return load_index(
            cls, path, mmap=mmap, verify=verify, model=model, fingerprint=fingerprint,
            dim=dim, dtype=dtype, use_gpu=use_gpu,
        )  # fmt: skip

    def close(self) -> None:
        """Release memory maps (the object is unusable afterwards)."""
        for _, store in self._stores():
            store.close()
