"""Multi-vector index and two-stage search.

* :class:`MultiVectorIndex` - documents stored once at full size (memory-mapped, compact dtype),
  a FAISS coarse index over one vector per document, exact budgeted MaxSim reranking,
  add / upsert / delete, metadata filters, atomic save / checksummed load;
* :class:`SearchParams` - the search options (one validator, one ``fetch_k`` default);
* :class:`Hit` - one search result;
* :func:`compile_filter` - the metadata filter syntax;
* :func:`mmr_search` / :func:`mmr` - maximal marginal relevance over stored rows;
* :class:`IndexCorruptedError`, :class:`IndexMismatchError` - load errors.

See ``docs/index-and-search.md``.
"""

from __future__ import annotations

from .coarse import AUTO_FLAT_MAX, IVF_MIN_TRAIN
from .diversity import mmr, mmr_search
from .filters import Filter, compile_filter
from .hits import Hit
from .lock import IndexLockedError, IndexStaleError
from .multivector import MultiVectorIndex
from .params import DEFAULT_FETCH_K, SearchMode, SearchParams
from .persist import IndexCorruptedError, IndexMismatchError

__all__ = [
    "AUTO_FLAT_MAX",
    "DEFAULT_FETCH_K",
    "IVF_MIN_TRAIN",
    "Filter",
    "Hit",
    "IndexCorruptedError",
    "IndexLockedError",
    "IndexStaleError",
    "IndexMismatchError",
    "MultiVectorIndex",
    "SearchMode",
    "SearchParams",
    "compile_filter",
    "mmr",
    "mmr_search",
]
