"""``Collection``: a folder holding a model reference, a :class:`MultiVectorIndex` and a file
manifest, so documents can be indexed incrementally and searched by name.

Folder layout::

    collection.json    format, model name or path, model fingerprint, chunking defaults
                       (``chunk_size`` / ``chunk_overlap`` in ``chunk_unit``: ``tokens`` of the
                       model's tokenizer, or ``words`` for a model without one; updated when
                       add_paths is given other chunking; written last at creation: a folder
                       without it is not a collection)
    files.json         the file manifest: per source file its sha256, size, chunk ids and the
                       chunking used; plus "pending" entries during a save (see below)
    index/             the MultiVectorIndex (its own atomic manifest and checksums)
    pages/             PDF pages rendered to PNG (only with pdf_page_images=True)

Crash safety. A save ("commit") writes ``files.json`` with the new manifest *and* a
``pending`` list of every file touched since the last commit (its chunk ids before and
after), then saves the index atomically, then rewrites ``files.json`` without ``pending``.
Whatever step an interruption hits, the next :meth:`Collection.open` finds a loadable index;
if ``pending`` is present it deletes those files' chunks (old and new ids) and drops them
from the manifest, so they are simply re-indexed by the next :meth:`Collection.add_paths`.
Files finished before the last completed commit are never re-encoded.

>>> from metaembed_rag.collection import Collection                     # doctest: +SKIP
>>> col = Collection.open_or_create("my-index")                         # doctest: +SKIP
>>> print(col.add_paths(["examples/sample_docs"]).summary())            # doctest: +SKIP
>>> col.search("What is a retrieval budget?", k=3)[0].metadata["source"]  # doctest: +SKIP
"""

from __future__ import annotations

from .core import Collection
from .folder import CollectionError
from .report import IngestReport, SearchResult

__all__ = ["Collection", "CollectionError", "IngestReport", "SearchResult"]
