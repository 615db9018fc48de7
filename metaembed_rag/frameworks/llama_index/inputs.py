"""Turning LlamaIndex objects (nodes, query bundles, ``ImageType`` values) into MetaEmbed inputs.

MetaEmbed encoders take text (``str``), images (``pathlib.Path``, ``bytes``, ``PIL.Image``) or
``(text, image)`` pairs (see :mod:`metaembed_rag.inputs`). LlamaIndex passes images as a path
string, a URL string or a ``BytesIO`` (``ImageType``), and stores them on ``ImageNode`` as a
base64 string (``image``), a file path (``image_path``) or a URL (``image_url``).

URLs are fetched with the standard library. An unreachable URL, or one that does not return a
decodable image, raises a ``ValueError`` that names it and says how to pass the image instead.

Queries (:func:`query_items`) follow LlamaIndex's convention: the text searched for is
``QueryBundle.embedding_strs`` (``custom_embedding_strs`` when set, e.g. by HyDE, else
``query_str``) and the image is ``QueryBundle.image_path``. Several items are encoded separately
and their multi-vectors averaged position by position (:func:`aggregate_multi_vectors`), the
multi-vector analogue of LlamaIndex's ``mean_agg`` of single embeddings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import io
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, QueryBundle

from metaembed_rag.inputs import load_image

__all__ = [
    "DEFAULT_URL_TIMEOUT",
    "aggregate_multi_vectors",
    "content_hash",
    "encode_query_bundle",
    "fetch_url",
    "image_input",
    "node_input",
    "query_items",
    "vector_key",
]

#: Seconds to wait for an image URL before giving up.
DEFAULT_URL_TIMEOUT = 10.0

AggFn = Callable[[list[list[float]]], list[float]]


def fetch_url(url: str, *, timeout: float = DEFAULT_URL_TIMEOUT, where: str = "") -> bytes:
    """Download the bytes of a URL (``http``, ``https``, ``file`` or a ``data:`` URL).

    Args:
        url: the URL.
        timeout: seconds to wait for the server.
        where: what the URL belongs to (a node id, ``QueryBundle.image_path``), for messages.

    Raises:
        ValueError: the URL cannot be reached or read (network errors, HTTP errors, protocol
            errors, a malformed ``data:`` URL); the message names it and the fix.
    """
    label = f"{where}: " if where else ""
    if url.startswith("data:"):
        try:
            _, payload = url.split(",", 1)
            return base64.b64decode(payload, validate=False)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{label}malformed data: URL ({exc}).") from exc
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise ValueError(
            f"{label}image URL {url!r} is not reachable ({type(exc).__name__}: {exc}). "
            "Download the image and pass it as a file path (ImageNode.image_path) or base64 "
            "data (ImageNode.image) instead."
        ) from exc


def _decode(data: bytes, what: str) -> Any:
    """``data`` decoded to an RGB ``PIL.Image``; a ``ValueError`` naming ``what`` (and saying
    which formats work) when it is not an image."""
    return load_image(data, where=what)


def _fetch_image(url: str, timeout: float, where: str) -> Any:
    """Fetch ``url`` and decode it, failing with the URL named when it is not an image."""
    data = fetch_url(url, timeout=timeout, where=where)
    label = f"{where}: " if where else ""
    return _decode(data, f"{label}image URL {url!r}")


def image_input(value: Any, *, timeout: float = DEFAULT_URL_TIMEOUT, where: str = "") -> Any:
    """A LlamaIndex ``ImageType`` as a MetaEmbed image input.

    Args:
        value: a path string, a URL string (``http(s)``, ``file``, ``data:``), a ``BytesIO``,
            ``bytes``, a ``pathlib.Path`` or a ``PIL.Image``.
        timeout: seconds to wait for a URL.
        where: what the value belongs to, for error messages.

    Returns:
        a ``pathlib.Path`` (a file path: the encoder opens it and names it on errors), a
        decoded ``PIL.Image`` (URLs, ``BytesIO``, bytes) or the given ``PIL.Image``.

    Raises:
        ValueError: an unreachable URL, or data that is not a decodable image.
        TypeError: an unsupported type.
    """
    label = f"{where}: " if where else ""
    if isinstance(value, str):
        if value.startswith(("http://", "https://", "file://", "data:")):
            return _fetch_image(value, timeout, where)
        return Path(value)
    if isinstance(value, io.IOBase):
        data = value.read()
        if hasattr(value, "seek"):
            value.seek(0)
        return _decode(bytes(data), f"{label}BytesIO image")
    if isinstance(value, (bytes, bytearray)):
        return _decode(bytes(value), f"{label}image bytes")
    if isinstance(value, Path):
        return value
    if hasattr(value, "convert") and hasattr(value, "size"):  # PIL.Image
        return value
    raise TypeError(
        f"{label}unsupported image type {type(value).__name__}; pass a file path, a URL, "
        "a BytesIO, bytes or a PIL.Image."
    )


def _node_image(node: ImageNode, timeout: float) -> Any:
    where = f"node {node.node_id!r}"
    if node.image:
        try:
            data = base64.b64decode(node.image, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{where}: ImageNode.image is not valid base64 ({exc}).") from exc
        return _decode(data, f"{where}: ImageNode.image")
    if node.image_path:
        return Path(node.image_path)
    if node.image_url:
        return _fetch_image(node.image_url, timeout, where)
    return None


def node_input(node: BaseNode, *, timeout: float = DEFAULT_URL_TIMEOUT) -> Any:
    """The document-side input of a node.

    * an ``ImageNode`` with an image (``image``, ``image_path`` or ``image_url``): the image
      alone (what LlamaIndex's image embedding of an ``ImageNode`` covers);
    * any other node: ``node.get_content(metadata_mode=MetadataMode.EMBED)`` (text plus the
      metadata the node marks for embedding), the text LlamaIndex's own embedding uses.

    Raises:
        ValueError: the node has neither text nor an image (names the node id), or its image
            cannot be read (an unreachable URL, data that is not an image).
    """
    if isinstance(node, ImageNode):
        image = _node_image(node, timeout)
        if image is not None:
            return image
    text = node.get_content(metadata_mode=MetadataMode.EMBED)
    if not text.strip():
        raise ValueError(
            f"node {node.node_id!r} has no text and no image to encode; give it text or, "
            "for an ImageNode, image / image_path / image_url."
        )
    return text


def query_items(query: QueryBundle | str, *, timeout: float = DEFAULT_URL_TIMEOUT) -> list[Any]:
    """The query-side inputs of a ``QueryBundle`` (a ``str`` is ``QueryBundle(query_str=...)``).

    The texts are ``query.embedding_strs`` (``custom_embedding_strs`` if set, else
    ``query_str``; empty strings dropped) and the image is ``query.image_path``:

    * texts only: one item per text (HyDE-style several strings give several items);
    * image only (no text, or ``custom_embedding_strs=[]`` with a question in ``query_str``
      for the LLM): ``[image]``;
    * texts and an image: one ``(text, image)`` pair per text.

    Raises:
        ValueError: the query has neither text nor an image.
    """
    if isinstance(query, str):
        query = QueryBundle(query_str=query)
    texts = [t for t in query.embedding_strs if t and t.strip()]
    image = (
        image_input(query.image_path, timeout=timeout, where="QueryBundle.image_path")
        if query.image_path
        else None
    )
    if image is not None:
        return [(t, image) for t in texts] if texts else [image]
    if not texts:
        raise ValueError(
            "The query has no text (query_str / custom_embedding_strs) and no image_path; "
            "nothing to search for."
        )
    return texts


def aggregate_multi_vectors(vectors: torch.Tensor, agg_fn: AggFn | None = None) -> torch.Tensor:
    """Combine the multi-vectors of several query items into one.

    Args:
        vectors: ``(n, R_q, D)`` query multi-vectors.
        agg_fn: LlamaIndex's aggregation of single embeddings (``None``: the mean, like
            ``mean_agg``); applied position by position (to the ``n`` vectors at each of the
            ``R_q`` positions), so position 0 of the result is exactly ``agg_fn`` of the
            single-vector embeddings.

    Returns:
        ``(R_q, D)`` float32 (``vectors[0]`` when ``n == 1``; a mean is not renormalised,
        as ``mean_agg`` is not).
    """
    if vectors.dim() != 3 or vectors.shape[0] < 1:
        raise ValueError(f"vectors must be (n >= 1, R_q, D), got {tuple(vectors.shape)}.")
    if vectors.shape[0] == 1:
        return vectors[0]
    if agg_fn is None:
        return vectors.mean(dim=0)
    rows = [agg_fn(vectors[:, i].tolist()) for i in range(vectors.shape[1])]
    return torch.tensor(rows, dtype=torch.float32)


def encode_query_bundle(
    model: Any,
    query: QueryBundle | str,
    *,
    instruction: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    timeout: float = DEFAULT_URL_TIMEOUT,
) -> torch.Tensor:
    """The multi-vector of a LlamaIndex query: :func:`query_items` encoded with
    ``model.encode_queries`` and combined with :func:`aggregate_multi_vectors`.

    Returns:
        ``(R_q, D)`` float32 CPU tensor (unit vectors for a single item).
    """
    items = query_items(query, timeout=timeout)
    vectors = model.encode_queries(
        items, batch_size=batch_size, max_length=max_length, instruction=instruction
    )
    return aggregate_multi_vectors(vectors)


def content_hash(node: BaseNode) -> str:
    """A hash of what :func:`node_input` encodes (text shown to the embedding, image data,
    path or URL, and the size and modification time of an image file): two nodes with the
    same hash get the same document vectors."""
    h = hashlib.sha256()
    h.update(node.get_content(metadata_mode=MetadataMode.EMBED).encode("utf-8", "replace"))
    if isinstance(node, ImageNode):
        for part in (node.image, node.image_path, node.image_url):
            h.update(b"\x00" + (part or "").encode("utf-8", "replace"))
        if node.image_path and not node.image and Path(node.image_path).is_file():
            stat = Path(node.image_path).stat()
            h.update(f"\x00{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def vector_key(embedding: Sequence[float] | torch.Tensor | np.ndarray) -> bytes:
    """A key for an embedding (list of floats or tensor) from its float32 bytes: the same
    vector always gives the same key, however LlamaIndex passed it around (list, float64
    mean of one vector, ...)."""
    if isinstance(embedding, torch.Tensor):
        embedding = embedding.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(embedding, dtype=np.float32).reshape(-1)
    return hashlib.blake2b(arr.tobytes(), digest_size=16).digest()
