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

import bisect
import hashlib
import html.parser
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
]

logger = logging.getLogger(__name__)

#: Default chunk length in words (chunking without a tokenizer).
DEFAULT_CHUNK_SIZE = 180
#: Default number of words shared by consecutive chunks (chunking without a tokenizer).
DEFAULT_CHUNK_OVERLAP = 30
#: Tokens kept free below :func:`model_chunk_limit` by the default token chunk size: a chunk
#: tokenised on its own can take a token or two more at its edges than inside its source.
TOKEN_MARGIN = 8
#: Default number of tokens shared by consecutive chunks (chunking by tokens).
DEFAULT_TOKEN_OVERLAP = 40

TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
                 ".htm": "html"}  # fmt: skip
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SUPPORTED_SUFFIXES = frozenset(TEXT_SUFFIXES) | IMAGE_SUFFIXES | {".jsonl", ".pdf"}
#: PDF pages are rendered at this many pixels per inch for page images.
PDF_RENDER_DPI = 110

_WORD = re.compile(r"\S+")


class IngestError(ValueError):
    """A file cannot be turned into chunks; the message names the file and the fix."""


@dataclass
class Chunk:
    """One retrievable unit.

    Attributes:
        id: stable id (see the module docstring).
        text: the text to encode and return with hits, or ``None`` for an image-only chunk.
        image: an image file to encode (image files, rendered PDF pages), or ``None``.
        metadata: JSON-serialisable: ``source`` (the path as indexed), ``type`` (``text``,
            ``markdown``, ``html``, ``jsonl``, ``pdf``, ``image``), ``page`` (1-based, PDFs
            only), ``chunk`` (0-based number within the page or file), ``title`` when known,
            ``image`` (the image path as a string) for image chunks.
    """

    id: str
    text: str | None = None
    image: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- discovery
def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith(".") and p not in (".", "..") for p in parts)


def iter_files(
    paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False
) -> Iterator[Path]:
    """Expand files and folders into a sorted, de-duplicated stream of files.

    Folders are walked recursively; hidden files and folders (names starting with ``.``) inside
    them are skipped, and so are files of unsupported types unless ``all_files``. A file named
    explicitly is always yielded (unsupported types then fail in :func:`load_file` with a
    message). Order: the arguments in the order given, each folder's files sorted by path.

    Raises:
        FileNotFoundError: a path does not exist (nothing is yielded for it).
    """
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder; check the path.")
        if path.is_dir():
            found = []
            for sub in path.rglob("*"):
                rel = sub.relative_to(path)
                if _hidden(rel.parts) or not sub.is_file():
                    continue
                if not all_files and sub.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                found.append(sub)
            candidates = sorted(found)
        else:
            candidates = [path]
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


def discover_files(
    paths: Iterable[str | os.PathLike[str]], *, exclude: str | os.PathLike[str] | None = None
) -> tuple[list[Path], list[Path]]:
    """The files to index under ``paths`` and the files of unsupported types found in their
    folders (left out), both in :func:`iter_files` order.

    A file named explicitly is always in the first list (an unsupported type then fails in
    :func:`load_file` with a message). Files inside ``exclude`` (a collection's own folder)
    are in neither list.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    args = list(paths)
    everything = list(iter_files(args, all_files=True))
    if exclude is not None:
        own = Path(exclude).expanduser().resolve()
        everything = [p for p in everything if not p.resolve().is_relative_to(own)]
    explicit = {Path(a).expanduser().resolve() for a in args if Path(a).expanduser().is_file()}
    files: list[Path] = []
    ignored: list[Path] = []
    for p in everything:
        supported = p.suffix.lower() in SUPPORTED_SUFFIXES or p.resolve() in explicit
        (files if supported else ignored).append(p)
    return files, ignored


def file_type(path: str | os.PathLike[str]) -> str:
    """The ingest type of a file from its suffix (``text``, ``markdown``, ``html``, ``jsonl``,
    ``pdf``, ``image``).

    Raises:
        IngestError: unsupported suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[suffix]
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".pdf":
        return "pdf"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    supported = " ".join(sorted(SUPPORTED_SUFFIXES))
    raise IngestError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}. "
        "Convert it to one of these or leave it out."
    )


