"""Reading each supported file type into chunks (:func:`load_file`)."""

from __future__ import annotations

import hashlib
import html.parser
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .base import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    PDF_RENDER_DPI,
    Chunk,
    IngestError,
)
from .chunks import check_chunking, chunk_text
from .discovery import file_type, special_file_kind

logger = logging.getLogger(__name__)


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


def _load_jsonl(
    path: Path, source: str, errors: list[str] | None, empty: list[str] | None = None
) -> list[Chunk]:
    out: list[Chunk] = []
    seen: dict[str, int] = {}
    bad = 0
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            chunk = _jsonl_record(path, source, lineno, line, seen, empty)
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
    path: Path,
    source: str,
    lineno: int,
    line: str,
    seen: dict[str, int],
    empty: list[str] | None = None,
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
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise IngestError(
            f"{path}:{lineno}: '_id' must be a string (or integer), got {type(rid).__name__} "
            f"{rid!r:.60}."
        )
    for name in ("title", "text"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise IngestError(
                f"{path}:{lineno}: {name!r} of record {rid!r} must be a string, got "
                f"{type(value).__name__} {value!r:.60}."
            )
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
        if empty is not None:
            empty.append(f"{rid} ({path.name}:{lineno})")
        return None
    meta: dict[str, Any] = {"source": source, "type": "jsonl", "chunk": 0, "line": lineno}
    if title:
        meta["title"] = title
    return Chunk(id=rid, text=doc, metadata=meta, title=title.strip() or None)


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
    empty: list[str] | None = None,
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
        empty: when a list, ``"<id> (<file>:<line>)"`` of every empty JSONL record (left out)
            is appended to it.

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
    special = special_file_kind(path)
    if special is not None:
        raise IngestError(f"{path}: {special}, not a regular file; only regular files are read.")
    if not path.is_file():
        raise IngestError(f"{path}: no such file (or not a regular file); check the path.")
    if not os.access(path, os.R_OK):
        raise IngestError(f"{path}: permission denied; make the file readable (chmod +r).")
    if kind == "jsonl":
        return _load_jsonl(path, source, errors, empty)
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
