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
(= ``rerank_budget``), ``recall_budget``, ``fetch_k``, ``mode``, ``score_mode`` and, for
``VectorStoreQueryMode.MMR``, ``mmr_threshold`` / ``mmr_prefetch_k``.

Scores (docs/scores.md): ``score_mode="maxsim"`` (default) gives the raw MaxSim sum as each
node's similarity; ``"relevance"`` the model's calibrated 0-1 relevance
(:func:`metaembed_rag.relevance.relevance_scores`), so ``SimilarityPostprocessor(
similarity_cutoff=0.5)`` is a meaningful threshold.

``VectorStoreQueryMode.MMR`` (``as_retriever(vector_store_query_mode="mmr")``) picks
``similarity_top_k`` of ``fetch_k`` candidates (``mmr_prefetch_k`` overrides it) for relevance
and diversity, ``lambda_mult = mmr_threshold`` (``VectorStoreQuery.mmr_threshold`` or the
``mmr_threshold`` keyword; default 0.5; 1 = relevance only), with document-document similarity
from the stored vectors (:func:`metaembed_rag.index.mmr_search`; nothing is re-encoded).
"""

from __future__ import annotations

import asyncio
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

from metaembed_rag.budget import BudgetLike
from metaembed_rag.frameworks.llama_index import MetaEmbedEmbedding
from metaembed_rag.frameworks.llama_index.filters import ELEMENTS_KEY, element_index, to_core_filter
from metaembed_rag.index import DEFAULT_FETCH_K, MultiVectorIndex, SearchParams, mmr_search
from metaembed_rag.relevance import relevance_scores

from .persist import read_store, write_store
from .vectors import document_multi_vectors, query_multi_vector

__all__ = ["MetaEmbedVectorStore", "NODE_ID_KEY"]

logger = logging.getLogger(__name__)

#: Metadata key holding the node id (for ``node_ids`` restrictions and ``delete_nodes``).
NODE_ID_KEY = "_node_id"
_NAMESPACE_SEP = "__"
_QUERY_KWARGS = (
    "budget",
    "rerank_budget",
    "recall_budget",
    "fetch_k",
    "mode",
    "score_mode",
    "mmr_threshold",
    "mmr_prefetch_k",
)
#: What a node's similarity is: the raw MaxSim sum or the calibrated 0-1 relevance.
ScoreMode = Literal["maxsim", "relevance"]
_MMR_DEFAULT_LAMBDA = 0.5


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
        score_mode: ``"maxsim"`` (raw MaxSim similarities) or ``"relevance"`` (calibrated 0-1).

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
    fetch_k: int = Field(default=DEFAULT_FETCH_K, description="Coarse candidates per query.", ge=1)
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
    score_mode: ScoreMode = Field(
        default="maxsim",
        description="Node similarity: 'maxsim' (raw MaxSim sum) or 'relevance' (calibrated 0-1).",
    )

    _embed_model: MetaEmbedEmbedding = PrivateAttr()
    _index: MultiVectorIndex = PrivateAttr()
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    def __init__(
        self,
        embed_model: MetaEmbedEmbedding,
        *,
        index: MultiVectorIndex | None = None,
        dtype: str = "bfloat16",
        fetch_k: int = DEFAULT_FETCH_K,
        recall_budget: BudgetLike = (1, 1),
        rerank_budget: BudgetLike | None = None,
        mode: Literal["two_stage", "exhaustive"] = "two_stage",
        is_embedding_query: bool = True,
        flat_metadata: bool = False,
        score_mode: ScoreMode = "maxsim",
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, MetaEmbedEmbedding):
            raise TypeError(
                "embed_model must be a llama_index.embeddings.metaembed.MetaEmbedEmbedding, "
                f"got {type(embed_model).__name__}."
            )
        model = embed_model.model
        defaults = SearchParams(
            fetch_k=fetch_k, recall_budget=recall_budget, rerank_budget=rerank_budget, mode=mode
        )
        recall, rerank = defaults.check_budgets(model.budgets)
        if index is None:
            index = MultiVectorIndex.for_model(model, dtype=dtype)
        index.check_compatible(model)
        super().__init__(
            is_embedding_query=is_embedding_query,
            flat_metadata=flat_metadata,
            fetch_k=fetch_k,
            recall_budget=recall.as_tuple(),
            rerank_budget=None if defaults.rerank_budget is None else rerank.as_tuple(),
            mode=mode,
            dtype=index.dtype,
            score_mode=score_mode,
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
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add (or replace, by node id) nodes with their multi-vectors.

        Returns:
            the node ids.
        """
        nodes = list(nodes)
        if not nodes:
            return []
        vectors = document_multi_vectors(self._embed_model, nodes)
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
        hybrid: Literal["rrf", "weighted"] | None = None,
        hybrid_weight: float | None = None,
        query_str: str | None = None,
        score_mode: ScoreMode | None = None,
        mmr_lambda: float | None = None,
        scorer: Any = None,
    ) -> VectorStoreQueryResult:
        """Two-stage MaxSim search for an already encoded query, under the store's lock.

        Args:
            query_vectors: ``(R_q, D)`` (or ``(1, R_q, D)``) query multi-vector.
            similarity_top_k: nodes returned.
            filters, node_ids, doc_ids: restrictions (all must hold).
            fetch_k, recall_budget, rerank_budget, mode, score_mode: ``None`` uses the store's
                setting.
            hybrid, hybrid_weight: fuse with BM25 over ``query_str`` (see
                ``metaembed_rag.index.hybrid``); the similarities are then the fused scores.
            mmr_lambda: run maximal marginal relevance with this ``lambda_mult`` over
                ``fetch_k`` candidates (``None``: plain ranking).
            scorer: the exact stage's scorer (``None``: MaxSim; ``"pooled"``, a folder from
                ``metaembed-rag train-scorer`` or a ``metaembed_rag.scorers.Scorer``).

        Returns:
            nodes, similarities (raw MaxSim sums or calibrated relevance, see ``score_mode``;
            best first, or in MMR order) and node ids.
        """
        kind = self.score_mode if score_mode is None else score_mode
        if kind not in ("maxsim", "relevance"):
            raise ValueError(f"score_mode must be 'maxsim' or 'relevance', got {kind!r}.")
        params = SearchParams(
            k=similarity_top_k,
            fetch_k=self.fetch_k if fetch_k is None else fetch_k,
            recall_budget=self.recall_budget if recall_budget is None else recall_budget,
            rerank_budget=self.rerank_budget if rerank_budget is None else rerank_budget,
            filter=self.core_filter(filters, node_ids, doc_ids),
            mode=self.mode if mode is None else mode,
            hybrid=hybrid,
            hybrid_weight=hybrid_weight,
            scorer=scorer,
        )
        q = query_vectors.unsqueeze(0) if query_vectors.dim() == 2 else query_vectors
        texts = None if query_str is None else [query_str]
        with self._lock:
            if len(self._index) == 0:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            if mmr_lambda is None:
                hits = self._index.search(q, params=params, texts=texts)[0]
            else:
                hits = mmr_search(self._index, q, params, mmr_lambda)
        nodes = [self.node_from_record(h.id, h.text, h.metadata) for h in hits]
        scores = [h.score for h in hits]
        if kind == "relevance":
            model = self._embed_model.model
            budget = params.check_budgets(model.budgets)[1]
            scores = relevance_scores(model, scores, budget)
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=[h.id for h in hits])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Two-stage MaxSim search.

        Args:
            query: ``similarity_top_k``, ``filters``, ``node_ids`` and ``doc_ids`` restrict the
                search; ``query_embedding`` / ``query_str`` give the query (see the module
                docstring). ``mode``: ``VectorStoreQueryMode.DEFAULT`` (MaxSim), ``MMR``
                (lambda from ``mmr_threshold``) or ``HYBRID`` (MaxSim fused with BM25 over
                ``query_str``: ``alpha`` given, the weighted fusion with ``alpha`` the
                multi-vector share, 1 = MaxSim alone; ``alpha`` ``None``, reciprocal rank
                fusion).
            **kwargs: ``budget`` (alias of ``rerank_budget``), ``rerank_budget``,
                ``recall_budget``, ``fetch_k``, ``mode``, ``score_mode`` override the store's
                defaults; ``mmr_threshold`` (lambda) and ``mmr_prefetch_k`` (candidates) for MMR.

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
        hybrid = query.mode == VectorStoreQueryMode.HYBRID
        if query.mode not in (
            VectorStoreQueryMode.DEFAULT,
            VectorStoreQueryMode.MMR,
            VectorStoreQueryMode.HYBRID,
        ):
            raise ValueError(
                "MetaEmbedVectorStore supports the default, MMR and hybrid query modes, got "
                f"{query.mode!r}."
            )
        if hybrid and not query.query_str:
            raise ValueError(
                "VectorStoreQueryMode.HYBRID needs query_str (BM25 reads the query text)."
            )
        mmr_lambda = None
        fetch_k = kwargs.get("fetch_k")
        if query.mode == VectorStoreQueryMode.MMR:
            mmr_lambda = next(
                (v for v in (query.mmr_threshold, kwargs.get("mmr_threshold")) if v is not None),
                _MMR_DEFAULT_LAMBDA,
            )
            fetch_k = kwargs.get("mmr_prefetch_k", fetch_k)
        if "budget" in kwargs and "rerank_budget" in kwargs:
            raise TypeError("Pass budget or rerank_budget, not both (they are the same).")
        self.core_filter(query.filters)  # unsupported filters fail before any encoding
        if self.num_nodes == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        return self.query_multi_vectors(
            query_multi_vector(self._embed_model, query),
            query.similarity_top_k,
            filters=query.filters,
            node_ids=query.node_ids or None,
            doc_ids=query.doc_ids or None,
            fetch_k=fetch_k,
            recall_budget=kwargs.get("recall_budget"),
            rerank_budget=kwargs.get("budget", kwargs.get("rerank_budget")),
            mode=kwargs.get("mode"),
            hybrid=(None if not hybrid else "rrf" if query.alpha is None else "weighted"),
            hybrid_weight=query.alpha if hybrid else None,
            query_str=query.query_str if hybrid else None,
            score_mode=kwargs.get("score_mode"),
            mmr_lambda=mmr_lambda,
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # ------------------------------------------------------------------ persistence
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
        write_store(self, Path(persist_path), fs)

    @classmethod
    def from_persist_path(
        cls, persist_path: str, embed_model: MetaEmbedEmbedding, **overrides: Any
    ) -> MetaEmbedVectorStore:
        """Load what :meth:`persist` wrote at ``persist_path`` (settings can be overridden);
        a file written before the shared settings format (``metaembed-vector-store`` version
        1 or 2) is migrated, and rewritten by the next :meth:`persist`.

        Raises:
            FileNotFoundError: nothing was persisted there.
            IndexMismatchError: the embedding's model is not the one the index was built with.
        """
        index, saved = read_store(Path(persist_path), embed_model)
        return cls(embed_model, index=index, **{**saved, **overrides})

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
