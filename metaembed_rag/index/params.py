"""The search contract: :class:`SearchParams`, one frozen value for every search option.

Every search path (``MultiVectorIndex.search``, ``TwoStageRetriever``, ``Collection``, the CLI,
the demo app and both framework integrations) builds one of these and hands it down, so the
options, their defaults (one ``fetch_k`` default: :data:`DEFAULT_FETCH_K`) and their validation
live here only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from ..budget import Budget, BudgetLike, parse_budget, resolve_budget
from ..scorers import MaxSimScorer, Scorer, resolve_scorer
from .filters import Filter, compile_filter
from .fusion import FUSIONS, HybridFusion

__all__ = [
    "DEFAULT_FETCH_K",
    "DEFAULT_HYBRID_WEIGHT",
    "SearchMode",
    "SearchOptions",
    "SearchParams",
]

#: Coarse candidates per query when a caller does not choose (see ``docs/index-and-search.md``).
DEFAULT_FETCH_K = 200

#: The multi-vector share of a weighted hybrid fusion when a caller does not choose.
DEFAULT_HYBRID_WEIGHT = 0.5

SearchMode = Literal["two_stage", "exhaustive"]


class SearchOptions(TypedDict, total=False):
    """The keyword form of :class:`SearchParams` (``search(q, k, **options)``)."""

    fetch_k: int
    recall_budget: BudgetLike
    rerank_budget: BudgetLike | None
    filter: Filter | None
    mode: SearchMode
    hybrid: HybridFusion | None
    hybrid_weight: float | None
    scorer: Scorer | str | None


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}.")
    return value


@dataclass(frozen=True, eq=True)
class SearchParams:
    """What one search asks for.

    Attributes:
        k: hits per query.
        fetch_k: coarse candidates per query (raised to ``k`` if smaller).
        recall_budget: ``(1,1)``: the coarse vector alone; any other trained budget runs a
            cascade (see :meth:`MultiVectorIndex.search`).
        rerank_budget: budget of the final exact MaxSim; ``None``: the largest trained one.
        filter: a metadata filter (:mod:`metaembed_rag.index.filters`) or ``None``.
        mode: ``"two_stage"`` or ``"exhaustive"``.
        hybrid: ``None`` (multi-vector only), ``"rrf"`` or ``"weighted"``: fuse the
            multi-vector score with BM25 (:mod:`metaembed_rag.index.fusion`); needs the query
            texts (see :meth:`MultiVectorIndex.search`).
        hybrid_weight: the multi-vector share of a ``"weighted"`` fusion, in [0, 1] (1: dense
            alone, 0: BM25 alone; default :data:`DEFAULT_HYBRID_WEIGHT`).
        scorer: the scorer of the exact stage (:mod:`metaembed_rag.scorers`): ``None`` /
            ``"maxsim"`` (budgeted MaxSim, the default), ``"pooled"``, a folder saved by
            ``metaembed-rag train-scorer`` or a :class:`~metaembed_rag.scorers.Scorer`. The
            cascade's recall stage stays MaxSim.

    Raises:
        ValueError: ``k`` / ``fetch_k`` not a positive int, a budget that does not parse, an
            unknown mode or fusion, a weight outside [0, 1] or without ``hybrid="weighted"``,
            or a malformed filter (the message names the option).
    """

    k: int = 10
    fetch_k: int = DEFAULT_FETCH_K
    recall_budget: Budget = Budget(1, 1)
    rerank_budget: Budget | None = None
    filter: Filter | None = None
    mode: SearchMode = "two_stage"
    hybrid: HybridFusion | None = None
    hybrid_weight: float | None = None
    scorer: Scorer | None = None

    def __post_init__(self) -> None:
        _positive(self.k, "k")
        _positive(self.fetch_k, "fetch_k")
        recall = parse_budget(self.recall_budget, "recall_budget") or Budget(1, 1)
        object.__setattr__(self, "recall_budget", recall)
        object.__setattr__(self, "rerank_budget", parse_budget(self.rerank_budget, "rerank_budget"))
        if self.mode not in get_args(SearchMode):
            raise ValueError(f"mode must be 'two_stage' or 'exhaustive', got {self.mode!r}.")
        if self.filter is not None:
            compile_filter(self.filter)
        if self.scorer is not None:
            scorer = resolve_scorer(self.scorer)
            object.__setattr__(self, "scorer", None if type(scorer) is MaxSimScorer else scorer)
        if self.hybrid is not None and self.hybrid not in FUSIONS:
            raise ValueError(f"hybrid must be None, 'rrf' or 'weighted', got {self.hybrid!r}.")
        if self.hybrid is not None and self.scorer is not None:
            raise ValueError(
                f"hybrid={self.hybrid!r} fuses BM25 with MaxSim and cannot use the "
                f"{self.scorer.name!r} scorer: drop hybrid or the scorer."
            )
        w = self.hybrid_weight
        if w is not None:
            if self.hybrid != "weighted":
                raise ValueError(
                    f"hybrid_weight={w!r} applies to hybrid='weighted' only (got hybrid="
                    f"{self.hybrid!r}); drop the weight or use the weighted fusion."
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w <= 1.0:
                raise ValueError(f"hybrid_weight must be a number in [0, 1], got {w!r}.")
            object.__setattr__(self, "hybrid_weight", float(w))

    @property
    def weight(self) -> float:
        """The multi-vector share of a weighted fusion (the default when not set)."""
        return DEFAULT_HYBRID_WEIGHT if self.hybrid_weight is None else self.hybrid_weight

    def replace(self, **changes: Any) -> SearchParams:
        """A copy with ``changes`` applied; ``None`` values keep the current setting, except
        ``filter``, ``rerank_budget``, ``hybrid``, ``hybrid_weight`` and ``scorer`` where
        ``None`` is a setting (no filter, the largest budget, no fusion, the default weight,
        MaxSim) and only a missing key keeps the current one."""
        keep_none = ("filter", "rerank_budget", "hybrid", "hybrid_weight", "scorer")
        given = {k: v for k, v in changes.items() if v is not None or k in keep_none}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown search option(s) {sorted(unknown)}; the options are k, fetch_k, "
                "recall_budget, rerank_budget, filter, mode, hybrid, hybrid_weight and scorer."
            )
        return dataclasses.replace(self, **given) if given else self

    @classmethod
    def of(
        cls, k: int | None = None, params: SearchParams | None = None, **options: Any
    ) -> SearchParams:
        """``params`` (default: the defaults) with ``k`` and keyword ``options`` applied."""
        base = params if params is not None else cls()
        return base.replace(k=k, **options)

    def check_budgets(
        self, valid: Iterable[BudgetLike], query_vectors: int | None = None
    ) -> tuple[Budget, Budget]:
        """``(recall, rerank)`` budgets checked against the ``valid`` (trained) ones, and
        against the ``query_vectors`` a query has when given.

        Raises:
            ValueError: a budget that is not one of ``valid`` (the message lists them), or one
                needing more query vectors than the queries have.
        """
        valid = list(valid)
        recall = resolve_budget(self.recall_budget, valid)
        rerank = resolve_budget(self.rerank_budget, valid)
        for what, b in (("rerank_budget", rerank), ("recall_budget", recall)):
            if query_vectors is not None and b.r_q > query_vectors:
                raise ValueError(
                    f"{what} {b} uses {b.r_q} query vectors but the queries have "
                    f"{query_vectors}; encode queries with the model's encode_queries (all "
                    "query vectors) or pick a smaller budget."
                )
        return recall, rerank

    def settings(self) -> dict[str, Any]:
        """The persistable defaults (JSON-ready; ``k``, ``filter`` and ``scorer`` are per
        query)."""
        return {
            "fetch_k": self.fetch_k,
            "recall_budget": list(self.recall_budget.as_tuple()),
            "rerank_budget": None
            if self.rerank_budget is None
            else list(self.rerank_budget.as_tuple()),
            "mode": self.mode,
        }
