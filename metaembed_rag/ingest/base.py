"""What ingestion produces (:class:`Chunk`), its errors and its constants."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        title: a title that ``text`` begins with (``f"{title} {body}"``, JSONL records):
            :meth:`model_input` passes it to the model as the input's title. ``None``: the
            text has no title part (a title only in ``metadata`` is not read by the model).
    """

    id: str
    text: str | None = None
    image: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None

    def model_input(self) -> Any:
        """What a model encodes for this chunk: its text, its image, ``(text, image)``, or
        ``{"title", "text"}`` when :attr:`title` starts the text (the same words)."""
        if self.image is not None:
            return (self.text, self.image) if self.text is not None else self.image
        if self.title and self.text and self.text.startswith(f"{self.title} "):
            return {"title": self.title, "text": self.text[len(self.title) + 1 :]}
        return self.text
