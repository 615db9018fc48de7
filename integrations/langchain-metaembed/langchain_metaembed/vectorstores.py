"""``MetaEmbedVectorStore``: a LangChain ``VectorStore`` on a ``MultiVectorIndex``."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from metaembed_rag import Budget
from metaembed_rag.budget import BudgetLike
from metaembed_rag.index import IndexMismatchError, MultiVectorIndex

from ._models import check_budget, parse_budget
from .embeddings import MetaEmbedEmbeddings

__all__ = ["MetaEmbedVectorStore", "CONFIG_NAME", "INDEX_DIR"]

logger = logging.getLogger(__name__)

#: The store's settings file inside a saved folder (the index itself is in ``INDEX_DIR``).
CONFIG_NAME = "langchain_metaembed.json"
INDEX_DIR = "index"
_FORMAT = "langchain-metaembed/vectorstore"
_FORMAT_VERSION = 1

SearchMode = Literal["two_stage", "exhaustive"]


class MetaEmbedVectorStore(VectorStore):
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

    Relevance scores (``similarity_search_with_relevance_scores``, LangChain's ``[0, 1]``
    scale) are ``(score / r_q + 1) / 2`` at the budget used (multi-vector), and
    ``(cos + 1) / 2`` with ``cos = score / (|q| |d|)`` (single-vector), so they stay in
    ``[0, 1]`` for embeddings of any length.

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
        fetch_k: int = 200,
        budget: BudgetLike | None = None,
        recall_budget: BudgetLike = (1, 1),
        mode: SearchMode = "two_stage",
        index_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(
                f"embedding must be a LangChain Embeddings (e.g. MetaEmbedEmbeddings()), got "
                f"{type(embedding).__name__}."
            )
        self._embedding = embedding
        self._lock = threading.RLock()
        self._index_kwargs = dict(index_kwargs or {})
        self.fetch_k = _check_positive(fetch_k, "fetch_k")
        self.budget: Budget | None = parse_budget(budget, "budget")
        self.recall_budget: Budget = parse_budget(recall_budget, "recall_budget") or Budget(1, 1)
        self.mode: SearchMode = _check_mode(mode)
        self._index: MultiVectorIndex | None = None
        if self.is_multivector:
            model = self._meta.client
            if index is None:
                index = MultiVectorIndex.for_model(model, **self._index_kwargs)
            _check_index_for_model(index, self._meta)
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
        self.budget = check_budget(self.budget, self.budgets, "budget", owner)
        self.recall_budget = check_budget(
            self.recall_budget, self.budgets, "recall_budget", owner
        ) or Budget(1, 1)

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
        return (
            f"a single-vector store ({type(self._embedding).__name__} embeddings: one vector "
            "per document, so only (1,1); multi-vector budgets need MetaEmbedEmbeddings)"
        )

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
    def _document_vectors(self, texts: list[str], batch_size: int | None) -> np.ndarray:
        """``(n, K, D)`` float32: multi-vectors, or ``(n, 1, D)`` single vectors."""
        if self.is_multivector:
            emb = self._meta
            if batch_size is not None and batch_size != emb.batch_size:
                emb = emb.model_copy(update={"batch_size": batch_size})
            return emb.encode_documents(texts).numpy()
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"{type(self._embedding).__name__}.embed_documents returned shape "
                f"{vectors.shape} for {len(texts)} texts; expected (n, dim)."
            )
        self._check_width(vectors.shape[-1], "embed_documents")
        return vectors[:, None, :]

    def _check_width(self, width: int, method: str) -> None:
        """Single-vector mode: ``width`` (floats per vector from ``method``) must be the
        index's, or the embeddings are not the ones the store was built with."""
        if self._index is not None and width != self._index.dim:
            raise ValueError(
                f"{type(self._embedding).__name__}.{method} returned {width}-float vectors but "
                f"this store holds {self._index.dim}-float vectors: these are not the "
                "embeddings the store was built with. Use those (same model and size), or "
                "build a new store for these embeddings."
            )

    def _single_index(self, dim: int) -> MultiVectorIndex:
        kwargs = {"dtype": "float32", "coarse_vector": "first", **self._index_kwargs}
        return MultiVectorIndex(dim, num_vectors=1, budgets=[(1, 1)], **kwargs)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode texts and add them; an id already in the store is replaced (upsert).

        Args:
            texts: the texts.
            metadatas: one JSON-serialisable dict per text (or ``None``).
            ids: one id per text; ``None`` entries (or ``ids=None``) get a new UUID4.
            batch_size: encoding batch size (default: the embeddings' own).

        Returns:
            the ids, in the order of ``texts``.

        Raises:
            ValueError: lengths differ, duplicate ids within the call, an embedding of the
                wrong width. TypeError: metadata that is not a JSON-serialisable dict.
        """
        _reject_kwargs(kwargs, "add_texts")
        texts = list(texts)
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{n} texts but {len(metadatas)} metadatas were given.")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{n} texts but {len(ids)} ids were given.")
        out_ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        if n == 0:
            return []
        metas: list[dict[str, Any]] = []
        for doc_id, m in zip(out_ids, metadatas or [{}] * n, strict=True):
            if m is not None and not isinstance(m, dict):
                raise TypeError(f"metadata of {doc_id!r} must be a dict, got {type(m).__name__}.")
            metas.append(dict(m or {}))  # a copy: the caller's dict is never stored or changed
        vectors = self._document_vectors(texts, batch_size)
        with self._lock:
            if self._index is None:
                self._index = self._single_index(vectors.shape[-1])
            self._index.upsert(out_ids, vectors, texts, metas)
        return out_ids

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

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id; unknown ids are ignored. ``ids=None`` deletes **every**
        document (LangChain's ``VectorStore.delete`` contract); ``ids=[]`` deletes none.

        On a store opened with ``load(mmap=True)`` the saved folder changes only at the next
        :meth:`save`.

        Returns:
            ``True``.
        """
        _reject_kwargs(kwargs, "delete")
        if isinstance(ids, str):
            raise TypeError(f"ids must be a list of ids, not one string; wrap it: [{ids!r}].")
        with self._lock:
            if self._index is None:
                return True
            if ids is None:
                everything = self._index.ids
                self._index.delete(everything)
                logger.info("deleted all %d documents (delete() with ids=None)", len(everything))
            else:
                self._index.delete([str(i) for i in ids], missing_ok=True)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents with these ids, in the order given; unknown ids are skipped."""
        out: list[Document] = []
        with self._lock:
            if self._index is None:
                return out
            for doc_id in ids:
                if doc_id in self._index:
                    rec = self._index.get(doc_id)
                    out.append(_document(doc_id, rec["text"], rec["metadata"]))
        return out

    def get_vectors(self, doc_id: str) -> torch.Tensor:
        """The stored vectors of one document: float32 ``(R_c, D)`` (``(1, D)`` in
        single-vector mode), decoded from the index's storage dtype.

        Raises:
            KeyError: the id is not in the store.
        """
        with self._lock:
            if self._index is None:
                raise KeyError(f"Document id {doc_id!r} is not in the store (it is empty).")
            return self._index.get(doc_id)["vectors"]

    def stored_vectors(self, documents: Sequence[Document]) -> list[torch.Tensor | None]:
        """For each document, its stored vectors (float32 ``(R_c, D)``, decoded from the
        storage dtype) when the store holds a document with the same ``id`` **and** the same
        text, else ``None`` (no id, unknown id, or the text changed since it was stored).

        Used by :class:`~langchain_metaembed.MetaEmbedReranker` to skip re-encoding.
        """
        out: list[torch.Tensor | None] = []
        with self._lock:
            for doc in documents:
                rec = None
                if self._index is not None and doc.id is not None and doc.id in self._index:
                    rec = self._index.get(doc.id)
                same = rec is not None and (rec["text"] or "") == doc.page_content
                out.append(rec["vectors"] if same and rec is not None else None)
        return out

    # ------------------------------------------------------------------ search
    def _query_vectors(self, query: str) -> torch.Tensor:
        if self.is_multivector:
            return self._meta.encode_queries([query])
        vec = torch.tensor(self._embedding.embed_query(query), dtype=torch.float32)
        if vec.dim() != 1:
            raise ValueError(
                f"{type(self._embedding).__name__}.embed_query returned shape "
                f"{tuple(vec.shape)}; expected one list of floats."
            )
        self._check_width(vec.shape[0], "embed_query")
        return vec.view(1, 1, -1)

    def _resolve(
        self,
        k: int,
        fetch_k: int | None,
        budget: BudgetLike | None,
        recall_budget: BudgetLike | None,
        mode: SearchMode | None,
        num_query_vectors: int,
    ) -> tuple[int, int, Budget, Budget, SearchMode]:
        """Per-call settings, falling back to the store's; budgets checked against
        :attr:`budgets` (the message lists the valid ones)."""
        k = _check_positive(k, "k")
        fetch = self.fetch_k if fetch_k is None else _check_positive(fetch_k, "fetch_k")
        owner = self._budget_owner()
        rerank = check_budget(budget, self.budgets, "budget", owner)
        recall = check_budget(recall_budget, self.budgets, "recall_budget", owner)
        if rerank is None:
            # A single query vector (search by one vector) can only be scored at (1,1).
            rerank = Budget(1, 1) if num_query_vectors == 1 else self.default_budget
        return k, fetch, rerank, recall or self.recall_budget, _check_mode(mode or self.mode)

    def _search(
        self,
        queries: torch.Tensor,
        k: int,
        filter: dict[str, Any] | None,
        fetch_k: int | None,
        budget: BudgetLike | None,
        recall_budget: BudgetLike | None,
        mode: SearchMode | None,
    ) -> tuple[list[tuple[Document, float]], Budget]:
        """Search with ``queries`` ``(1, r_q, D)`` float32: ``([(Document, score)], the rerank
        budget used)``."""
        if filter is not None and not isinstance(filter, dict):
            raise TypeError(
                f"filter must be a metadata filter dict such as {{'year': {{'$gte': 2015}}}}, "
                f"got {type(filter).__name__}."
            )
        k, fetch, rerank, recall, mode_ = self._resolve(
            k, fetch_k, budget, recall_budget, mode, queries.shape[1]
        )
        with self._lock:
            if self._index is None or len(self._index) == 0:
                return [], rerank
            hits = self._index.search(
                queries, k, fetch_k=fetch, recall_budget=recall, rerank_budget=rerank,
                filter=filter, mode=mode_,
            )[0]  # fmt: skip
        return [(_document(h.id, h.text, h.metadata), h.score) for h in hits], rerank

    def search_with_budget(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        mode: SearchMode | None = None,
    ) -> tuple[list[tuple[Document, float]], Budget]:
        """:meth:`similarity_search_with_score` that also returns the rerank budget it used
        (``budget`` if given, else :attr:`default_budget`): ``([(Document, score)], Budget)``."""
        q = self._query_vectors(query)
        return self._search(q, k, filter, fetch_k, budget, recall_budget, mode)

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        mode: SearchMode | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores, best first.

        Args:
            query: the query text.
            k: documents to return (fewer when fewer match).
            filter: metadata filter (see the class docstring).
            budget: rerank budget ``(r_q, r_c)`` for this call (default: the store's).
            fetch_k: coarse candidates for this call (default: the store's).
            recall_budget / mode: see the class docstring.

        Returns:
            ``(Document, score)`` pairs; documents carry their ``id``. Scores are MaxSim sums
            at ``budget`` (in ``[-r_q, r_q]``; dot products in single-vector mode). An empty
            store returns ``[]``.
        """
        _reject_kwargs(kwargs, "similarity_search")
        pairs, _ = self.search_with_budget(
            query, k, filter, budget=budget, fetch_k=fetch_k, recall_budget=recall_budget,
            mode=mode,
        )  # fmt: skip
        return pairs

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` best documents, best first (arguments as in
        :meth:`similarity_search_with_score`)."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self,
        embedding: list[float] | list[list[float]],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Search with precomputed query vectors: one vector of ``D`` floats (scored at
        budget (1,1)) or a query multi-vector (``r_q`` lists of ``D`` floats, e.g. from
        ``MetaEmbedEmbeddings.embed_query_multivector``)."""
        return [
            d
            for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        ]

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float] | list[list[float]],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        mode: SearchMode | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_by_vector`, with scores."""
        _reject_kwargs(kwargs, "similarity_search_by_vector")
        q = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
        if q.dim() == 1:
            q = q.view(1, 1, -1)
        elif q.dim() == 2:
            q = q.unsqueeze(0)
        else:
            raise ValueError(
                f"embedding must be one vector (D floats) or a multi-vector (r_q x D), got "
                f"shape {tuple(q.shape)}."
            )
        return self._search(q, k, filter, fetch_k, budget, recall_budget, mode)[0]

    # ------------------------------------------------------------------ relevance scores
    def _similarity_search_with_relevance_scores(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        recall_budget: BudgetLike | None = None,
        mode: SearchMode | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """``(Document, relevance)`` with relevance in ``[0, 1]``, best first (arguments as in
        :meth:`similarity_search_with_score`).

        * multi-vector: ``(score / r_q + 1) / 2`` at the budget used. MetaEmbed vectors are
          unit length, so ``score`` lies in ``[-r_q, r_q]``; the value is clipped to
          ``[0, 1]`` against the rounding of the stored dtype (bfloat16: about 1e-3).
        * single-vector: ``(cos + 1) / 2`` with ``cos = score / (|q| |d|)`` from the query
          vector and the stored document vector, so embeddings of any length map to
          ``[0, 1]`` (a zero vector has ``cos = 0``: relevance 0.5). For unit-length
          embeddings this is ``(score + 1) / 2``; for others the relevance order can differ
          from the result order, which is by dot product.
        """
        _reject_kwargs(kwargs, "similarity_search_with_relevance_scores")
        q = self._query_vectors(query)
        with self._lock:  # the documents found stay in the store while their norms are read
            pairs, used = self._search(q, k, filter, fetch_k, budget, recall_budget, mode)
            if self.is_multivector:
                return [(d, _clip01((s / used.r_q + 1.0) / 2.0)) for d, s in pairs]
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
        ``(score / r_q + 1) / 2``, clipped to ``[0, 1]``.

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
        r_q = self.default_budget.r_q
        return lambda score: _clip01((score / r_q + 1.0) / 2.0)

    def close(self) -> None:
        """Release the index's memory maps (the store is unusable afterwards)."""
        with self._lock:
            if self._index is not None:
                self._index.close()

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Save to ``folder``: the index in ``folder/index`` (atomic, checksummed, no pickle)
        and the store's settings in ``folder/langchain_metaembed.json`` (written last).

        The settings record what the store was built with, so :meth:`load` can refuse other
        embeddings up front: the embeddings' class and model name, the model fingerprint
        (multi-vector) and the vector width ``dim`` / vectors per document ``num_vectors``.

        Returns:
            the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._index is not None:
                self._index.save(folder / INDEX_DIR)
            config = {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "mode": "multi" if self.is_multivector else "single",
                "embedding_class": _class_name(self._embedding),
                "model_name": _model_name(self._embedding),
                "fingerprint": self._meta.fingerprint() if self.is_multivector else None,
                "has_index": self._index is not None,
                "dim": None if self._index is None else self._index.dim,
                "num_vectors": None if self._index is None else self._index.num_vectors,
                "search": {
                    "fetch_k": self.fetch_k,
                    "budget": None if self.budget is None else self.budget.as_tuple(),
                    "recall_budget": self.recall_budget.as_tuple(),
                    "mode": self.mode,
                },
            }
        tmp = folder / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, folder / CONFIG_NAME)
        return folder

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
        """Open a store written by :meth:`save`.

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
                ``recall_budget``, ``mode``).

        Raises:
            FileNotFoundError: no saved store in ``folder``.
            ValueError: the settings file is not valid JSON or not a store's; a multi-vector
                store opened with other embeddings or the reverse; single-vector embeddings of
                another class, model name or width.
            metaembed_rag.index.IndexMismatchError: a multi-vector store built with another
                model (the message names the model it was built with).
        """
        folder = Path(folder)
        path = folder / CONFIG_NAME
        config = _read_config(folder, path)
        multi = isinstance(embedding, MetaEmbedEmbeddings)
        if (config["mode"] == "multi") != multi:
            raise ValueError(
                f"{folder} holds a {config['mode']}-vector store but "
                f"{type(embedding).__name__} was given; open it with "
                + (
                    f"{_open_hint(config.get('model_name'))}, the model it was built with."
                    if config["mode"] == "multi"
                    else f"the embeddings it was built with ({config.get('embedding_class')})."
                )
            )
        if multi:
            _check_saved_model(folder, config, embedding)  # type: ignore[arg-type]
        else:
            _check_saved_embeddings(folder, config, embedding, allow_other_embeddings)
        index = None
        if config.get("has_index"):
            model = embedding.client if multi else None  # type: ignore[attr-defined]
            index = MultiVectorIndex.load(
                folder / INDEX_DIR, mmap=mmap, verify=verify, model=model, dim=config.get("dim")
            )
        search = {**config.get("search", {}), **kwargs}
        return cls(embedding, index=index, **search)


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _model_name(embedding: Embeddings) -> str | None:
    """The embeddings' model name when they expose one as a string (``model_name`` or
    ``model``, as most LangChain embeddings do), else ``None``."""
    for attr in ("model_name", "model"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str):
            return value
    return None


