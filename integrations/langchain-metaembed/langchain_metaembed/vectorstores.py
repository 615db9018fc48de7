"""``MetaEmbedVectorStore``: a LangChain ``VectorStore`` on a ``MultiVectorIndex``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from metaembed_rag import Budget
from metaembed_rag.budget import BudgetLike, check_budget
from metaembed_rag.index import (
    DEFAULT_FETCH_K,
    MultiVectorIndex,
    SearchMode,
    SearchParams,
    mmr_search,
)
from metaembed_rag.relevance import relevance_scores

from . import _single as single
from ._persist import CONFIG_NAME, INDEX_DIR, read_store, save_store
from ._records import StoreRecords, document
from .embeddings import MetaEmbedEmbeddings

__all__ = ["MetaEmbedVectorStore", "CONFIG_NAME", "INDEX_DIR"]

logger = logging.getLogger(__name__)


class MetaEmbedVectorStore(StoreRecords, VectorStore):
    """A vector store that keeps MetaEmbed multi-vectors and searches them at any budget.

    Two modes, chosen by ``embedding``:

    * **multi-vector** (``embedding`` is a :class:`MetaEmbedEmbeddings`): every document is
      stored once at its full ``R_c = 64`` vectors in a
      :class:`metaembed_rag.index.MultiVectorIndex`; a search encodes the query's ``R_q = 16``
      vectors, recalls ``fetch_k`` candidates on one coarse vector per document, and reranks
      them with exact MaxSim at ``budget`` (default: the largest, (16,64)). Scores are MaxSim
      sums of unit vectors: at budget ``(r_q, r_c)`` they lie in ``[-r_q, r_q]``.
    * **single-vector** (any other LangChain ``Embeddings``): each text is one vector from
      ``embed_documents`` (stored float32, exact), a query is ``embed_query``, and the score is
      their dot product (unbounded when the embeddings are not unit length); only budget (1,1)
      exists. This is what LangChain's standard vector-store tests drive with their fake
      embeddings.

    Scores (docs/scores.md): ``similarity_search_with_score`` returns the raw MaxSim sum;
    ``similarity_search_with_relevance_scores`` (LangChain's ``[0, 1]`` scale) returns the
    model's calibrated relevance at the budget used (multi-vector:
    :func:`metaembed_rag.relevance.relevance_scores`, a logistic fitted on held-out training
    pairs and shipped with the model; 0.5 is a usable threshold), and ``(cos + 1) / 2`` with
    ``cos = score / (|q| |d|)`` in single-vector mode.

    ``max_marginal_relevance_search`` (and ``_by_vector``, and their async versions) picks
    ``k`` of ``fetch_k`` candidates for relevance and diversity (``lambda_mult``), with
    document-document similarity from the stored vectors (:mod:`metaembed_rag.index.diversity`;
    nothing is re-encoded).

    Args:
        embedding: the embeddings (see above).
        index: an existing index to use (multi-vector: built for the same model; single-vector:
            one vector per document). Default: a new in-RAM index (created on the first add in
            single-vector mode, when the vector width is known).
        fetch_k: default coarse candidates per search.
        budget: default rerank budget (``None``: the largest the index allows); this and
            ``recall_budget`` must be trained budgets (:attr:`budgets`), checked here.
        recall_budget: default recall budget ((1,1): the coarse vector alone; a larger trained
            budget runs a cascade, see ``MultiVectorIndex.search``).
        mode: default search mode, ``"two_stage"`` or ``"exhaustive"`` (exact MaxSim over every
            matching document).
        index_kwargs: arguments for a new ``MultiVectorIndex`` (``dtype=``, ``path=``,
            ``coarse_vector=``, ``coarse_index=`` ...).
        title_key: multi-vector mode: a metadata key whose string value the model reads as
            each document's title, before its ``page_content`` (``{"title", "text"}``
            inputs: the default model keeps the title out of its segment vectors, so a title
            that every chunk of a page repeats does not match a query equally in each chunk).
            ``page_content`` is stored and returned unchanged; documents without the key are
            read as their text. Saved with the store.

    Filters are ``MultiVectorIndex`` metadata filters (dicts: ``{"year": {"$gte": 2015}}``,
    ``$in``, ``$and``/``$or``/``$not``, dotted paths); they apply inside the coarse stage, so
    ``k`` matching documents come back whenever ``k`` match. Metadata must be JSON-serialisable.

    Writes and searches are serialised by a lock, so the async methods (LangChain runs the sync
    ones in a thread pool) are safe to run concurrently.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        index: MultiVectorIndex | None = None,
        fetch_k: int = DEFAULT_FETCH_K,
        budget: BudgetLike | None = None,
        recall_budget: BudgetLike = (1, 1),
        mode: SearchMode = "two_stage",
        index_kwargs: dict[str, Any] | None = None,
        title_key: str | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(
                f"embedding must be a LangChain Embeddings (e.g. MetaEmbedEmbeddings()), got "
                f"{type(embedding).__name__}."
            )
        if title_key is not None and (not isinstance(title_key, str) or not title_key):
            raise ValueError(
                f"title_key must be a metadata key (a non-empty str), got {title_key!r}"
            )
        if title_key is not None and not isinstance(embedding, MetaEmbedEmbeddings):
            raise ValueError(
                f"title_key needs MetaEmbedEmbeddings (its model reads titles); "
                f"{type(embedding).__name__} reads one text: join the title into page_content"
            )
        self.title_key = title_key
        self._embedding = embedding
        self._lock = threading.RLock()
        self._index_kwargs = dict(index_kwargs or {})
        defaults = SearchParams(
            fetch_k=fetch_k, recall_budget=recall_budget, rerank_budget=budget, mode=mode
        )
        self.fetch_k = defaults.fetch_k
        self.budget: Budget | None = defaults.rerank_budget
        self.recall_budget: Budget = defaults.recall_budget
        self.mode: SearchMode = defaults.mode
        self._index: MultiVectorIndex | None = None
        if self.is_multivector:
            model = self._meta.client
            if index is None:
                index = MultiVectorIndex.for_model(model, **self._index_kwargs)
            index.check_compatible(model)
            self._index = index
        elif index is not None:
            if index.num_vectors != 1:
                raise ValueError(
                    f"In single-vector mode (embedding {type(embedding).__name__}) the index must "
                    f"store 1 vector per document, but it stores {index.num_vectors}; use "
                    "MetaEmbedEmbeddings for a multi-vector index."
                )
            self._index = index
        owner = self._budget_owner()
        check_budget(self.budget, self.budgets, "budget", owner)
        check_budget(self.recall_budget, self.budgets, "recall_budget", owner)

    # ------------------------------------------------------------------ properties
    @property
    def embeddings(self) -> Embeddings:
        """The embeddings this store encodes with."""
        return self._embedding

    @property
    def is_multivector(self) -> bool:
        """True when the store keeps MetaEmbed multi-vectors (``MetaEmbedEmbeddings``)."""
        return isinstance(self._embedding, MetaEmbedEmbeddings)

    @property
    def _meta(self) -> MetaEmbedEmbeddings:
        assert isinstance(self._embedding, MetaEmbedEmbeddings)
        return self._embedding

    @property
    def index(self) -> MultiVectorIndex | None:
        """The underlying index (``None`` in single-vector mode before the first add)."""
        return self._index

    @property
    def budgets(self) -> list[Budget]:
        """The budgets searches may use, smallest first: the model's trained budgets
        (multi-vector mode; ``[(1,1), ..., (16,64)]`` for the default model) or ``[(1,1)]``
        (single-vector mode)."""
        if self.is_multivector:
            assert self._index is not None
            return list(self._index.budgets)
        return [Budget(1, 1)]

    def _budget_owner(self) -> str:
        """Whose budgets :attr:`budgets` are, for error messages."""
        if self.is_multivector:
            return f"this store's model ({self._meta.model_name})"
        return single.owner(self._embedding)

    @property
    def default_budget(self) -> Budget:
        """The rerank budget of a search that names none: ``budget`` if set, else the largest
        of :attr:`budgets`."""
        return self.budget if self.budget is not None else self.budgets[-1]

    def __len__(self) -> int:
        """Number of documents stored."""
        return 0 if self._index is None else len(self._index)

    def __repr__(self) -> str:
        kind = "multi-vector" if self.is_multivector else "single-vector"
        return f"MetaEmbedVectorStore({kind}, docs={len(self)}, embedding={type(self._embedding).__name__})"

    # ------------------------------------------------------------------ writing
    def _document_vectors(
        self, texts: list[str], batch_size: int | None, metas: list[dict[str, Any]], ids: list[str]
    ) -> np.ndarray:
        """``(n, K, D)`` float32: multi-vectors, or ``(n, 1, D)`` single vectors."""
        if not self.is_multivector:
            return single.document_vectors(self._embedding, texts, self._held_dim)
        emb = self._meta
        if batch_size is not None and batch_size != emb.batch_size:
            emb = emb.model_copy(update={"batch_size": batch_size})
        return emb.encode_documents(self._model_inputs(texts, metas, ids)).numpy()

    def _model_inputs(
        self, texts: list[str], metas: list[dict[str, Any]], ids: list[str]
    ) -> list[Any]:
        """The texts, as ``{"title", "text"}`` where ``title_key`` names a title (a blank one
        reads as no title: the core's input rule, ``metaembed_rag.inputs``)."""
        if self.title_key is None:
            return list(texts)
        out: list[Any] = []
        for text, meta, doc_id in zip(texts, metas, ids, strict=True):
            title = meta.get(self.title_key)
            if title is not None and not isinstance(title, str):
                raise TypeError(
                    f"metadata {self.title_key!r} of {doc_id!r} is the title_key and must be a "
                    f"str, got {type(title).__name__}."
                )
            out.append(text if title is None else {"title": title, "text": text})
        return out

    @property
    def _held_dim(self) -> int | None:
        return None if self._index is None else self._index.dim

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> MetaEmbedVectorStore:
        """A new store holding ``texts`` (``kwargs`` go to the constructor)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # ------------------------------------------------------------------ search
    def _query_vectors(self, query: str) -> torch.Tensor:
        if self.is_multivector:
            return self._meta.encode_queries([query])
        return single.query_vectors(self._embedding, query, self._held_dim)

    def _params(
        self,
        k: int,
        filter: dict[str, Any] | None,
        num_query_vectors: int,
        where: str,
        **options: Any,
    ) -> SearchParams:
        """This call's :class:`SearchParams`: the store's defaults with ``options`` (``budget``,
        ``fetch_k``, ``recall_budget``, ``mode``, ``hybrid``, ``hybrid_weight``,
        ``scorer``) applied;
        budgets checked against :attr:`budgets` (the message lists the valid ones)."""
        known = {"budget", "fetch_k", "recall_budget", "mode", "hybrid", "hybrid_weight", "scorer"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"MetaEmbedVectorStore.{where} got unexpected argument(s) {unknown}; the search "
                "options are budget, fetch_k, recall_budget, mode, hybrid, hybrid_weight and scorer."
            )
        if filter is not None and not isinstance(filter, dict):
            raise TypeError(
                f"filter must be a metadata filter dict such as {{'year': {{'$gte': 2015}}}}, "
                f"got {type(filter).__name__}."
            )
        owner = self._budget_owner()
        rerank = check_budget(options.get("budget"), self.budgets, "budget", owner)
        recall = check_budget(options.get("recall_budget"), self.budgets, "recall_budget", owner)
        if rerank is None:
            # A single query vector (search by one vector) can only be scored at (1,1).
            rerank = Budget(1, 1) if num_query_vectors == 1 else self.default_budget
        fetch_k = options.get("fetch_k")
        return SearchParams(
            k=k,
            fetch_k=self.fetch_k if fetch_k is None else fetch_k,
            recall_budget=recall or self.recall_budget,
            rerank_budget=rerank,
            filter=filter,
            mode=options.get("mode") or self.mode,
            hybrid=options.get("hybrid"),
            hybrid_weight=options.get("hybrid_weight"),
            scorer=options.get("scorer"),
        )

    def _search(
        self,
        queries: torch.Tensor,
        k: int,
        filter: Any,
        where: str,
        text: str | None = None,
        **options: Any,
    ) -> tuple[list[tuple[Document, float]], Budget]:
        """Search with ``queries`` ``(1, r_q, D)`` float32 (``text``: the query, for a hybrid
        search): ``([(Document, score)], the rerank budget used)``."""
        params = self._params(k, filter, queries.shape[1], where, **options)
        assert params.rerank_budget is not None
        with self._lock:
            if self._index is None or len(self._index) == 0:
                return [], params.rerank_budget
            texts = None if text is None else [text]
            hits = self._index.search(queries, params=params, texts=texts)[0]
        return [(document(h.id, h.text, h.metadata), h.score) for h in hits], params.rerank_budget

    def search_with_budget(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **options: Any
    ) -> tuple[list[tuple[Document, float]], Budget]:
        """:meth:`similarity_search_with_score` that also returns the rerank budget it used
        (``budget`` if given, else :attr:`default_budget`): ``([(Document, score)], Budget)``."""
        return self._search(
            self._query_vectors(query), k, filter, "similarity_search", query, **options
        )

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **options: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores, best first.

        Args:
            query: the query text.
            k: documents to return (fewer when fewer match).
            filter: metadata filter (see the class docstring).
            options: this call's ``budget`` (rerank budget ``(r_q, r_c)``), ``fetch_k``,
                ``recall_budget``, ``mode`` (default: the store's; see the class docstring);
                ``hybrid="rrf"`` or ``"weighted"`` (with ``hybrid_weight``, the multi-vector
                share, default 0.5) fuses the ranking with BM25 over the query text
                (``as_retriever(search_kwargs={"hybrid": "rrf"})`` for a retriever).

        Returns:
            ``(Document, score)`` pairs; documents carry their ``id``. Scores are MaxSim sums
            at ``budget`` (in ``[-r_q, r_q]``; dot products in single-vector mode; the fused
            score with ``hybrid``). An empty store returns ``[]``.
        """
        return self.search_with_budget(query, k, filter, **options)[0]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **options: Any
    ) -> list[Document]:
        """The ``k`` best documents, best first (arguments as in
        :meth:`similarity_search_with_score`)."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **options)]

    def similarity_search_by_vector(
        self,
        embedding: list[float] | list[list[float]],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **options: Any,
    ) -> list[Document]:
        """Search with precomputed query vectors: one vector of ``D`` floats (scored at
        budget (1,1)) or a query multi-vector (``r_q`` lists of ``D`` floats, e.g. from
        ``MetaEmbedEmbeddings.embed_query_multivector``)."""
        pairs = self.similarity_search_with_score_by_vector(embedding, k, filter, **options)
        return [d for d, _ in pairs]

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float] | list[list[float]],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **options: Any,
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_by_vector`, with scores."""
        q = _query_tensor(embedding)
        return self._search(q, k, filter, "similarity_search_by_vector", **options)[0]

    # ------------------------------------------------------------------ MMR
    def _mmr(
        self,
        queries: torch.Tensor,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        filter: dict[str, Any] | None,
        where: str,
        **options: Any,
    ) -> list[Document]:
        params = self._params(k, filter, queries.shape[1], where, fetch_k=fetch_k, **options)
        with self._lock:
            if self._index is None or len(self._index) == 0:
                return []
            hits = mmr_search(self._index, queries[0], params, lambda_mult)
        return [document(h.id, h.text, h.metadata) for h in hits]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **options: Any,
    ) -> list[Document]:
        """``k`` documents chosen for relevance and diversity among ``fetch_k`` candidates.

        Args:
            query: the query text.
            k: documents to return.
            fetch_k: candidates searched (the store's two-stage search at the budget used).
            lambda_mult: ``1`` = relevance only, ``0`` = diversity only.
            filter: metadata filter.
            options: ``budget``, ``recall_budget``, ``mode`` as in
                :meth:`similarity_search_with_score`.
        """
        return self._mmr(
            self._query_vectors(query),
            k,
            fetch_k,
            lambda_mult,
            filter,
            "max_marginal_relevance_search",
            **options,
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float] | list[list[float]],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **options: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` with precomputed query vectors (one vector,
        scored at (1,1), or a query multi-vector; see :meth:`similarity_search_by_vector`)."""
        return self._mmr(
            _query_tensor(embedding),
            k,
            fetch_k,
            lambda_mult,
            filter,
            "max_marginal_relevance_search_by_vector",
            **options,
        )

    # ------------------------------------------------------------------ relevance scores
    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **options: Any
    ) -> list[tuple[Document, float]]:
        """``(Document, relevance)`` with relevance in ``[0, 1]``, best first (arguments as in
        :meth:`similarity_search_with_score`).

        * multi-vector: the model's calibrated relevance of the raw MaxSim at the budget used
          (:func:`metaembed_rag.relevance.relevance_scores`: the logistic shipped with the
          model; a model without one gets ``(score / r_q + 1) / 2`` and a warning).
        * single-vector: ``(cos + 1) / 2`` with ``cos = score / (|q| |d|)`` from the query
          vector and the stored document vector, so embeddings of any length map to
          ``[0, 1]`` (a zero vector has ``cos = 0``: relevance 0.5). For unit-length
          embeddings this is ``(score + 1) / 2``; for others the relevance order can differ
          from the result order, which is by dot product.
        """
        q = self._query_vectors(query)
        where = "similarity_search_with_relevance_scores"
        with self._lock:  # the documents found stay in the store while their norms are read
            pairs, used = self._search(q, k, filter, where, **options)
            if self.is_multivector:
                rel = relevance_scores(self._meta.client, [s for _, s in pairs], used)
                return [(d, r) for (d, _), r in zip(pairs, rel, strict=True)]
            q_norm = float(q.norm())
            out: list[tuple[Document, float]] = []
            for doc, score in pairs:
                d_norm = float(self.get_vectors(str(doc.id))[0].norm())
                cos = score / (q_norm * d_norm) if q_norm > 0 and d_norm > 0 else 0.0
                out.append((doc, _clip01((cos + 1.0) / 2.0)))
            return out

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`_similarity_search_with_relevance_scores` (runs in a thread)."""
        return await run_in_executor(
            None, self._similarity_search_with_relevance_scores, query, k, **kwargs
        )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """``score -> relevance`` at the store's :attr:`default_budget` (multi-vector mode):
        the model's calibrated relevance (see :meth:`_similarity_search_with_relevance_scores`).

        Raises:
            NotImplementedError: single-vector mode, where relevance needs the vectors'
                lengths, not the score alone; use ``similarity_search_with_relevance_scores``.
        """
        if not self.is_multivector:
            raise NotImplementedError(
                "A single-vector MetaEmbedVectorStore computes relevance from the score and "
                "both vectors' lengths (cosine), not from the score alone: call "
                "similarity_search_with_relevance_scores(query, ...) instead."
            )
        model, budget = self._meta.client, self.default_budget
        return lambda score: relevance_scores(model, [score], budget)[0]

    def close(self) -> None:
        """Release the index's memory maps (the store is unusable afterwards)."""
        with self._lock:
            if self._index is not None:
                self._index.close()

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Save to ``folder``: the index in ``folder/index`` (atomic, checksummed, no pickle)
        and the store's settings in ``folder/langchain_metaembed.json`` (written last, in the
        core's :class:`~metaembed_rag.index.settings.StoreSettings` format).

        The settings record what the store was built with, so :meth:`load` can refuse other
        embeddings up front: the embeddings' class and model name, the model fingerprint
        (multi-vector) and the vector width ``dim`` / vectors per document ``num_vectors``.

        Returns:
            the folder.
        """
        return save_store(self, folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        embedding: Embeddings,
        *,
        mmap: bool = True,
        verify: bool = True,
        allow_other_embeddings: bool = False,
        **kwargs: Any,
    ) -> MetaEmbedVectorStore:
        """Open a store written by :meth:`save` (or by langchain-metaembed before the shared
        settings format: that file is migrated, and rewritten by the next :meth:`save`).

        Args:
            folder: the saved folder.
            embedding: the embeddings to query with: a ``MetaEmbedEmbeddings`` of the model the
                store was built with (multi-vector store; its fingerprint is compared first),
                the embeddings it was built with (single-vector store; same class and model
                name, and one probe ``embed_query`` call checks the vector width).
            mmap / verify: see ``MultiVectorIndex.load`` (``mmap=True`` keeps working in
                ``folder/index``: later adds append there).
            allow_other_embeddings: single-vector store only: accept embeddings of another
                class or model name (e.g. a caching wrapper around the same model); the width
                is still checked.
            kwargs: override the saved search defaults (``fetch_k``, ``budget``,
                ``recall_budget``, ``mode``) and ``title_key``.

        Raises:
            FileNotFoundError: no saved store in ``folder``.
            ValueError: the settings file is not valid JSON or not a store's; a multi-vector
                store opened with other embeddings or the reverse; single-vector embeddings of
                another class, model name or width.
            metaembed_rag.index.IndexMismatchError: a multi-vector store built with another
                model (the message names the model it was built with).
        """
        index, defaults = read_store(folder, embedding, mmap, verify, allow_other_embeddings)
        return cls(embedding, index=index, **{**defaults, **kwargs})


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _query_tensor(embedding: list[float] | list[list[float]]) -> torch.Tensor:
    """``(1, r_q, D)`` float32 from one vector or a query multi-vector."""
    q = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
    if q.dim() not in (1, 2):
        raise ValueError(
            f"embedding must be one vector (D floats) or a multi-vector (r_q x D), got "
            f"shape {tuple(q.shape)}."
        )
    return q.view(1, 1, -1) if q.dim() == 1 else q.unsqueeze(0)
