"""``MetaEmbedReranker``: budgeted MaxSim reranking as a LangChain document compressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from metaembed_rag.budget import check_budget, parse_budget
from metaembed_rag.relevance import relevance_scores
from metaembed_rag.scorers import Scorer, resolve_scorer
from pydantic import ConfigDict, Field, field_validator, model_validator

from .embeddings import MetaEmbedEmbeddings
from .vectorstores import MetaEmbedVectorStore

__all__ = ["MetaEmbedReranker"]


class MetaEmbedReranker(BaseDocumentCompressor):
    """Rerank any retriever's documents by exact MetaEmbed MaxSim at a budget.

    The query is encoded to its ``R_q`` vectors and every document's ``page_content`` to its
    ``R_c`` vectors; the score at budget ``(r_q, r_c)`` is
    ``sum_{i<=r_q} max_{j<=r_c} <q_i, d_j>`` (``metaembed_rag.maxsim``; unit vectors, so it lies
    in ``[-r_q, r_q]``). The best ``top_n`` come back, best first (ties keep the input order),
    as **copies** whose metadata gains (docs/scores.md):

    * under ``score_key`` (``"relevance_score"``, LangChain's reranker convention, 0-1 like
      Cohere's): the model's calibrated relevance at the budget
      (:func:`metaembed_rag.relevance.relevance_scores`; 0.5 is a usable threshold);
    * under ``raw_score_key`` (``"maxsim_score"``): the raw MaxSim sum.

    Values already there (e.g. from an earlier reranker) are replaced; the input documents are
    never modified.

    With ``vectorstore=`` (a multi-vector :class:`MetaEmbedVectorStore` of the same model),
    documents found in the store by ``id`` with the same ``page_content`` are scored with the
    vectors the store already holds instead of being encoded again (only the query is
    encoded). Those vectors are in the store's dtype (bfloat16 by default), so their scores
    can differ from a fresh float32 encoding by about 1e-2; documents not in the store (or
    whose text changed) are encoded.

    Use it in ``ContextualCompressionRetriever(base_compressor=MetaEmbedReranker(...),
    base_retriever=...)`` (from ``langchain-classic``), or call :meth:`compress_documents`.
    """

    embeddings: MetaEmbedEmbeddings = Field(
        default_factory=MetaEmbedEmbeddings,
        description=(
            "The MetaEmbed model to score with (default: the vectorstore's embeddings when one "
            "is given, else the packaged default model)."
        ),
    )
    vectorstore: MetaEmbedVectorStore | None = Field(
        default=None,
        description=(
            "A multi-vector store of the same model whose stored vectors are reused for the "
            "documents it holds (matched by id and text); None: encode every document."
        ),
    )
    top_n: int | None = Field(
        default=3, ge=1, description="Documents to keep; None keeps all, reordered."
    )
    budget: tuple[int, int] | str | None = Field(
        default=None,
        description="Scoring budget (r_q, r_c), one of the model's trained budgets; None: the largest.",
    )
    score_key: str = Field(
        default="relevance_score",
        description="Metadata key the calibrated 0-1 relevance is written to.",
    )
    raw_score_key: str = Field(
        default="maxsim_score", description="Metadata key the raw MaxSim sum is written to."
    )
    scorer: Scorer | str | None = Field(
        default=None,
        description=(
            "Late-interaction scorer: None (MaxSim), 'pooled', a folder saved by "
            "`metaembed-rag train-scorer`, or a metaembed_rag.scorers.Scorer."
        ),
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _embeddings_from_store(cls, data: Any) -> Any:
        """Without ``embeddings``, score with the given store's embeddings (no second load)."""
        if isinstance(data, dict) and "embeddings" not in data:
            store = data.get("vectorstore")
            if isinstance(store, MetaEmbedVectorStore) and store.is_multivector:
                data = {**data, "embeddings": store.embeddings}
        return data

    @field_validator("scorer")
    @classmethod
    def _resolve_scorer(cls, value: Any) -> Any:
        return None if value is None else resolve_scorer(value)

    @field_validator("budget")
    @classmethod
    def _parse_budget(cls, value: Any) -> Any:
        parse_budget(value, "budget")
        return value

    @model_validator(mode="after")
    def _check_budget_and_store(self) -> MetaEmbedReranker:
        """The budget must be one the model was trained with; the store must hold this model's
        vectors, encoded with the same token limit."""
        owner = f"the reranker's model ({self.embeddings.model_name})"
        check_budget(self.budget, self.embeddings.budgets, "budget", owner)
        if isinstance(self.scorer, Scorer):
            self.scorer.check_compatible(self.embeddings.fingerprint(), self.embeddings.client.dim)
        store = self.vectorstore
        if store is None:
            return self
        if not store.is_multivector:
            raise ValueError(
                f"vectorstore is a single-vector store ({type(store.embeddings).__name__}); "
                "the reranker needs MetaEmbed multi-vectors: pass a store built with "
                "MetaEmbedEmbeddings, or vectorstore=None to encode the documents."
            )
        theirs: MetaEmbedEmbeddings = store.embeddings  # type: ignore[assignment]
        if theirs.fingerprint() != self.embeddings.fingerprint():
            raise ValueError(
                f"vectorstore holds vectors of model {theirs.model_name!r} (fingerprint "
                f"{theirs.fingerprint()}) but the reranker scores with "
                f"{self.embeddings.model_name!r} ({self.embeddings.fingerprint()}): pass the "
                "store's embeddings (or omit embeddings=), or vectorstore=None."
            )
        if theirs.effective_max_length != self.embeddings.effective_max_length:
            raise ValueError(
                f"vectorstore's documents were encoded with max_length="
                f"{theirs.effective_max_length} but the reranker's embeddings use "
                f"{self.embeddings.effective_max_length}: use the same max_length (or omit "
                "embeddings= to use the store's), or vectorstore=None."
            )
        return self

    def _document_vectors(self, documents: Sequence[Document]) -> torch.Tensor:
        """``(n, R_c, D)`` float32: stored vectors where the store holds the document
        (same id and text), fresh encodings for the rest."""
        stored: list[torch.Tensor | None] = [None] * len(documents)
        if self.vectorstore is not None:
            stored = self.vectorstore.stored_vectors(documents)
        missing = [i for i, v in enumerate(stored) if v is None]
        if missing:
            fresh = self.embeddings.encode_documents([documents[i].page_content for i in missing])
            for i, vectors in zip(missing, fresh, strict=True):
                stored[i] = vectors
        return torch.stack([v for v in stored if v is not None])

    def rerank(
        self, documents: Sequence[Document], query: str, *, top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """``(position in documents, score)`` of the best ``top_n`` (default: the field),
        best first; ties keep the input order."""
        if not documents:
            return []
        budget = self.embeddings.client.resolve_budget(parse_budget(self.budget, "budget"))
        q = self.embeddings.encode_queries([query])  # (1, R_q, D)
        d = self._document_vectors(documents)  # (n, R_c, D)
        scores = resolve_scorer(self.scorer).score(q, d, budget)[0].tolist()
        order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))
        n = self.top_n if top_n is None else top_n
        if n is not None:
            order = order[:n]
        return [(i, float(scores[i])) for i in order]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The best ``top_n`` documents for ``query``, as copies with the calibrated
        relevance (``score_key``) and the raw MaxSim (``raw_score_key``) in metadata."""
        ranked = self.rerank(documents, query)
        budget = self.embeddings.client.resolve_budget(parse_budget(self.budget, "budget"))
        relevance = relevance_scores(self.embeddings.client, [s for _, s in ranked], budget)
        return [
            documents[i].model_copy(
                update={
                    "metadata": {
                        **documents[i].metadata,
                        self.score_key: rel,
                        self.raw_score_key: score,
                    }
                }
            )
            for (i, score), rel in zip(ranked, relevance, strict=True)
        ]