def _read_config(folder: Path, path: Path) -> dict[str, Any]:
    """The saved store settings, checked for the keys :meth:`MetaEmbedVectorStore.load` needs."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {folder} holds no saved MetaEmbedVectorStore "
            "(write one with store.save(folder))."
        )
    fix = (
        "it is written last and atomically by store.save(folder), so it was changed or damaged "
        "after saving: restore it from a backup, or reopen the index it describes with "
        f"MetaEmbedVectorStore(embeddings, index=MultiVectorIndex.load({str(folder / INDEX_DIR)!r}))"
        " and save that store again"
    )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); {fix}.") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not an object; {fix}.")
    if config.get("format") != _FORMAT or config.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{path} is not a {_FORMAT} v{_FORMAT_VERSION} file "
            f"(format={config.get('format')!r}, version={config.get('format_version')!r}); "
            f"{fix}."
        )
    if config.get("mode") not in ("multi", "single"):
        raise ValueError(f"{path}: mode={config.get('mode')!r} is not 'multi' or 'single'; {fix}.")
    return config


def _check_saved_model(folder: Path, config: dict[str, Any], emb: MetaEmbedEmbeddings) -> None:
    """A multi-vector store opens only with the model it was built with (by fingerprint)."""
    saved = config.get("fingerprint")
    given = emb.fingerprint()
    if saved is not None and saved != given:
        raise IndexMismatchError(
            f"The store at {folder} was built with MetaEmbed model {config.get('model_name')!r} "
            f"(fingerprint {saved}), but the embeddings given use {emb.model_name!r} "
            f"(fingerprint {given}): its vectors are not comparable with this model's. Open "
            f"it with {_open_hint(config.get('model_name'))}, or rebuild the store with this "
            "model."
        )


def _open_hint(model_name: str | None) -> str:
    """How to build the embeddings of a saved model name, for error messages."""
    if model_name is None or model_name.startswith("in-memory:"):
        return "MetaEmbedEmbeddings(client=<the MetaEmbedModel it was built with>)"
    return f"MetaEmbedEmbeddings(model={model_name!r})"


def _check_saved_embeddings(
    folder: Path, config: dict[str, Any], emb: Embeddings, allow_other: bool
) -> None:
    """A single-vector store opens with the embeddings it was built with: same class and model
    name (unless ``allow_other``) and always the same vector width (one probe call)."""
    saved_cls, given_cls = config.get("embedding_class"), _class_name(emb)
    saved_model, given_model = config.get("model_name"), _model_name(emb)
    if not allow_other and (saved_cls != given_cls or saved_model != given_model):
        raise ValueError(
            f"The store at {folder} was built with {saved_cls} (model {saved_model!r}), but "
            f"{given_cls} (model {given_model!r}) was given: vectors of different embeddings "
            "are not comparable. Open it with the embeddings it was built with; if these "
            "produce the same vectors (e.g. a caching wrapper around the same model), pass "
            "allow_other_embeddings=True."
        )
    width = config.get("dim")
    if width is None:  # an empty store: nothing to compare yet
        return
    probe = emb.embed_query("width check")
    if len(probe) != width:
        raise ValueError(
            f"The store at {folder} holds {width}-float vectors but "
            f"{type(emb).__name__}.embed_query returns {len(probe)} floats: these are not the "
            "embeddings the store was built with (another model or size). Open it with those, "
            "or rebuild the store with these embeddings."
        )


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _document(doc_id: str, text: str | None, metadata: dict[str, Any]) -> Document:
    return Document(id=doc_id, page_content=text or "", metadata=dict(metadata))


def _check_positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}.")
    return value


def _check_mode(mode: str) -> SearchMode:
    if mode not in ("two_stage", "exhaustive"):
        raise ValueError(f"mode must be 'two_stage' or 'exhaustive', got {mode!r}.")
    return mode  # type: ignore[return-value]


def _reject_kwargs(kwargs: dict[str, Any], where: str) -> None:
    if kwargs:
        raise TypeError(
            f"MetaEmbedVectorStore.{where} got unexpected argument(s) {sorted(kwargs)}; see "
            "its docstring for the supported ones."
        )


def _check_index_for_model(index: MultiVectorIndex, emb: MetaEmbedEmbeddings) -> None:
    """The checks ``TwoStageRetriever`` makes: same fingerprint, dim and vector count."""
    model = emb.client
    fp = model.fingerprint()
    if index.fingerprint is None:
        if index.num_rows:
            raise ValueError(
                "The index records no model fingerprint, so its vectors cannot be checked "
                f"against this model ({fp}); build it with MultiVectorIndex.for_model(model)."
            )
        index.fingerprint = fp
    elif index.fingerprint != fp:
        raise ValueError(
            f"The index was built with model fingerprint {index.fingerprint!r} but the "
            f"embeddings' model has {fp!r}: use MetaEmbedEmbeddings of the model the index was "
            "built with, or rebuild the index."
        )
    if index.dim != model.dim or index.num_vectors != model.config.num_candidate_tokens:
        raise ValueError(
            f"The index stores {index.num_vectors} x {index.dim} vectors per document but the "
            f"model makes {model.config.num_candidate_tokens} x {model.dim}."
        )
