"""Doc-test guard: a documented search whose metadata filter matches nothing fails the test.

A snippet that filters on a field its documents do not have (``{"topic": ...}`` on a store
whose metadata has only ``year``) silently returns ``[]``: it runs, and teaches nothing.
``tests/test_docs.py`` wraps ``MultiVectorIndex.search_rows`` - the one search path of the
core, the CLI, the collection and both frameworks' stores - with :func:`guarded` while a page
runs (in-process for python blocks; through ``sitecustomize`` in this folder for the commands
of bash blocks).
"""

from __future__ import annotations

import functools
from typing import Any


class EmptyFilterResult(AssertionError):
    """A filtered search found no document for a query."""


def guarded(search_rows: Any) -> Any:
    """``MultiVectorIndex.search_rows`` that raises :class:`EmptyFilterResult` when a search
    with a filter returns no row for some query."""
    if getattr(search_rows, "_empty_filter_guard", False):
        return search_rows

    @functools.wraps(search_rows)
    def wrapper(self: Any, queries: Any, k: Any = None, *, params: Any = None, **options: Any):
        from metaembed_rag.index import SearchParams

        scores, rows = search_rows(self, queries, k, params=params, **options)
        options.pop("texts", None)  # the query texts (hybrid search), not a search option
        p = SearchParams.of(k, params, **options)
        if p.filter is not None and rows.ndim == 2 and (rows < 0).all(axis=1).any():
            raise EmptyFilterResult(
                f"a documented search with filter {p.filter!r} returned nothing: the snippet "
                "filters on metadata its documents do not have (or values none has)."
            )
        return scores, rows

    wrapper._empty_filter_guard = True  # type: ignore[attr-defined]
    return wrapper
