"""Normalising what users pass to ``encode_queries`` / ``encode_documents``.

Accepted items:

* ``str`` — text (a string is always text, never a file name);
* ``PIL.Image.Image``, ``pathlib.Path`` (an image file), ``bytes`` / ``bytearray`` (encoded image);
* ``dict`` with keys ``"text"`` and/or ``"image"`` (the image may be any of the forms above,
  or a ``str`` path inside the dict), and optionally ``"title"``: a document's title, read
  before its text (``{"title": t, "text": x}`` feeds ``"t x"``; models with
  ``anchor_skip_title`` cut their segment vectors from the text alone);
* ``(text, image)`` tuple — a text + image pair.

Images are decoded here, never inside the model.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

__all__ = ["Item", "ItemLike", "item_text", "to_items", "load_image"]

ItemLike = Union[str, bytes, bytearray, Path, "Image", dict, tuple]


@dataclass
class Item:
    """One input: text, an image, or both. ``image`` is an RGB ``PIL.Image`` once loaded.
    ``title`` (documents only) is read before ``text``, as ``f"{title} {text}"``."""

    text: str | None = None
    image: Any = None  # PIL.Image.Image, or a source not decoded yet
    source: str = ""  # short description of where the item came from, for error messages
    title: str | None = None


def item_text(value: Any) -> str | None:
    """The words a model reads for a text-only input: a ``str`` itself, a ``{"text"[,
    "title"]}`` dict as ``"title text"``; ``None`` for anything else (images, pairs).

    >>> item_text({"title": "Pump", "text": "moves fluids"})
    'Pump moves fluids'
    >>> item_text({"text": "x", "image": "a.png"}) is None
    True
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str) and "image" not in value:
        title = value.get("title")
        if isinstance(title, str) and title.strip():
            return f"{title.strip()} {value['text']}".strip()
        return str(value["text"])
    return None


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Image inputs need Pillow: pip install 'metaembed-rag[image]'") from exc
    return Image


def load_image(value: Any, *, where: str = "") -> Image:
    """Decode an image from a ``PIL.Image``, a path or encoded bytes into RGB.

    Raises:
        ValueError: the file is missing or the bytes are not a decodable image; the message
            names the input.
    """
    Image = _pil()
    label = f"{where}: " if where else ""
    if isinstance(value, Image.Image):
        return value.convert("RGB") if value.mode != "RGB" else value
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{label}image file {str(path)!r} does not exist or is not a file.")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except Exception as exc:  # PIL raises several types for bad files
            raise ValueError(
                f"{label}cannot read image {str(path)!r} ({type(exc).__name__}: {exc}); "
                "pass a JPEG/PNG/WebP file, bytes or a PIL.Image."
            ) from exc
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value))) as img:
                img.load()
                return img.convert("RGB")
        except Exception as exc:
            raise ValueError(
                f"{label}cannot decode image bytes ({len(value)} bytes; "
                f"{type(exc).__name__}: {exc}); pass encoded JPEG/PNG/WebP bytes."
            ) from exc
    raise TypeError(
        f"{label}unsupported image type {type(value).__name__}; "
        "pass a PIL.Image, a pathlib.Path or bytes."
    )


def _to_item(value: Any, index: int) -> Item:
    where = f"input {index}"
    if isinstance(value, Item):
        item = value
    elif isinstance(value, str):
        item = Item(text=value)
    elif isinstance(value, (bytes, bytearray, memoryview, Path)):
        item = Item(image=value)
    elif isinstance(value, dict):
        unknown = set(value) - {"text", "image", "title"}
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {sorted(unknown)}; a dict input takes 'text' and/or "
                "'image', and optionally 'title'."
            )
        item = Item(text=value.get("text"), image=value.get("image"), title=value.get("title"))
    elif isinstance(value, tuple) and len(value) == 2:
        item = Item(text=value[0], image=value[1])
    elif hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        item = Item(image=value)
    else:
        raise TypeError(
            f"{where}: unsupported input type {type(value).__name__}; pass a str (text), "
            "a PIL.Image / pathlib.Path / bytes (image), a dict {'text':..., 'image':...} "
            "or a (text, image) tuple."
        )
    if item.text is not None and not isinstance(item.text, str):
        raise TypeError(f"{where}: text must be a str, got {type(item.text).__name__}")
    if item.title is not None and not isinstance(item.title, str):
        raise TypeError(f"{where}: title must be a str, got {type(item.title).__name__}")
    if item.title is not None:
        title = item.title.strip()
        if not item.text or not item.text.strip():  # a title alone is the text
            item.text, title = title or item.text, ""
        item.title = title or None
    if item.text is not None and not item.text.strip():
        if item.image is None:
            raise ValueError(f"{where}: empty text; every input needs some text or an image.")
        item.text = None
    if item.text is None and item.image is None:
        raise ValueError(f"{where}: no text and no image; every input needs one of them.")
    item.source = item.source or where
    return item


def to_items(inputs: ItemLike | Iterable[ItemLike]) -> list[Item]:
    """Normalise one input or a sequence of inputs to a list of :class:`Item`.

    Raises:
        ValueError / TypeError: an input is empty or of an unsupported type; the message
            names its position.
    """
    if isinstance(inputs, (str, bytes, bytearray, Path, dict, tuple, Item)) or (
        hasattr(inputs, "convert") and hasattr(inputs, "size")
    ):
        seq: Sequence[Any] = [inputs]
    else:
        seq = list(inputs)  # type: ignore[arg-type]
    return [_to_item(v, i) for i, v in enumerate(seq)]


def load_images(items: list[Item]) -> None:
    """Decode every item's image in place (RGB ``PIL.Image``)."""
    for item in items:
        if item.image is not None:
            item.image = load_image(item.image, where=item.source)