# ---------------------------------------------------------------------------- chunking
def chunk_text(
    text: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    *,
    tokenizer: Any | None = None,
) -> list[str]:
    """Split ``text`` into chunks of whole words.

    Without ``tokenizer``: windows of ``chunk_size`` words sharing ``chunk_overlap`` words.
    With a ``transformers`` tokenizer: each chunk holds as many words as fit in
    ``chunk_size`` tokens (counted in context, special tokens not included) and starts with
    the last words of the previous chunk that fit in ``chunk_overlap`` tokens.

    Each chunk is the exact slice of ``text`` from its first to its last word. Text that fits
    is one chunk; whitespace-only text gives no chunks.

    >>> chunk_text("a b c d e", chunk_size=3, chunk_overlap=1)
    ['a b c', 'c d e']
    """
    check_chunking(chunk_size, chunk_overlap)
    spans = [m.span() for m in _WORD.finditer(text)]
    if not spans:
        return []
    costs = [1] * len(spans) if tokenizer is None else _word_token_counts(text, spans, tokenizer)
    out = []
    start = 0
    while True:
        end, used = start, 0
        while end < len(spans) and (end == start or used + costs[end] <= chunk_size):
            used += costs[end]
            end += 1
        out.append(text[spans[start][0] : spans[end - 1][1]])
        if end == len(spans):
            return out
        nxt, shared = end, 0  # step back over the words the next chunk shares
        while nxt - 1 > start and shared + costs[nxt - 1] <= chunk_overlap:
            nxt -= 1
            shared += costs[nxt]
        start = nxt


def _word_token_counts(text: str, spans: list[tuple[int, int]], tokenizer: Any) -> list[int]:
    """Tokens of each word of ``text`` (``spans``), from one tokenisation of the whole text
    when the tokenizer gives offsets (fast tokenizers), else of each word on its own."""
    counts = [0] * len(spans)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = [a for a, _ in spans]
        for a, b in enc["offset_mapping"]:
            if b > a:
                counts[max(0, bisect.bisect_right(starts, a) - 1)] += 1
        return [max(1, c) for c in counts]
    words = [text[a:b] for a, b in spans]
    ids = tokenizer(words, add_special_tokens=False, verbose=False)["input_ids"]
    return [max(1, len(x)) for x in ids]


def count_tokens(texts: Sequence[str], tokenizer: Any) -> list[int]:
    """Tokens of each text (special tokens not counted)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [len(x) for x in ids]


def model_tokenizer(model: Any) -> Any | None:
    """The text tokenizer of a :class:`~metaembed_rag.model.MetaEmbedModel` (``None`` when its
    backbone adapter has none)."""
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer if callable(tokenizer) else None


def model_chunk_limit(model: Any) -> int | None:
    """The largest chunk, in :func:`model_tokenizer` tokens, that ``model`` encodes without
    truncation: ``config.max_length`` minus the tokens it adds around a document text
    (special tokens, document prefix, chat template). ``None`` without a tokenizer."""
    tokenizer = model_tokenizer(model)
    if tokenizer is None:
        return None
    probe = "a"  # inputs cannot be empty: measure one short word, then take it off
    batch = model.prepare([probe], "document")
    overhead = int(batch.tensors["attention_mask"].sum()) - count_tokens([probe], tokenizer)[0]
    limit = int(model.config.max_length) - overhead
    if limit < 1:
        raise ValueError(
            f"The model adds {overhead} tokens around every document but reads only "
            f"{model.config.max_length} (max_length): raise max_length."
        )
    return limit


def check_chunking(chunk_size: int, chunk_overlap: int) -> None:
    """Raise ``ValueError`` unless ``chunk_size >= 1`` and ``0 <= chunk_overlap < chunk_size``."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"chunk_size must be a positive number of tokens (or words), got {chunk_size!r}."
        )
    if not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"chunk_overlap must be >= 0 and smaller than chunk_size ({chunk_size}), "
            f"got {chunk_overlap!r}."
        )


# ---------------------------------------------------------------------------- readers
def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read the file ({exc.strerror or exc}).") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)."
        ) from exc


