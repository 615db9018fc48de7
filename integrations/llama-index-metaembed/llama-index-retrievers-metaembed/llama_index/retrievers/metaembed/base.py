"""``MetaEmbedRetriever``: a LlamaIndex ``BaseRetriever`` over MetaEmbed's two-stage search.

It searches either a :class:`metaembed_rag.retriever.TwoStageRetriever` (a model plus a
:class:`metaembed_rag.index.MultiVectorIndex`) or a
:class:`~llama_index.vector_stores.metaembed.MetaEmbedVectorStore`
(:meth:`MetaEmbedRetriever.from_vector_store`): coarse recall of ``fetch_k`` candidates at
``recall_budget``, exact MaxSim rerank at ``rerank_budget``, ``similarity_top_k`` nodes out,
scored by the MaxSim sum.

The query follows LlamaIndex's convention (see
:func:`llama_index.embeddings.metaembed.inputs.query_items`): the text searched for is
``QueryBundle.embedding_strs`` (``custom_embedding_strs`` if set, e.g. by HyDE, else
``query_str``), the image ``QueryBundle.image_path`` (a path or a URL). Text and image give a
``(text, image)`` query; ``custom_embedding_strs=[]`` with an image searches by the image alone
while ``query_str`` stays the question for the LLM. Several strings are encoded separately and
their multi-vectors averaged position by position. ``QueryBundle.embedding`` (a single vector)
is not used: the retriever needs the multi-vector and encodes the query itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import torch
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from metaembed_rag import Hit, TwoStageRetriever
from metaembed_rag.budget import BudgetLike
from metaembed_rag.frameworks.llama_index import MetaEmbedEmbedding, to_core_filter
from metaembed_rag.frameworks.llama_index.inputs import DEFAULT_URL_TIMEOUT, encode_query_bundle
from metaembed_rag.index import DEFAULT_FETCH_K, SearchParams
from metaembed_rag.relevance import relevance_scores

if TYPE_CHECKING:  # the vector-store package is not a dependency (see from_vector_store)
    from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

__all__ = ["DEFAULT_IMAGE_KEY", "MetaEmbedRetriever", "hit_to_node"]

#: What :meth:`MetaEmbedRetriever.from_vector_store` uses of a store.
_STORE_API = (
    "embed_model",
    "client",
    "query_multi_vectors",
    "fetch_k",
    "recall_budget",
    "rerank_budget",
    "mode",
)

#: Metadata key holding an image document's file path (what ``metaembed-rag index`` and
#: ``Collection`` write for images and PDF page images).
DEFAULT_IMAGE_KEY = "image"

Mode = Literal["two_stage", "exhaustive"]


def hit_to_node(hit: Hit, *, image_key: str = DEFAULT_IMAGE_KEY) -> BaseNode:
    """A LlamaIndex node for a search hit.

    * an index filled by ``MetaEmbedVectorStore``: the original node (its class, text,
      metadata and relationships; an ``ImageNode`` keeps its image, path or URL);
    * a hit whose metadata has a string under ``image_key`` (``"image"``, what the core
      ingestion writes for images): an ``ImageNode`` with that ``image_path``;
    * a hit without stored text (a document added as an image): an ``ImageNode`` with the
      hit's metadata and no image source (add images with ``metadatas=[{"image": path}]`` to
      get ``image_path`` back);
    * otherwise a ``TextNode`` with the hit's id, text and metadata.
    """
    if "_node_content" in hit.metadata:
        return metadata_dict_to_node(hit.metadata, text=hit.text or "")
    metadata = dict(hit.metadata)
    image = metadata.get(image_key)
    if isinstance(image, str) and image:
        return ImageNode(id_=hit.id, image_path=image, text=hit.text or "", metadata=metadata)
    if hit.text is None:
        return ImageNode(id_=hit.id, text="", metadata=metadata)
    return TextNode(id_=hit.id, text=hit.text, metadata=metadata)


class MetaEmbedRetriever(BaseRetriever):
    """Two-stage MetaEmbed retrieval as a LlamaIndex retriever.

    Args:
        retriever: the :class:`TwoStageRetriever` to search (e.g.
            ``TwoStageRetriever.create(model)`` filled with ``add_documents``); or use
            :meth:`from_vector_store`.
        similarity_top_k: nodes returned per query.
        fetch_k: coarse candidates per query (``>=`` the number of matching documents makes
            the search exact, equal to exhaustive MaxSim); default
            ``metaembed_rag.index.DEFAULT_FETCH_K``.
        recall_budget: budget of the recall stage; ``(1,1)`` (default) is the coarse vector
            alone.
        rerank_budget: budget of the final exact MaxSim (``None``: the model's largest).
        filters: LlamaIndex ``MetadataFilters`` applied inside the search (translated to the
            core filter syntax, see ``llama_index.vector_stores.metaembed.filters``); can be
            reassigned at any time (``retriever.filters = ...``).
        mode: ``"two_stage"`` (default) or ``"exhaustive"``.
        scorer: the exact stage's scorer: ``None`` (MaxSim), ``"pooled"``, a folder saved by
            ``metaembed-rag train-scorer`` or a ``metaembed_rag.scorers.Scorer``
            (``docs/scorers.md``).
        instruction: task instruction put before every query text.
        url_timeout: seconds to wait for an image URL in ``QueryBundle.image_path``.
        image_key: metadata key of an image document's path (see :func:`hit_to_node`).
        score_mode: ``"maxsim"`` (default: node scores are raw MaxSim sums) or
            ``"relevance"`` (the model's calibrated 0-1 relevance, docs/scores.md).
        callback_manager, verbose: as for any LlamaIndex retriever.
    """

    def __init__(
        self,
        retriever: TwoStageRetriever,
        *,
        similarity_top_k: int = 10,
        fetch_k: int = DEFAULT_FETCH_K,
        recall_budget: BudgetLike = (1, 1),
        rerank_budget: BudgetLike | None = None,
        filters: MetadataFilters | None = None,
        mode: Mode = "two_stage",
        scorer: Any = None,
        instruction: str | None = None,
        url_timeout: float = DEFAULT_URL_TIMEOUT,
        image_key: str = DEFAULT_IMAGE_KEY,
        score_mode: Literal["maxsim", "relevance"] = "maxsim",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        _vector_store: MetaEmbedVectorStore | None = None,
    ) -> None:
        if not isinstance(retriever, TwoStageRetriever):
            raise TypeError(
                "retriever must be a metaembed_rag.TwoStageRetriever, got "
                f"{type(retriever).__name__}; use MetaEmbedRetriever.from_vector_store(store) "
                "for a MetaEmbedVectorStore."
            )
        params = SearchParams(
            k=similarity_top_k,
            fetch_k=fetch_k,
            recall_budget=recall_budget,
            rerank_budget=rerank_budget,
            mode=mode,
            scorer=scorer,
        )
        self.retriever = retriever
        self._store = _vector_store
        self.similarity_top_k = params.k
        self.fetch_k = params.fetch_k
        self.recall_budget, self.rerank_budget = params.check_budgets(retriever.model.budgets)
        self._filters: MetadataFilters | None = None
        self.filters = filters
        self.mode: Mode = params.mode
        self.scorer = params.scorer
        if self.scorer is not None:
            self.scorer.check_compatible(retriever.index.fingerprint, retriever.index.dim)
        self.instruction = instruction
        self.url_timeout = url_timeout
        self.image_key = image_key
        if score_mode not in ("maxsim", "relevance"):
            raise ValueError(f"score_mode must be 'maxsim' or 'relevance', got {score_mode!r}.")
        self.score_mode = score_mode
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_vector_store(
        cls,
        vector_store: MetaEmbedVectorStore,
        *,
        similarity_top_k: int = 10,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        rerank_budget: BudgetLike | None = None,
        mode: Mode | None = None,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> MetaEmbedRetriever:
        """A retriever over a :class:`MetaEmbedVectorStore` (shared, not copied: nodes added
        to the store are searchable at once; every search holds the store's lock and returns
        the stored nodes, ``ImageNode``s included).

        ``fetch_k``, ``recall_budget``, ``rerank_budget`` and ``mode`` default to the store's
        settings, ``instruction`` to the store embedding's ``query_instruction``; other
        ``kwargs`` as in the constructor.
        """
        missing = [name for name in _STORE_API if not hasattr(vector_store, name)]
        if missing or not isinstance(vector_store.embed_model, MetaEmbedEmbedding):
            raise TypeError(
                "vector_store must be a llama_index.vector_stores.metaembed."
                f"MetaEmbedVectorStore, got {type(vector_store).__name__}"
                + (f" (it has no {', '.join(missing)})." if missing else ".")
            )
        embed = vector_store.embed_model
        two_stage = TwoStageRetriever(embed.model, vector_store.client)
        return cls(
            two_stage,
            similarity_top_k=similarity_top_k,
            fetch_k=vector_store.fetch_k if fetch_k is None else fetch_k,
            recall_budget=vector_store.recall_budget if recall_budget is None else recall_budget,
            rerank_budget=vector_store.rerank_budget if rerank_budget is None else rerank_budget,
            mode=vector_store.mode if mode is None else mode,
            instruction=embed.query_instruction if instruction is None else instruction,
            url_timeout=kwargs.pop("url_timeout", embed.url_timeout),
            _vector_store=vector_store,
            **kwargs,
        )

    @property
    def vector_store(self) -> MetaEmbedVectorStore | None:
        """The store searched (set by :meth:`from_vector_store`), else ``None``."""
        return self._store

    @property
    def filters(self) -> MetadataFilters | None:
        """The LlamaIndex filters of every search (assigning re-validates them)."""
        return self._filters

    @filters.setter
    def filters(self, value: MetadataFilters | None) -> None:
        if value is not None and not isinstance(value, MetadataFilters):
            raise TypeError(
                f"filters must be llama_index MetadataFilters or None, got {type(value).__name__}."
            )
        to_core_filter(value, elements=self._store is not None)  # fail now, not at search
        self._filters = value

    def _query_vectors(self, query_bundle: QueryBundle) -> torch.Tensor:
        """``(R_q, D)`` multi-vector of the query (see the module docstring)."""
        if self._store is not None:
            embed = self._store.embed_model
            max_length, batch_size = embed.max_length, embed.embed_batch_size
        else:
            max_length, batch_size = None, 32  # as TwoStageRetriever.search encodes
        return encode_query_bundle(
            self.retriever.model,
            query_bundle,
            instruction=self.instruction,
            max_length=max_length,
            batch_size=batch_size,
            timeout=self.url_timeout,
        )

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        q = self._query_vectors(query_bundle)
        if self._store is not None:
            result = self._store.query_multi_vectors(
                q,
                self.similarity_top_k,
                filters=self._filters,
                fetch_k=self.fetch_k,
                recall_budget=self.recall_budget,
                rerank_budget=self.rerank_budget,
                mode=self.mode,
                score_mode=self.score_mode,
                scorer=self.scorer,
            )
            return [
                NodeWithScore(node=node, score=score)
                for node, score in zip(result.nodes or [], result.similarities or [], strict=True)
            ]
        if len(self.retriever.index) == 0:
            return []
        params = SearchParams(
            k=self.similarity_top_k,
            fetch_k=self.fetch_k,
            recall_budget=self.recall_budget,
            rerank_budget=self.rerank_budget,
            filter=to_core_filter(self._filters),
            mode=self.mode,
            scorer=self.scorer,
        )
        hits = self.retriever.search_vectors(q.unsqueeze(0), params=params)[0]
        scores = [h.score for h in hits]
        if self.score_mode == "relevance":
            scores = relevance_scores(self.retriever.model, scores, self.rerank_budget)
        return [
            NodeWithScore(node=hit_to_node(h, image_key=self.image_key), score=s)
            for h, s in zip(hits, scores, strict=True)
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
