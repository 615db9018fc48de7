"""``MetaEmbedVectorStore``: a LlamaIndex vector store that keeps MetaEmbed multi-vectors.

Every node is stored once with its full document multi-vector (64 vectors for the default
model) in a :class:`metaembed_rag.index.MultiVectorIndex`; a query runs the index's two-stage
search (coarse recall, exact budgeted MaxSim rerank).

How the store gets *multi*-vectors through LlamaIndex's single-vector plumbing:

* **documents** - ``VectorStoreIndex`` embeds nodes with its ``embed_model`` and hands the
  store nodes carrying one vector each. When that ``embed_model`` is the
  :class:`~llama_index.embeddings.metaembed.MetaEmbedEmbedding` given to the store, the store
  takes the full multi-vector the embedding just computed (matched by the returned vector), so
  nothing is encoded twice. Any other node (another embed model, no embedding) is encoded by
  the store itself from its content: with a warning when the node's embedding is not the
  first vector of what the store computes (another embed model made it; it is ignored), or
  when the embedding's ``vector_cache_mb`` was too small to keep the batch (encoded twice).
* **queries** - ``VectorStoreQuery.query_embedding`` is looked up the same way (text queries,
  image queries such as ``MultiModalVectorIndexRetriever.image_to_image_retrieve`` whose query
  embedding comes from ``MetaEmbedEmbedding.get_image_embedding``, and several strings such as
  HyDE's ``custom_embedding_strs``, whose aggregate ``get_agg_embedding_from_queries`` keeps).
  If it is not there (evicted from the embedding's ``query_cache_mb``, or made by another
  instance or model), the store encodes ``VectorStoreQuery.query_str`` and uses it only if its
  first vector *is* ``query_embedding``; otherwise it raises ``ValueError`` - it never
  searches for something other than what was embedded. Set ``is_embedding_query=False`` to
  make LlamaIndex skip the query embedding altogether for text-only use: the store then
  encodes ``query_str`` (``custom_embedding_strs`` cannot reach a store that way).

Query-time options go through ``index.as_retriever(vector_store_kwargs={...})``: ``budget``
(= ``rerank_budget``), ``recall_budget``, ``fetch_k`` and ``mode``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import fsspec
import torch
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    DEFAULT_PERSIST_DIR,
    DEFAULT_PERSIST_FNAME,
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from llama_index.embeddings.metaembed import MetaEmbedEmbedding
from llama_index.embeddings.metaembed.inputs import node_input

from metaembed_rag import Budget
from metaembed_rag.budget import BudgetLike
from metaembed_rag.index import MultiVectorIndex

from .filters import ELEMENTS_KEY, element_index, to_core_filter

__all__ = ["MetaEmbedVectorStore", "NODE_ID_KEY"]

logger = logging.getLogger(__name__)

#: Metadata key holding the node id (for ``node_ids`` restrictions and ``delete_nodes``).
NODE_ID_KEY = "_node_id"
_NAMESPACE_SEP = "__"
_FORMAT = "metaembed-vector-store"
_FORMAT_VERSION = 2  # 2: list-element index for contains / any / all filters
_QUERY_KWARGS = ("budget", "rerank_budget", "recall_budget", "fetch_k", "mode")
#: Largest difference between a re-encoded first vector and a given embedding still taken as
#: "the same vector" (unit vectors; batch composition moves float32 results by ~1e-6).
_SAME_VECTOR_ATOL = 1e-4


def _budget_tuple(value: BudgetLike | None) -> tuple[int, int] | None:
    return None if value is None else Budget.parse(value).as_tuple()


def _same_vector(a: torch.Tensor, b: Sequence[float]) -> bool:
    other = torch.as_tensor(list(b), dtype=torch.float32)
    return other.shape == a.shape and bool(torch.allclose(a, other, atol=_SAME_VECTOR_ATOL))


class MetaEmbedVectorStore(BasePydanticVectorStore):
    """Multi-vector store with two-stage MaxSim search.

    Args:
        embed_model: the :class:`MetaEmbedEmbedding` that encodes nodes and queries; pass the
            same object as ``embed_model`` to ``VectorStoreIndex`` (or set
            ``Settings.embed_model``) so nodes are encoded once.
        index: an existing :class:`MultiVectorIndex` built for this model (default: a new
            empty one, ``MultiVectorIndex.for_model(model, dtype=dtype)``).
        dtype: stored dtype of a new index (``"bfloat16"``, ``"float16"``, ``"float32"``,
            ``"int8"``).
        fetch_k: coarse candidates per query (see ``MultiVectorIndex.search``).
        recall_budget: budget of the recall stage (``(1,1)``: the coarse vector alone).
        rerank_budget: budget of the exact MaxSim rerank (``None``: the model's largest).
        mode: ``"two_stage"`` or ``"exhaustive"``.
        is_embedding_query: ``True`` (default) lets LlamaIndex embed the query (needed for
            image and HyDE queries); ``False`` skips it and the store encodes ``query_str``.
        flat_metadata: require flat metadata (str, int, float, None values).

    The search defaults can be overridden per retriever with ``vector_store_kwargs``.
    """

    stores_text: bool = True
    is_embedding_query: bool = Field(
        default=True,
        description="Let LlamaIndex embed queries (needed for image and HyDE queries); False: "
        "the store encodes VectorStoreQuery.query_str itself.",
    )
    flat_metadata: bool = Field(
        default=False, description="Require flat metadata (str, int, float, None values)."
    )
    fetch_k: int = Field(default=200, description="Coarse candidates per query.", ge=1)
    recall_budget: tuple[int, int] = Field(
        default=(1, 1),
        description="Budget (r_q, r_c) of the recall stage ((1,1): coarse vector only).",
    )
    rerank_budget: tuple[int, int] | None = Field(
        default=None,
        description="Budget (r_q, r_c) of the exact MaxSim rerank (None: the largest).",
    )
    mode: Literal["two_stage", "exhaustive"] = Field(
        default="two_stage", description="'two_stage' or 'exhaustive' (exact MaxSim over all)."
    )
    dtype: str = Field(default="bfloat16", description="Stored vector dtype of the index.")

    _embed_model: MetaEmbedEmbedding = PrivateAttr()
    _index: MultiVectorIndex = PrivateAttr()
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    def __init__(
        self,
        embed_model: MetaEmbedEmbedding,
        *,
        index: MultiVectorIndex | None = None,
        dtype: str = "bfloat16",
        fetch_k: int = 200,
        recall_budget: BudgetLike = (1, 1),
        rerank_budget: BudgetLike | None = None,
        mode: Literal["two_stage", "exhaustive"] = "two_stage",
        is_embedding_query: bool = True,
        flat_metadata: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, MetaEmbedEmbedding):
            raise TypeError(
                "embed_model must be a llama_index.embeddings.metaembed.MetaEmbedEmbedding, "
                f"got {type(embed_model).__name__}."
            )
        if mode not in ("two_stage", "exhaustive"):
            raise ValueError(f"mode must be 'two_stage' or 'exhaustive', got {mode!r}.")
        model = embed_model.model
        recall = model.resolve_budget(recall_budget).as_tuple()
        rerank = None if rerank_budget is None else model.resolve_budget(rerank_budget).as_tuple()
        if index is None:
            index = MultiVectorIndex.for_model(model, dtype=dtype)
        elif index.fingerprint not in (None, model.fingerprint()):
            raise ValueError(
                f"The index was built with model fingerprint {index.fingerprint!r} but the "
                f"embedding's model has {model.fingerprint()!r}; use the model the index was "
                "built with."
            )
        super().__init__(
            is_embedding_query=is_embedding_query,
            flat_metadata=flat_metadata,
            fetch_k=fetch_k,
            recall_budget=recall,
            rerank_budget=rerank,
            mode=mode,
            dtype=index.dtype,
            **kwargs,
        )
        self._embed_model = embed_model
        self._index = index
        embed_model.attach_vector_cache()

    @classmethod
    def class_name(cls) -> str:
        return "MetaEmbedVectorStore"

    @property
    def client(self) -> MultiVectorIndex:
        """The underlying :class:`metaembed_rag.index.MultiVectorIndex` (write to it only
        through the store: it holds the store's lock)."""
        return self._index

    @property
    def embed_model(self) -> MetaEmbedEmbedding:
        """The :class:`MetaEmbedEmbedding` that encodes this store's nodes and queries."""
        return self._embed_model

    @property
    def lock(self) -> threading.RLock:
        """The lock every read and write of the index holds (for code that shares the index,
        e.g. ``MetaEmbedRetriever.from_vector_store``)."""
        return self._lock

    @property
    def num_nodes(self) -> int:
        """Number of stored nodes. (No ``__len__``: LlamaIndex tests stores for truth, e.g.
        ``StorageContext.from_defaults`` replaces a falsy ``vector_store``.)"""
        with self._lock:
            return len(self._index)

    # ------------------------------------------------------------------ writing
    def _document_vectors(self, nodes: Sequence[BaseNode]) -> torch.Tensor:
        """``(n, R_c, D)`` multi-vectors: the embedding's cached ones, encoding the rest."""
        out: list[torch.Tensor | None] = []
        for node in nodes:
            vec = None
            if node.embedding is not None:
                vec = self._embed_model.lookup_multi_vector("document", node.embedding, pop=True)
            out.append(vec)
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            fresh = self._embed_model.get_document_multi_vectors(
                [node_input(nodes[i], timeout=self._embed_model.url_timeout) for i in missing]
            )
            foreign, evicted = [], 0
            for j, i in enumerate(missing):
                out[i] = fresh[j]
                # the fresh multi-vector was remembered too: take it back out of the cache
                self._embed_model.lookup_multi_vector("document", fresh[j, 0], pop=True)
                given = nodes[i].embedding
                if given is None:
                    continue
                if _same_vector(fresh[j, 0], given):
                    evicted += 1
                else:
                    foreign.append(nodes[i].node_id)
            if foreign:
                logger.warning(
                    "%d of %d nodes (e.g. %r) carry an embedding that this store's "
                    "MetaEmbedEmbedding did not make (another embed model?); it is ignored and "
                    "the store encoded the nodes itself. Pass the store's MetaEmbedEmbedding as "
                    "the index's embed_model so nodes are encoded once.",
                    len(foreign),
                    len(nodes),
                    foreign[0],
                )
            if evicted:
                logger.warning(
                    "%d of %d nodes were encoded twice: their multi-vectors had left the "
                    "embedding's cache (vector_cache_mb=%s) before the store added them. Raise "
                    "vector_cache_mb or lower the index's insert_batch_size.",
                    evicted,
                    len(nodes),
                    self._embed_model.vector_cache_mb,
                )
            logger.debug("encoded %d of %d nodes in the store", len(missing), len(nodes))
        return torch.stack([v for v in out if v is not None])

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add (or replace, by node id) nodes with their multi-vectors.

        Returns:
            the node ids.
        """
        nodes = list(nodes)
        if not nodes:
            return []
        vectors = self._document_vectors(nodes)
        ids, texts, metas = [], [], []
        for node in nodes:
            meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            meta[NODE_ID_KEY] = node.node_id
            elements = element_index(node.metadata)
            if elements:
                meta[ELEMENTS_KEY] = elements
            ids.append(node.node_id)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            metas.append(meta)
        with self._lock:
            self._index.upsert(ids, vectors, texts, metas)
        return ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def core_filter(
        self,
        filters: MetadataFilters | None = None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """The core filter (see :mod:`metaembed_rag.index.filters`) for LlamaIndex
        ``filters`` and ``node_ids`` / ``doc_ids`` restrictions (all must hold)."""
        spec = to_core_filter(filters, elements=True)
        restrict: list[dict[str, Any]] = [] if spec is None else [spec]
        if node_ids is not None:
            restrict.append({NODE_ID_KEY: {"$in": list(node_ids)}})
        if doc_ids is not None:
            restrict.append({"ref_doc_id": {"$in": list(doc_ids)}})
        if not restrict:
            return None
        return restrict[0] if len(restrict) == 1 else {"$and": restrict}

    def _matching_ids(
        self, node_ids: list[str] | None, filters: MetadataFilters | None
    ) -> list[str]:
        spec = self.core_filter(filters)
        with self._lock:
            ids = self._index.ids_where(spec)
        if node_ids is not None:
            wanted = set(node_ids)
            ids = [i for i in ids if i in wanted]
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        with self._lock:
            self._index.delete(self._index.ids_where({"ref_doc_id": ref_doc_id}))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or metadata filter (both given: nodes matching both)."""
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes needs node_ids and/or filters; use clear() to empty.")
        with self._lock:
            self._index.delete(self._matching_ids(node_ids, filters))

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters)

    def clear(self) -> None:
        """Delete every node."""
        with self._lock:
            self._index.delete(self._index.ids)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def node_from_record(doc_id: str, text: str | None, metadata: dict[str, Any]) -> BaseNode:
        """The LlamaIndex node (its own class: ``TextNode``, ``ImageNode``, ...) stored under
        ``doc_id`` from the index's text and metadata."""
        node = metadata_dict_to_node(metadata, text=text or "")
        if node.node_id != doc_id:  # pragma: no cover - ids are written together
            raise ValueError(f"Stored node {doc_id!r} holds node {node.node_id!r}.")
        return node

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Stored nodes by id and/or filter (both ``None``: all), in insertion order."""
        out = []
        with self._lock:
            for i in self._matching_ids(node_ids, filters):
                rec = self._index.get(i)
                out.append(self.node_from_record(i, rec["text"], rec["metadata"]))
        return out

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def get_multi_vectors(self, node_id: str) -> torch.Tensor:
        """The stored ``(R_c, D)`` float32 multi-vector of a node."""
        with self._lock:
            return self._index.get(node_id)["vectors"]

    def _query_vectors(self, query: VectorStoreQuery) -> torch.Tensor:
        """``(R_q, D)`` multi-vector of the query (see the module docstring)."""
        text = query.query_str if query.query_str and query.query_str.strip() else None
        if query.query_embedding is None:
            if text is None:
                raise ValueError(
                    "MetaEmbedVectorStore needs the query itself to build its multi-vector: a "
                    "VectorStoreQuery with query_str, or a query_embedding made by the "
                    "MetaEmbedEmbedding this store uses. Got neither."
                )
            return self._embed_model.get_query_multi_vectors([text])[0]
        vec = self._embed_model.lookup_multi_vector("query", query.query_embedding)
        if vec is not None:
            return vec
        if text is not None:
            fresh = self._embed_model.get_query_multi_vectors([text])[0]
            if _same_vector(fresh[0], query.query_embedding):
                logger.debug("query multi-vector not cached; re-encoded query_str (same vector)")
                return fresh
        raise ValueError(
            "MetaEmbedVectorStore needs the multi-vector of the query, but query_embedding "
            f"({len(query.query_embedding)} floats) was not made by this store's "
            f"MetaEmbedEmbedding for query_str {query.query_str!r}. Causes: the index's "
            "embed_model (or image_embed_model) is another model or another MetaEmbedEmbedding "
            "instance - pass the store's embedding; or an image / multi-string (HyDE) query "
            "embedding left the embedding's cache before the search (query_cache_mb="
            f"{self._embed_model.query_cache_mb}) - raise query_cache_mb."
        )

    def query_multi_vectors(
        self,
        query_vectors: torch.Tensor,
        similarity_top_k: int,
        *,
        filters: MetadataFilters | None = None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        rerank_budget: BudgetLike | None = None,
        mode: Literal["two_stage", "exhaustive"] | None = None,
    ) -> VectorStoreQueryResult:
        """Two-stage MaxSim search for an already encoded query, under the store's lock.

        Args:
            query_vectors: ``(R_q, D)`` (or ``(1, R_q, D)``) query multi-vector.
            similarity_top_k: nodes returned.
            filters, node_ids, doc_ids: restrictions (all must hold).
            fetch_k, recall_budget, rerank_budget, mode: ``None`` uses the store's setting.

        Returns:
            nodes, MaxSim scores (sums over query vectors, best first) and node ids.
        """
        filt = self.core_filter(filters, node_ids, doc_ids)
        q = query_vectors.unsqueeze(0) if query_vectors.dim() == 2 else query_vectors
        rerank = self.rerank_budget if rerank_budget is None else rerank_budget
        with self._lock:
            if len(self._index) == 0:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            hits = self._index.search(
                q,
                similarity_top_k,
                fetch_k=int(self.fetch_k if fetch_k is None else fetch_k),
                recall_budget=self.recall_budget if recall_budget is None else recall_budget,
                rerank_budget=rerank,
                filter=filt,
                mode=self.mode if mode is None else mode,
            )[0]
        nodes = [self.node_from_record(h.id, h.text, h.metadata) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits]
        )

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Two-stage MaxSim search.

        Args:
            query: ``similarity_top_k``, ``filters``, ``node_ids`` and ``doc_ids`` restrict the
                search; ``query_embedding`` / ``query_str`` give the query (see the module
                docstring). Only ``VectorStoreQueryMode.DEFAULT`` is supported.
            **kwargs: ``budget`` (alias of ``rerank_budget``), ``rerank_budget``,
                ``recall_budget``, ``fetch_k``, ``mode`` override the store's defaults.

        Returns:
            nodes, MaxSim scores (sums over query vectors, best first) and node ids.

        Raises:
            TypeError: an unknown option. ValueError: another query mode, an untrained
            budget, an unsupported filter, or a query embedding the store cannot use.
        """
        unknown = sorted(set(kwargs) - set(_QUERY_KWARGS))
        if unknown:
            raise TypeError(
                f"Unknown MetaEmbedVectorStore query option(s) {unknown}; valid: "
                f"{', '.join(_QUERY_KWARGS)}."
            )
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(
                f"MetaEmbedVectorStore supports only the default query mode, got {query.mode!r}."
            )
        if "budget" in kwargs and "rerank_budget" in kwargs:
            raise TypeError("Pass budget or rerank_budget, not both (they are the same).")
        self.core_filter(query.filters)  # unsupported filters fail before any encoding
        if self.num_nodes == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        return self.query_multi_vectors(
            self._query_vectors(query),
            query.similarity_top_k,
            filters=query.filters,
            node_ids=query.node_ids or None,
            doc_ids=query.doc_ids or None,
            fetch_k=kwargs.get("fetch_k"),
            recall_budget=kwargs.get("recall_budget"),
            rerank_budget=kwargs.get("budget", kwargs.get("rerank_budget")),
            mode=kwargs.get("mode"),
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def _index_dir(persist_path: Path) -> Path:
        return persist_path.with_name(persist_path.stem + ".metaembed")

    def persist(
        self,
        persist_path: str = str(Path(DEFAULT_PERSIST_DIR) / DEFAULT_PERSIST_FNAME),
        fs: fsspec.AbstractFileSystem | None = None,
    ) -> None:
        """Save to ``persist_path`` (a small JSON file of settings) and the index directory
        next to it (``<name>.metaembed/``, see ``MultiVectorIndex.save``; atomic).

        ``StorageContext.persist(persist_dir)`` calls this with
        ``persist_dir/default__vector_store.json``. Only the local filesystem is supported.
        """
        if fs is not None and "file" not in (
            fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        ):
            raise NotImplementedError(
                f"MetaEmbedVectorStore persists to the local filesystem only, got fs "
                f"protocol {fs.protocol!r}; persist locally and copy the folder."
            )
        path = Path(persist_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        index_dir = self._index_dir(path)
        with self._lock:
            self._index.save(index_dir)
        settings = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "index_dir": index_dir.name,
            "fingerprint": self._index.fingerprint,
            "settings": self.model_dump(
                include={
                    "is_embedding_query",
                    "flat_metadata",
                    "fetch_k",
                    "recall_budget",
                    "rerank_budget",
                    "mode",
                }
            ),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def from_persist_path(
        cls, persist_path: str, embed_model: MetaEmbedEmbedding, **overrides: Any
    ) -> MetaEmbedVectorStore:
        """Load what :meth:`persist` wrote at ``persist_path`` (settings can be overridden).

        Raises:
            FileNotFoundError: nothing was persisted there.
            IndexMismatchError: the embedding's model is not the one the index was built with.
        """
        path = Path(persist_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No MetaEmbedVectorStore at {str(path)!r}; persist one with "
                "storage_context.persist(persist_dir) or store.persist(path)."
            )
        info = json.loads(path.read_text())
        if info.get("format") != _FORMAT:
            raise ValueError(
                f"{path} is not a MetaEmbedVectorStore file (format {info.get('format')!r})."
            )
        version = info.get("version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(
                f"{path} was written by a newer llama-index-vector-stores-metaembed (format "
                f"version {version!r}, this one reads 1 and {_FORMAT_VERSION}); upgrade it."
            )
        if version == 1:
            logger.warning(
                "%s: format version 1 has no list-element index: 'contains' / 'any' / 'all' "
                "filters match no node added before this version; re-add those nodes.",
                path,
            )
        index = MultiVectorIndex.load(path.parent / info["index_dir"], model=embed_model.model)
        settings = {**info.get("settings", {}), **overrides}
        return cls(embed_model, index=index, **settings)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str = DEFAULT_PERSIST_DIR,
        embed_model: MetaEmbedEmbedding | None = None,
        namespace: str = "default",
        **overrides: Any,
    ) -> MetaEmbedVectorStore:
        """Load the store ``StorageContext.persist(persist_dir)`` wrote for ``namespace``
        (``"default"``; ``"image"`` for a ``MultiModalVectorStoreIndex``'s image store)."""
        if embed_model is None:
            raise ValueError("from_persist_dir needs embed_model (the MetaEmbedEmbedding).")
        path = Path(persist_dir) / f"{namespace}{_NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        return cls.from_persist_path(str(path), embed_model, **overrides)
