"""The core metadata filter syntax (:mod:`metaembed_rag.index.filters`) as a Qdrant payload filter.

:class:`~metaembed_rag.index.qdrant.QdrantBackend` stores a document's metadata under the
payload key ``metadata`` and the dotted paths of its fields under ``keys`` (``["author",
"author.name", ...]``: what ``$exists`` tests, exactly as the local backend does, where Qdrant's
own ``is_empty`` would also match ``null`` and ``[]``). The translation keeps the core rules:

* a missing field fails every condition except ``$ne``, ``$nin`` and ``$exists: False``
  (Qdrant's ``must_not`` of a condition passes a missing field);
* equality with a number is a closed range (``1`` then matches ``1`` and ``1.0``, as Python's
  ``==`` does; Qdrant's exact match never matches floats), with a string or a boolean an exact
  match (booleans only equal booleans, in Qdrant too); with ``None`` ``is_null``;
* range operators match only numeric values (Qdrant's ranges skip strings and booleans).

One difference cannot be translated: Qdrant matches a list-valued metadata field when *any
element* matches, where the local backend compares the whole value (``{"tags": "a"}`` matches
``{"tags": ["a", "b"]}`` in Qdrant, not locally). Equality with a list or dict value raises
:class:`UntranslatableFilterError`. The filters of the test suite are checked against the
local backend (``tests/test_qdrant_backend.py``).
"""

from __future__ import annotations

import math
from typing import Any

from .filters import _FIELD_OPS, Filter, compile_filter

__all__ = ["UntranslatableFilterError", "metadata_keys", "to_qdrant_filter"]

#: The payload key the metadata dict is stored under.
METADATA = "metadata"
#: The payload key listing the dotted paths present in the metadata (for ``$exists``).
KEYS = "keys"


class UntranslatableFilterError(ValueError):
    """A filter the Qdrant backend cannot express with the local backend's meaning."""


def metadata_keys(meta: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path a filter can reach in ``meta`` (nested dicts only, as the core's
    field lookup walks).

    >>> metadata_keys({"a": 1, "b": {"c": None, "d": [1]}})
    ['a', 'b', 'b.c', 'b.d']
    """
    out: list[str] = []
    for k, v in meta.items():
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(v, dict):
            out.extend(metadata_keys(v, path + "."))
    return out


def _models() -> Any:
    from qdrant_client import models

    return models


def _nothing() -> Any:
    """A filter no point passes (``must_not`` of the empty filter, which every point passes)."""
    m = _models()
    return m.Filter(must_not=[m.Filter()])


def _key(field: str) -> str:
    if any(c in field for c in '[]"'):
        raise UntranslatableFilterError(
            f'Filter field {field!r}: Qdrant payload keys cannot contain [, ] or "; rename '
            "the metadata field or use the local backend."
        )
    return f"{METADATA}.{field}"


def _eq(field: str, value: Any) -> Any:
    """The condition "field equals value" (value: a JSON scalar)."""
    m = _models()
    key = _key(field)
    if value is None:
        return m.IsNullCondition(is_null=m.PayloadField(key=key))
    if isinstance(value, (bool, str)):
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return _nothing()
        return m.FieldCondition(key=key, range=m.Range(gte=value, lte=value))
    raise UntranslatableFilterError(
        f"Filter {field!r}: equality with {type(value).__name__} {value!r} cannot be expressed "
        "in Qdrant (it matches list fields element-wise); filter on a scalar field instead."
    )


def _field(field: str, cond: Any) -> Any:
    m = _models()
    if not isinstance(cond, dict) or not any(str(k).startswith("$") for k in cond):
        return _eq(field, cond)
    must: list[Any] = []
    for op, arg in cond.items():
        if op not in _FIELD_OPS:
            raise ValueError(f"Unknown filter operator {op!r} on field {field!r}.")
        if op == "$eq":
            must.append(_eq(field, arg))
        elif op == "$ne":
            must.append(m.Filter(must_not=[_eq(field, arg)]))
        elif op in ("$in", "$nin"):
            member = m.Filter(should=[_eq(field, v) for v in arg]) if arg else _nothing()
            must.append(member if op == "$in" else m.Filter(must_not=[member]))
        elif op == "$exists":
            present = m.FieldCondition(key=KEYS, match=m.MatchValue(value=field))
            must.append(present if arg else m.Filter(must_not=[present]))
        else:
            bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[op]
            must.append(m.FieldCondition(key=_key(field), range=m.Range(**{bound: arg})))
    return must[0] if len(must) == 1 else m.Filter(must=must)


def to_qdrant_filter(spec: Filter | None) -> Any:
    """The Qdrant ``models.Filter`` of a core filter dict (``None`` for no filter).

    The filter is first checked by :func:`~metaembed_rag.index.filters.compile_filter`, so a
    malformed one raises the same ``ValueError`` as on the local backend.

    Raises:
        ValueError: a malformed filter.
        UntranslatableFilterError: a condition Qdrant cannot express with the same meaning.
    """
    if spec is None:
        return None
    compile_filter(spec)  # the core's validation and messages
    m = _models()
    must: list[Any] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            subs = [to_qdrant_filter(v) for v in value]
            must.append(m.Filter(must=subs) if key == "$and" else m.Filter(should=subs))
        elif key == "$not":
            must.append(m.Filter(must_not=[to_qdrant_filter(value)]))
        else:
            must.append(_field(key, value))
    return m.Filter(must=must)
