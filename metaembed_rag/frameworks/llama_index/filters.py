"""LlamaIndex ``MetadataFilters`` -> the core filter syntax of :mod:`metaembed_rag.index.filters`.

Filters run inside the index's coarse stage (only matching documents are candidates), so they
are exact whatever ``fetch_k`` is.

| LlamaIndex operator | core filter | notes |
|---|---|---|
| ``==``, ``!=`` | ``$eq``, ``$ne`` | booleans only equal booleans |
| ``>``, ``>=``, ``<``, ``<=`` | ``$gt``, ``$gte``, ``$lt``, ``$lte`` | numbers only (see below) |
| ``in``, ``nin`` | ``$in``, ``$nin`` | the metadata value is one of the list |
| ``contains`` | element index | a *list* metadata value holds the value |
| ``any``, ``all`` | element index | a list metadata value holds any / all of the values |
| ``is_empty`` | missing, ``None``, ``""`` or ``[]`` | |
| condition ``and`` / ``or`` / ``not`` | ``$and`` / ``$or`` / ``$not`` of ``$or`` | ``not``: none matches |

Nested ``MetadataFilters`` are translated recursively.

``contains`` / ``any`` / ``all`` use an element index that
:class:`~llama_index.vector_stores.metaembed.MetaEmbedVectorStore` writes for every list-valued
metadata field when it adds a node (:func:`element_index`): one entry per list element, so the
test is an exact lookup. They therefore need an index filled by the store (a plain
``TwoStageRetriever`` index raises ``ValueError``), and they test list fields only: a string
field never "contains" anything (LlamaIndex's in-memory store would do a substring test there;
use ``==`` / ``in`` instead). Element equality follows the core rules: ``1 == 1.0``, but
``True`` is not ``1``.

Not supported, raising ``ValueError`` with the fix: range operators on strings (store dates
and versions as numbers, e.g. ``20240131`` or a Unix time) and ``text_match`` /
``text_match_insensitive`` (substring search). Keys with dots address nested metadata
dictionaries (``"author.name"``), as in the core syntax.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["ELEMENTS_KEY", "element_index", "to_core_filter"]

#: Metadata key (in the index, not on the node) of the list-element index.
ELEMENTS_KEY = "_li_elements"

_SIMPLE = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
_RANGE = {
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
}
_LIST_OPS = (FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.ALL)
_MATCH_NOTHING: dict[str, Any] = {"$not": {}}


def _token(value: Any) -> str:
    """A dot-free token for a key or a list element (same token <=> equal under core rules)."""
    if isinstance(value, bool):
        canon = f"b:{value}"
    elif isinstance(value, (int, float)):
        f = float(value)
        canon = f"n:{int(f)}" if math.isfinite(f) and f.is_integer() else f"n:{f!r}"
    elif isinstance(value, str):
        canon = f"s:{value}"
    else:
        canon = "j:" + json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(canon.encode("utf-8", "replace"), digest_size=8).hexdigest()


def element_index(metadata: Mapping[str, Any]) -> dict[str, dict[str, bool]]:
    """The element index of a node's metadata: for every list-valued top-level field,
    ``{token(key): {token(element): True}}`` (stored under :data:`ELEMENTS_KEY`)."""
    out: dict[str, dict[str, bool]] = {}
    for key, value in metadata.items():
        if isinstance(value, (list, tuple)):
            out[_token(key)] = {_token(v): True for v in value}
    return out


def _has_element(key: str, value: Any) -> dict[str, Any]:
    return {f"{ELEMENTS_KEY}.{_token(key)}.{_token(value)}": {"$exists": True}}


def _list_op(f: MetadataFilter, op: FilterOperator, elements: bool) -> dict[str, Any]:
    if not elements:
        raise ValueError(
            f"Metadata filter operator {op.value!r} (key {f.key!r}) needs the list-element "
            "index that MetaEmbedVectorStore writes; search an index filled by "
            "MetaEmbedVectorStore (e.g. MetaEmbedRetriever.from_vector_store(store)), or use "
            "'==' / 'in' on scalar fields."
        )
    if op == FilterOperator.CONTAINS:
        if isinstance(f.value, list):
            raise ValueError(
                f"Filter 'contains' on {f.key!r} takes one value, got the list {f.value!r}; "
                "use 'any' or 'all' for several."
            )
        return _has_element(f.key, f.value)
    if not isinstance(f.value, list):
        raise ValueError(
            f"Filter {op.value!r} on {f.key!r} takes a list of values, got {f.value!r}."
        )
    if not f.value:  # any([]) is False, all([]) is True
        return _MATCH_NOTHING if op == FilterOperator.ANY else {}
    parts = [_has_element(f.key, v) for v in f.value]
    if len(parts) == 1:
        return parts[0]
    return {"$or": parts} if op == FilterOperator.ANY else {"$and": parts}


def _one(f: MetadataFilter, elements: bool) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in _SIMPLE:
        return {f.key: {_SIMPLE[op]: f.value}}
    if op in _RANGE:
        v = f.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(
                f"Metadata filter {f.key!r} {op.value} {v!r}: range filters compare numbers "
                "only in the MetaEmbed index; store dates or versions as numbers (e.g. "
                "20240131 or a Unix time) and filter on those."
            )
        return {f.key: {_RANGE[op]: v}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{f.key: {"$exists": False}}, {f.key: {"$in": [None, "", []]}}]}
    if op in _LIST_OPS:
        return _list_op(f, op, elements)
    supported = ", ".join(o.value for o in [*_SIMPLE, *_RANGE, *_LIST_OPS, FilterOperator.IS_EMPTY])
    raise ValueError(
        f"Metadata filter operator {op.value!r} (key {f.key!r}) is not supported by the "
        f"MetaEmbed index (no substring search); supported: {supported}. Use '==' / 'in' on "
        "an exact value, or 'contains' on a list of keywords."
    )


def to_core_filter(
    filters: MetadataFilters | None, *, elements: bool = False
) -> dict[str, Any] | None:
    """Translate ``filters`` (``None`` or no filters -> ``None``, i.e. match everything).

    Args:
        filters: LlamaIndex filters.
        elements: the index has the list-element index (filled by ``MetaEmbedVectorStore``),
            so ``contains`` / ``any`` / ``all`` can be translated.

    Raises:
        ValueError: an unsupported operator, value or condition (named in the message, with
            what to do instead).
    """
    if filters is None or not filters.filters:
        return None
    parts = [
        sub if sub is not None else {}
        for sub in (
            to_core_filter(f, elements=elements)
            if isinstance(f, MetadataFilters)
            else _one(f, elements)
            for f in filters.filters
        )
    ]
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    raise ValueError(f"Unsupported filter condition {condition!r}; use and, or, not.")
