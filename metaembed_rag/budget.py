"""Retrieval budgets: how many query and candidate vectors a score uses.

A budget ``(r_q, r_c)`` scores with the first ``r_q`` query vectors and the first ``r_c``
candidate vectors (Matryoshka prefixes). Documents are indexed once at their full vector
count; any smaller budget is a prefix slice, chosen per query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Budget",
    "BudgetLike",
    "DEFAULT_BUDGETS",
    "check_budget",
    "parse_budget",
    "resolve_budget",
    "parse_budgets",
]


@dataclass(frozen=True, order=True)
class Budget:
    """A retrieval budget ``(r_q, r_c)``.

    Args:
        r_q: number of query vectors used (>= 1).
        r_c: number of candidate (document) vectors used (>= 1).

    >>> Budget(8, 16)
    Budget(r_q=8, r_c=16)
    >>> str(Budget.parse("4,8"))
    '4,8'
    """

    r_q: int
    r_c: int

    def __post_init__(self) -> None:
        for name, value in (("r_q", self.r_q), ("r_c", self.r_c)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Budget.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"Budget.{name} must be >= 1, got {value}")

    def __str__(self) -> str:
        return f"{self.r_q},{self.r_c}"

    def __iter__(self):  # allows ``r_q, r_c = budget``
        yield self.r_q
        yield self.r_c

    def as_tuple(self) -> tuple[int, int]:
        return (self.r_q, self.r_c)

    @classmethod
    def parse(cls, value: BudgetLike) -> Budget:
        """Build a budget from ``Budget``, ``(r_q, r_c)``, ``"r_q,r_c"`` or ``"r_qxr_c"``."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, str):
            text = value.strip().strip("()[]").replace("x", ",").replace(" ", "")
            parts = [p for p in text.split(",") if p]
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(
                    f"Cannot parse budget {value!r}: write it as 'r_q,r_c', for example '8,16'."
                )
            return cls(int(parts[0]), int(parts[1]))
        if isinstance(value, Sequence) and len(value) == 2:
            return cls(int(value[0]), int(value[1]))
        r_q = getattr(value, "r_q", None)
        r_c = getattr(value, "r_c", None)
        if r_q is not None and r_c is not None:
            return cls(int(r_q), int(r_c))
        raise TypeError(
            f"A budget must be a Budget, a pair (r_q, r_c) or a string 'r_q,r_c'; got {value!r}"
        )


BudgetLike = Budget | tuple[int, int] | Sequence[int] | str

#: The prefix groups MetaEmbed trains with Matryoshka Multi-Vector Retrieval.
DEFAULT_BUDGETS: tuple[Budget, ...] = (
    Budget(1, 1),
    Budget(2, 4),
    Budget(4, 8),
    Budget(8, 16),
    Budget(16, 64),
)


def resolve_budget(
    budget: BudgetLike | None,
    valid: Iterable[BudgetLike],
    *,
    strict: bool = True,
) -> Budget:
    """Check a requested budget against the budgets a model was trained with.

    Args:
        budget: the requested budget, or ``None`` for the largest valid one.
        valid: the model's trained budgets (prefix groups).
        strict: if ``True`` only the trained budgets are accepted; if ``False`` any budget
            within the largest trained one is accepted (quality is then untested).

    Raises:
        ValueError: the budget is not one of ``valid`` (or, with ``strict=False``, exceeds
            the largest one); the message lists the valid budgets.
    """
    groups = sorted({Budget.parse(v) for v in valid})
    if not groups:
        raise ValueError("No valid budgets were given.")
    if budget is None:
        return groups[-1]
    b = Budget.parse(budget)
    names = ", ".join(f"({g.r_q},{g.r_c})" for g in groups)
    if strict and b not in groups:
        raise ValueError(
            f"Budget ({b.r_q},{b.r_c}) is not one this model was trained with. "
            f"Valid budgets: {names}."
        )
    max_q = max(g.r_q for g in groups)
    max_c = max(g.r_c for g in groups)
    if b.r_q > max_q or b.r_c > max_c:
        raise ValueError(
            f"Budget ({b.r_q},{b.r_c}) exceeds the model's vectors ({max_q} query, {max_c} "
            f"candidate). Valid budgets: {names}."
        )
    return b


def parse_budget(value: Any, what: str) -> Budget | None:
    """``None`` stays ``None``; a ``Budget``, ``(r_q, r_c)`` pair or ``"r_q,r_c"`` string
    becomes a :class:`Budget`.

    Raises:
        ValueError: the value is not a budget (the message names ``what`` and the forms).
    """
    if value is None:
        return None
    try:
        return Budget.parse(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what}={value!r} is not a budget: write it as (r_q, r_c), e.g. (8, 16), or "
            f"'8,16'. ({exc})"
        ) from exc


def check_budget(value: Any, valid: Iterable[BudgetLike], what: str, owner: str) -> Budget | None:
    """:func:`parse_budget`, then check the budget is one of ``valid`` (``None`` stays ``None``).

    Args:
        value: the budget as given (``None``, ``Budget``, ``(r_q, r_c)`` or ``"r_q,r_c"``).
        valid: the trained budgets it must be one of.
        what: the option name, for the message (``"budget"``, ``"recall_budget"``).
        owner: whose budgets ``valid`` are, for the message (``"this store's model (...)"``).

    Raises:
        ValueError: not a budget, or not one of ``valid`` (the message names ``what`` and
            ``owner`` and lists the valid budgets).
    """
    budget = parse_budget(value, what)
    if budget is None:
        return None
    groups = sorted({Budget.parse(v) for v in valid})
    if budget not in groups:
        names = ", ".join(f"({b.r_q},{b.r_c})" for b in groups)
        raise ValueError(
            f"{what}=({budget.r_q},{budget.r_c}) is not a budget of {owner}. Valid budgets: "
            f"{names}; pick one, or None for the default."
        )
    return budget


def parse_budgets(text: str | Iterable[BudgetLike], valid: Iterable[BudgetLike]) -> list[Budget]:
    """Parse a list of budgets (``"all"``, ``"1,1 8,16"``, ``"1,1;8,16"``) against ``valid``."""
    valid = list(valid)
    if isinstance(text, str):
        if text.strip().lower() == "all":
            return sorted({Budget.parse(v) for v in valid})
        items: list[BudgetLike] = [t for t in text.replace(";", " ").split() if t]
    else:
        items = list(text)
    return [resolve_budget(item, valid) for item in items]
