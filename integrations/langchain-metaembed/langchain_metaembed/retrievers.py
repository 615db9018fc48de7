"""``MetaEmbedRetriever``: two-stage MetaEmbed search as a LangChain ``BaseRetriever``."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from metaembed_rag.budget import check_budget, parse_budget
from metaembed_rag.index import compile_filter
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .vectorstores import MetaEmbedVectorStore

__all__ = ["MetaEmbedRetriever"]

BudgetField = tuple[int, int] | str | None


class MetaEmbedRetriever(BaseRetriever):
    """Two-stage retrieval over a :class:`MetaEmbedVectorStore`: coarse recall of ``fetch_k``
    candidates, exact budgeted MaxSim rerank, the best ``k`` as ``Document``s.

    Every setting can be given at construction and overridden per call:
    ``retriever.invoke("query", k=3, budget=(8, 16), filter={"year": 2020})``. Budgets are
    checked against the store's trained budgets when the retriever is built (and per call).

    Returned documents carry their ``id`` and, in copies of their metadata, the score under
    ``score_key`` (``"score"``: the MaxSim sum at the budget used, in ``[-r_q, r_q]``) and that
    budget under ``budget_key`` (``"budget"``, e.g. ``"16,64"``); the store's documents are never
    modified. A document whose own metadata already has one of these keys raises
    ``ValueError`` instead of losing the value: pick other keys (``score_key="metaembed_score"``)
    or ``None`` to not write that entry.

    Example:
        .. code-block:: python

            store = MetaEmbedVectorStore(MetaEmbedEmbeddings())
            store.add_texts(["Paris is in France.", "Cats purr."])
            retriever = MetaEmbedRetriever(vectorstore=store, k=1)
            retriever.invoke("Where is Paris?")
    """

    vectorstore: MetaEmbedVectorStore = Field(description="The store to search.")
    k: int = Field(default=4, ge=1, description="Documents to return.")
    fetch_k: int | None = Field(
        default=None, ge=1, description="Coarse candidates per query (None: the store's, 200)."
    )
    budget: BudgetField = Field(
        default=None,
        description=(
            "Rerank budget (r_q, r_c), e.g. (8, 16) or '8,16', one of the store's trained "
            "budgets; None: the store's (the largest)."
        ),
    )
    recall_budget: BudgetField = Field(
        default=None,
        description="Recall budget; (1,1) = the coarse vector alone, larger = a cascade. None: the store's.",
    )
    filter: dict[str, Any] | None = Field(
        default=None, description="Metadata filter applied inside the coarse stage."
    )
    mode: Literal["two_stage", "exhaustive"] | None = Field(
        default=None,
        description="'two_stage' or 'exhaustive' (exact over all matches); None: the store's.",
    )
    score_key: str | None = Field(
        default="score",
        description="Metadata key the score is written to (None: not written).",
    )
    budget_key: str | None = Field(
        default="budget",
        description="Metadata key the budget used ('r_q,r_c') is written to (None: not written).",
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @field_validator("budget", "recall_budget")
    @classmethod
    def _parse_budget(cls, value: BudgetField, info: ValidationInfo) -> BudgetField:
        parse_budget(value, str(info.field_name))
        return value

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        compile_filter(value)  # raises ValueError naming the malformed part
        return value

    @model_validator(mode="after")
    def _check_against_store(self) -> MetaEmbedRetriever:
        """Budgets must be the store's trained ones; the two metadata keys must differ."""
        store = self.vectorstore
        for what in ("budget", "recall_budget"):
            check_budget(getattr(self, what), store.budgets, what, store._budget_owner())
        if self.score_key is not None and self.score_key == self.budget_key:
            raise ValueError(
                f"score_key and budget_key are both {self.score_key!r}: give them different "
                "names (or set one to None)."
            )
        return self

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        """Search; each keyword (``k``, ``fetch_k``, ``budget``, ``recall_budget``,
        ``filter``, ``mode``) overrides the field of the same name for this call."""
        return self._search(query, **overrides)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        """Async :meth:`_get_relevant_documents` (encoding and search run in a thread)."""
        return await run_in_executor(None, self._search, query, **overrides)

    def _search(
        self,
        query: str,
        k: int | None = None,
        fetch_k: int | None = None,
        budget: BudgetField = None,
        recall_budget: BudgetField = None,
        filter: dict[str, Any] | None = None,
        mode: Literal["two_stage", "exhaustive"] | None = None,
    ) -> list[Document]:
        pairs, used = self.vectorstore.search_with_budget(
            query,
            k=self.k if k is None else k,
            filter=self.filter if filter is None else filter,
            budget=budget if budget is not None else self.budget,
            fetch_k=self.fetch_k if fetch_k is None else fetch_k,
            recall_budget=recall_budget if recall_budget is not None else self.recall_budget,
            mode=mode or self.mode,
        )
        extra: dict[str, Any] = {}
        if self.budget_key is not None:
            extra[self.budget_key] = str(used)
        out = []
        for doc, score in pairs:
            if self.score_key is not None:
                extra[self.score_key] = score
            clash = sorted(set(extra) & set(doc.metadata))
            if clash:
                raise ValueError(
                    f"Document {doc.id!r} already has metadata key(s) {clash}, which "
                    "MetaEmbedRetriever writes the score / budget to; to keep both, pass other "
                    "names (e.g. MetaEmbedRetriever(..., score_key='metaembed_score', "
                    "budget_key='metaembed_budget')), or None to not write them."
                )
            out.append(doc.model_copy(update={"metadata": {**doc.metadata, **extra}}))
        return out