class _HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML document, one line per block element."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article",
                        "header", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                        "blockquote", "hr", "dt", "dd", "figcaption", "main", "nav"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip_depth += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


def _html_text(source: str) -> tuple[str, str | None]:
    parser = _HTMLText()
    parser.feed(source)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title_parts).split()) or None
    return text, title


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        m = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
        if m:
            return m.group(1)
    return None


def _text_chunks(
    text: str,
    base: dict[str, Any],
    source: str,
    page: int,
    size: int,
    overlap: int,
    tokenizer: Any | None,
) -> list[Chunk]:
    out = []
    for n, piece in enumerate(chunk_text(text, size, overlap, tokenizer=tokenizer)):
        meta = dict(base)
        if page:
            meta["page"] = page
        meta["chunk"] = n
        out.append(Chunk(id=f"{source}#p{page}c{n}", text=piece, metadata=meta))
    return out


def _load_jsonl(path: Path, source: str, errors: list[str] | None) -> list[Chunk]:
    out: list[Chunk] = []
    seen: dict[str, int] = {}
    bad = 0
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            chunk = _jsonl_record(path, source, lineno, line, seen)
        except IngestError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            bad += 1
            continue
        if chunk is not None:
            out.append(chunk)
    if bad and not out:
        assert errors is not None
        first = errors[-bad]
        raise IngestError(
            f"{path}: no usable record ({bad} malformed, the first at {first}); a JSONL corpus "
            "has one JSON object per line with _id, title and text."
        )
    return out


