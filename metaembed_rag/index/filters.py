"""Metadata filters: a small dict syntax compiled to a predicate over a document's metadata.

Syntax (MongoDB-like subset)::

    {"lang": "en"}                                  # equality
    {"lang": {"$eq": "en"}}  {"lang": {"$ne": "en"}}
    {"year": {"$in": [2020, 2021]}}  {"year": {"$nin": [1999]}}
    {"year": {"$gte": 2015, "$lt": 2020}}           # numeric range ($gt, $gte, $lt, $lte)
    {"source": {"$exists": True}}
    {"$and": [{...}, {...}]}  {"$or": [{...}, {...}]}  {"$not": {...}}
    {"lang": "en", "year": {"$gt": 2010}}           # several keys = AND

Field names may use dots for nested dicts (``"author.name"``). Rules:

* a missing field fails every condition except ``$ne``, ``$nin`` and ``$exists: False``;
* equality is Python ``==`` except that booleans only equal booleans (``True != 1``);
* range operators need a number (``int``/``float``, not ``bool``) in the filter and match only
  numeric metadata values;
* an empty filter ``{}`` matches everything.

Malformed filters raise ``ValueError`` naming the offending part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Filter", "compile_filter", "filter_mask"]

Filter = dict[str, Any]
Predicate = Callable[[dict[str, Any]], bool]

_MISSING = object()
_FIELD_OPS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
_LOGIC_OPS = ("$and", "$or", "$not")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _get(meta: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = meta
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _range(op: str, bound: float) -> Callable[[Any], bool]:
    if op == "$gt":
        return lambda v: _is_number(v) and v > bound
    if op == "$gte":
        return lambda v: _is_number(v) and v >= bound
    if op == "$lt":
        return lambda v: _is_number(v) and v < bound
    return lambda v: _is_number(v) and v <= bound


def _value_test(field: str, op: str, arg: Any) -> Callable[[Any], bool]:
    """The test one field operator applies to a metadata value (``_MISSING`` if absent)."""

    def eq(v: Any) -> bool:
        return v is not _MISSING and _eq(v, arg)

    def ne(v: Any) -> bool:
        return v is _MISSING or not _eq(v, arg)

    if op == "$eq":
        return eq
    if op == "$ne":
        return ne
    if op in ("$in", "$nin"):
        if not isinstance(arg, (list, tuple, set, frozenset)):
            raise ValueError(f"Filter {field!r}: {op} needs a list of values, got {arg!r}.")
        values = list(arg)

        def member(v: Any) -> bool:
            return v is not _MISSING and any(_eq(v, x) for x in values)

        if op == "$in":
            return member
        return lambda v: not member(v)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise ValueError(f"Filter {field!r}: $exists needs true or false, got {arg!r}.")
        return lambda v: (v is not _MISSING) == arg
    if not _is_number(arg) or (isinstance(arg, float) and math.isnan(arg)):
        raise ValueError(f"Filter {field!r}: {op} needs a number, got {arg!r}.")
    return _range(op, arg)


def _field_condition(field: str, cond: Any) -> Predicate:
    path = tuple(field.split("."))
    if not isinstance(cond, dict) or not any(str(k).startswith("$") for k in cond):
        value = cond
        return lambda m: (v := _get(m, path)) is not _MISSING and _eq(v, value)
    tests: list[Callable[[Any], bool]] = []
    for op, arg in cond.items():
        if op not in _FIELD_OPS:
            raise ValueError(
                f"Unknown filter operator {op!r} on field {field!r}; valid operators: "
                f"{', '.join(_FIELD_OPS)}."
            )
        tests.append(_value_test(field, op, arg))
    return lambda m: all(t(_get(m, path)) for t in tests)


def _combine(op: str, subs: list[Predicate]) -> Predicate:
    if op == "$and":
        return lambda m: all(p(m) for p in subs)
    return lambda m: any(p(m) for p in subs)


def _negate(sub: Predicate) -> Predicate:
    return lambda m: not sub(m)


def compile_filter(spec: Filter | None) -> Predicate:
    """Compile a filter dict (see the module docstring) into ``predicate(metadata) -> bool``.

    >>> p = compile_filter({"year": {"$gte": 2015}, "$or": [{"lang": "en"}, {"lang": "de"}]})
    >>> p({"year": 2016, "lang": "de"}), p({"year": 2014, "lang": "en"}), p({"lang": "en"})
    (True, False, False)
    """
    if spec is None:
        return lambda m: True
    if not isinstance(spec, dict):
        raise ValueError(f"A filter must be a dict, got {type(spec).__name__}: {spec!r}.")
    parts: list[Predicate] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise ValueError(f"Filter keys must be strings, got {key!r}.")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{key} needs a non-empty list of filters, got {value!r}.")
            parts.append(_combine(key, [compile_filter(v) for v in value]))
        elif key == "$not":
            parts.append(_negate(compile_filter(value)))
        elif key.startswith("$"):
            raise ValueError(
                f"Unknown top-level filter operator {key!r}; valid: {', '.join(_LOGIC_OPS)} "
                "(field operators go inside a field: {'year': {'$gt': 2000}})."
            )
        else:
            parts.append(_field_condition(key, value))
    if len(parts) == 1:
        return parts[0]
    return lambda m: all(p(m) for p in parts)


def filter_mask(spec: Filter | None, metadatas: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """Boolean ``(N,)`` mask of the rows whose metadata matches ``spec`` (``None`` rows: False)."""
    pred = compile_filter(spec)
    return np.fromiter(
        (m is not None and pred(m) for m in metadatas), dtype=bool, count=len(metadatas)
    )
