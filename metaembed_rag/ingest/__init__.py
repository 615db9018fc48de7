"""Document ingestion: files in, :class:`Chunk` lists out.

Supported files (by suffix, case-insensitive):

* text: ``.txt``, ``.md`` / ``.markdown``, ``.html`` / ``.htm`` (tags stripped with the stdlib
  ``html.parser``; ``<script>`` / ``<style>`` dropped; ``<title>`` kept as the title);
* JSONL corpora (``.jsonl``, e.g. a BEIR ``corpus.jsonl``): one chunk per record, never split;
  the record's ``_id`` (or ``id``) is the chunk id and the chunk text is ``"<title> <text>"``,
  exactly what :meth:`metaembed_rag.data.BeirDataset.doc_text` (``metaembed-rag eval``) encodes
  (a record longer than the model's limit is truncated by the model, as in ``eval``). With
  ``errors=[...]`` a malformed record is skipped and described there (``file:line: reason``)
  instead of failing the whole file;
* PDF (``.pdf``, needs ``pip install 'metaembed-rag[pdf]'``): the text layer of each page,
  chunked per page; with ``pdf_page_images=True`` also one image chunk per page (the page
  rendered to PNG) for vision-language models;
* images (``.png``, ``.jpg``, ``.jpeg``, ``.webp``, ``.gif``, ``.bmp``, ``.tif``, ``.tiff``;
  needs ``pip install 'metaembed-rag[image]'``): one image chunk per file.

Chunking is measured in the **model's tokens** when a tokenizer is given (``tokenizer=``; a
:class:`~metaembed_rag.collection.Collection` always passes its model's): a chunk holds as
many whole words as fit in ``chunk_size`` tokens, consecutive chunks sharing about
``chunk_overlap`` tokens of whole words. :func:`model_chunk_limit` gives the largest chunk a
model reads whole (its ``max_length`` minus the tokens it adds around a document);
a collection's default is that minus :data:`TOKEN_MARGIN` (246 tokens for the default model,
whose ``max_length`` is 256), with :data:`DEFAULT_TOKEN_OVERLAP` tokens of overlap. Without a
tokenizer, chunks are windows of ``chunk_size`` **words** (runs of non-whitespace characters)
sharing ``chunk_overlap`` words (defaults 180 / 30). Either way a chunk's text is the exact
slice of the source text from its first to its last word (line breaks kept), and the same
text, settings and tokenizer always give the same chunks. A single word longer than
``chunk_size`` tokens (a long URL, say) still makes a chunk of its own, which the model
truncates when encoding (the collection's report counts such chunks).

Chunk ids are stable: ``"<source>#p<page>c<n>"`` (``page`` is 1-based and 0 for files without
pages, ``n`` the 0-based chunk number in that page), ``"<source>#p<page>img"`` for a PDF page
image, ``"<source>#img"`` for an image file and the record id for JSONL corpora.
"""

from __future__ import annotations

from .base import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_OVERLAP,
    IMAGE_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    TOKEN_MARGIN,
    Chunk,
    IngestError,
)
from .chunks import check_chunking, chunk_text, count_tokens, model_chunk_limit, model_tokenizer
from .discovery import discover_files, file_type, iter_files, special_file_kind
from .readers import load_file

__all__ = [
    "Chunk",
    "IngestError",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CHUNK_OVERLAP",
    "TEXT_SUFFIXES",
    "IMAGE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "DEFAULT_TOKEN_OVERLAP",
    "TOKEN_MARGIN",
    "check_chunking",
    "chunk_text",
    "discover_files",
    "count_tokens",
    "model_chunk_limit",
    "model_tokenizer",
    "file_type",
    "iter_files",
    "load_file",
    "special_file_kind",
]