def _jsonl_record(
    path: Path, source: str, lineno: int, line: str, seen: dict[str, int]
) -> Chunk | None:
    """One JSONL line as a chunk (``None`` for an empty record); IngestError names the line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"{path}:{lineno}: not valid JSON ({exc.msg}); a JSONL corpus has one JSON "
            "object per line."
        ) from exc
    if not isinstance(row, dict):
        raise IngestError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}.")
    rid = row.get("_id", row.get("id"))
    if rid is None or str(rid) == "":
        raise IngestError(
            f"{path}:{lineno}: no '_id' (or 'id') field; every record needs a unique id "
            "(BEIR corpus.jsonl layout: _id, title, text)."
        )
    rid = str(rid)
    if rid in seen:
        raise IngestError(
            f"{path}:{lineno}: duplicate id {rid!r} (first on line {seen[rid]}); ids must be "
            "unique."
        )
    title = str(row.get("title") or "")
    body = row.get("text")
    if body is None:
        raise IngestError(
            f"{path}:{lineno}: record {rid!r} has no 'text' field (BEIR corpus.jsonl layout: "
            "_id, title, text)."
        )
    seen[rid] = lineno
    doc = f"{title} {body}".strip()  # as BeirDataset.doc_text, so CLI == eval vectors
    if not doc:
        logger.info("%s:%d: record %r is empty; skipped", path, lineno, rid)
        return None
    meta: dict[str, Any] = {"source": source, "type": "jsonl", "chunk": 0, "line": lineno}
    if title:
        meta["title"] = title
    return Chunk(id=rid, text=doc, metadata=meta)


def _pdfium():
    try:
        import pypdfium2
    except ImportError as exc:
        raise ImportError("Reading PDFs needs pypdfium2: pip install 'metaembed-rag[pdf]'") from exc
    return pypdfium2


def _load_pdf(
    path: Path,
    source: str,
    size: int,
    overlap: int,
    page_images: bool,
    image_dir: Path | None,
    tokenizer: Any | None,
) -> list[Chunk]:
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(str(path))
    except Exception as exc:  # PdfiumError and OSError variants
        raise IngestError(
            f"{path}: cannot open the PDF ({type(exc).__name__}: {exc}); the file is damaged, "
            "encrypted or not a PDF."
        ) from exc
    out: list[Chunk] = []
    try:
        title = (pdf.get_metadata_dict(skip_empty=True) or {}).get("Title") or None
        base: dict[str, Any] = {"source": source, "type": "pdf"}
        if title:
            base["title"] = title
        if page_images:
            if image_dir is None:
                image_dir = Path(tempfile.mkdtemp(prefix="metaembed-pages-"))
                logger.info("rendering PDF pages of %s into %s", path, image_dir)
            image_dir.mkdir(parents=True, exist_ok=True)
            stem = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        for number in range(1, len(pdf) + 1):
            page = pdf[number - 1]
            try:
                textpage = page.get_textpage()
                text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
                textpage.close()
                out.extend(_text_chunks(text, base, source, number, size, overlap, tokenizer))
                if page_images:
                    assert image_dir is not None  # set above whenever page_images is
                    img_path = image_dir / f"{stem}-p{number}.png"
                    page.render(scale=PDF_RENDER_DPI / 72).to_pil().save(img_path)
                    meta = dict(base, page=number, chunk=0, image=str(img_path))
                    out.append(Chunk(id=f"{source}#p{number}img", image=img_path, metadata=meta))
            finally:
                page.close()
    finally:
        pdf.close()
    if not out:
        raise IngestError(
            f"{path}: the PDF has no extractable text (a scan?); index its page images with "
            "--pdf-images (pdf_page_images=True) and a vision-language model, or OCR it first."
        )
    return out


def _load_image(path: Path, source: str) -> list[Chunk]:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "Reading images needs Pillow: pip install 'metaembed-rag[image]'"
        ) from exc
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises several types for bad files
        raise IngestError(
            f"{path}: not a readable image ({type(exc).__name__}: {exc}); re-save it as PNG or "
            "JPEG."
        ) from exc
    meta = {"source": source, "type": "image", "chunk": 0, "image": str(path)}
    return [Chunk(id=f"{source}#img", image=path, metadata=meta)]


def load_file(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    pdf_page_images: bool = False,
    source: str | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any | None = None,
    errors: list[str] | None = None,
) -> list[Chunk]:
    """Read one file into chunks (see the module docstring for types, ids and chunking).

    Args:
        path: the file.
        chunk_size: chunk length (text, markdown, HTML, PDF pages; JSONL records are never
            split): in tokens of ``tokenizer`` when given, else in words.
        chunk_overlap: tokens (or words) shared by neighbouring chunks.
        pdf_page_images: also render every PDF page to a PNG and return it as an image chunk.
        source: the name used in ids and ``metadata["source"]`` (default: ``str(path)``).
        image_dir: where rendered PDF pages go (default: a new temporary folder).
        tokenizer: a ``transformers`` tokenizer to chunk by (see :func:`model_tokenizer`).
        errors: when a list, malformed JSONL records are skipped and described in it
            (``"<path>:<line>: <reason>"``); else the first one raises ``IngestError``.

    Returns:
        the chunks in document order (may be empty only for a JSONL file of empty records).

    Raises:
        IngestError: unsupported type, unreadable or undecodable file, malformed JSONL (with
            ``errors``: no usable record at all), a PDF without text (and no page images), a
            file holding no text.
        ImportError: a PDF without pypdfium2 or an image without Pillow (names the extra).
        ValueError: bad ``chunk_size`` / ``chunk_overlap``.
    """
    check_chunking(chunk_size, chunk_overlap)
    path = Path(path)
    source = str(path) if source is None else source
    kind = file_type(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file (or not a regular file); check the path.")
    if not os.access(path, os.R_OK):
        raise IngestError(f"{path}: permission denied; make the file readable (chmod +r).")
    if kind == "jsonl":
        return _load_jsonl(path, source, errors)
    if kind == "pdf":
        folder = None if image_dir is None else Path(image_dir)
        return _load_pdf(
            path, source, chunk_size, chunk_overlap, pdf_page_images, folder, tokenizer
        )
    if kind == "image":
        return _load_image(path, source)
    raw = _read_text(path)
    base: dict[str, Any] = {"source": source, "type": kind}
    if kind == "html":
        text, title = _html_text(raw)
    else:
        text = raw
        title = _markdown_title(raw) if kind == "markdown" else None
    if title:
        base["title"] = title
    chunks = _text_chunks(text, base, source, 0, chunk_size, chunk_overlap, tokenizer)
    if not chunks:
        raise IngestError(f"{path}: the file holds no text; add some or leave the file out.")
    return chunks
