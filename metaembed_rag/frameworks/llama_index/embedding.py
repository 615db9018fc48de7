"""``MetaEmbedEmbedding``: a LlamaIndex ``MultiModalEmbedding`` over a MetaEmbed model.

LlamaIndex's embedding contract is one ``List[float]`` per input. A MetaEmbed input has a
multi-vector (16 query or 64 document vectors of width D), so the embedding returns its first
vector: the single-vector ``(1,1)`` view that Matryoshka Multi-Vector training makes a good
embedding on its own (``<q_0, d_0>`` is the ``(1,1)`` MaxSim score). The full multi-vectors
come from :meth:`MetaEmbedEmbedding.get_query_multi_vectors`,
:meth:`MetaEmbedEmbedding.get_document_multi_vectors` and
:meth:`MetaEmbedEmbedding.get_query_bundle_multi_vector`; the vector store
(``llama_index.vector_stores.metaembed``), the retriever and the reranker use them.

Sides:

* ``get_query_embedding`` -> query side; ``get_text_embedding(_batch)`` -> document side
  (LlamaIndex's own convention);
* ``get_image_embedding`` (one image, what LlamaIndex's retrievers call for an image *query*)
  -> query side; ``get_image_embedding_batch`` (what indexing ``ImageNode``s calls) ->
  document side;
* ``get_agg_embedding_from_queries`` (several query strings, e.g. HyDE's
  ``custom_embedding_strs``) -> the position-wise aggregate of their query multi-vectors, whose
  first vector is exactly LlamaIndex's aggregate of their single embeddings.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from llama_index.core.base.embeddings.base import Embedding, mean_agg
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType, QueryBundle

from metaembed_rag import MetaEmbedModel
from metaembed_rag.hub import load_model
from metaembed_rag.model import DEFAULT_MODEL

from .inputs import (
    DEFAULT_URL_TIMEOUT,
    AggFn,
    aggregate_multi_vectors,
    encode_query_bundle,
    image_input,
    vector_key,
)

__all__ = ["MetaEmbedEmbedding"]

logger = logging.getLogger("llama_index.embeddings.metaembed")  # the package's name, as before

Side = Literal["query", "document"]
_MIB = 1024 * 1024


class _Unset:
    """Marker for "argument not given" (``model_name=None`` means something else)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _same_device(wanted: torch.device, actual: torch.device) -> bool:
    if wanted.type != actual.type:
        return False
    return wanted.index is None or actual.index is None or wanted.index == actual.index


class _VectorCache:
    """A byte-bounded LRU map ``vector_key(first vector) -> (R, D) float32 multi-vector``."""

    def __init__(self) -> None:
        self.items: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.evicted = 0

    def put(self, key: bytes, value: torch.Tensor, cap_bytes: int) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        size = value.nbytes
        if size > cap_bytes:
            return
        self.items[key] = value
        self.nbytes += size
        while self.nbytes > cap_bytes:
            _, dropped = self.items.popitem(last=False)
            self.nbytes -= dropped.nbytes
            self.evicted += 1

    def get(self, key: bytes, pop: bool) -> torch.Tensor | None:
        value = self.items.pop(key, None) if pop else self.items.get(key)
        if value is not None:
            if pop:
                self.nbytes -= value.nbytes
            else:
                self.items.move_to_end(key)
        return value

    def clear(self) -> None:
        self.items.clear()
        self.nbytes = 0


class MetaEmbedEmbedding(MultiModalEmbedding):
    """MetaEmbed encoder as a LlamaIndex text + image embedding.

    Args:
        model_name: a built-in model name (default ``metaembed-minilm-l6``) or a folder saved
            with ``MetaEmbedModel.save_pretrained``. With ``model`` given it is the name the
            model can be reloaded from (what :meth:`from_dict` loads); leave it out for an
            in-memory model (it is then ``None`` and ``from_dict`` needs ``model=``).
        model: an already loaded :class:`metaembed_rag.MetaEmbedModel` (shared, not copied,
            never moved).
        device: ``"cpu"``, ``"cuda"``, ... for a model loaded by name (default: the model's
            own choice). With ``model`` given it must be the model's device (else
            ``ValueError``: move the model with ``model.to(device)`` first).
        max_length: token limit per input (default: the model's ``config.max_length``).
        query_instruction: task instruction put before every query text.
        embed_batch_size: inputs per forward pass.
        vector_cache_mb: MiB of document multi-vectors kept for an attached
            :class:`~llama_index.vector_stores.metaembed.MetaEmbedVectorStore` between
            embedding a node and the store adding it (so it is not encoded twice); the store
            takes (removes) them. 256 MiB holds about 2,700 documents at D=384 (64 float32
            vectors = 96 KiB each), more than LlamaIndex's insert batch of 2,048.
        query_cache_mb: MiB of query multi-vectors kept for an attached store, between
            embedding a query (text, image, or several strings) and the store searching it.
        model_fingerprint: the model's fingerprint, written by :meth:`to_dict`; when given,
            a model loaded by name must have it (``ValueError`` otherwise).
        url_timeout: seconds to wait for an image URL.

    Returned embeddings are ``List[float]`` of length D (384 for the default model), unit norm.
    """

    model_name: str | None = Field(  # type: ignore[assignment]
        default=DEFAULT_MODEL,
        description="Built-in MetaEmbed model name or a save_pretrained folder the model can "
        "be reloaded from; None for an in-memory model (from_dict then needs model=).",
    )
    model_fingerprint: str | None = Field(
        default=None,
        description="MetaEmbedModel.fingerprint() of the model; checked when reloading by name.",
    )
    device: str | None = Field(
        default=None, description="Torch device of the model (None: the model's default)."
    )
    max_length: int | None = Field(
        default=None,
        description="Token limit per input; longer inputs are truncated (None: model default).",
        gt=0,
    )
    query_instruction: str | None = Field(
        default=None, description="Task instruction put before every query text."
    )
    vector_cache_mb: float = Field(
        default=256.0,
        description="MiB of document multi-vectors kept for an attached MetaEmbedVectorStore "
        "(taken when the store adds the node).",
        ge=0,
    )
    query_cache_mb: float = Field(
        default=32.0,
        description="MiB of query multi-vectors kept for an attached MetaEmbedVectorStore.",
        ge=0,
    )
    url_timeout: float = Field(
        default=DEFAULT_URL_TIMEOUT, description="Seconds to wait for an image URL.", gt=0
    )

    _model: MetaEmbedModel = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _doc_cache: _VectorCache = PrivateAttr(default_factory=_VectorCache)
    _query_cache: _VectorCache = PrivateAttr(default_factory=_VectorCache)
    _cache_enabled: bool = PrivateAttr(default=False)

    def __init__(
        self,
        model_name: str | None = _UNSET,
        *,
        model: MetaEmbedModel | None = None,
        device: str | None = None,
        max_length: int | None = None,
        query_instruction: str | None = None,
        embed_batch_size: int = 32,
        vector_cache_mb: float = 256.0,
        query_cache_mb: float = 32.0,
        url_timeout: float = DEFAULT_URL_TIMEOUT,
        model_fingerprint: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            if model_name is None:
                raise ValueError(
                    "MetaEmbedEmbedding(model_name=None) without model=: this embedding was "
                    "probably serialised (to_dict / to_json) from an in-memory model that has "
                    "no reloadable name. Pass model=<MetaEmbedModel>, or model_name= a built-in "
                    "name or a save_pretrained folder."
                )
            name: str | None = DEFAULT_MODEL if model_name is _UNSET else model_name
            model = load_model(str(name), device)
        elif not isinstance(model, MetaEmbedModel):
            raise TypeError(
                f"model must be a metaembed_rag.MetaEmbedModel, got {type(model).__name__}; "
                "or pass model_name='metaembed-minilm-l6' / a saved model folder."
            )
        else:
            if device is not None and not _same_device(torch.device(device), model.device):
                raise ValueError(
                    f"device={device!r} but the given model is on {model.device}; the model is "
                    f"shared, not moved: call model.to({device!r}) first, or omit device."
                )
            name = None if model_name is _UNSET else model_name
        fingerprint = model.fingerprint()
        if model_fingerprint is not None and model_fingerprint != fingerprint:
            raise ValueError(
                f"The model ({name or 'given model'}) has fingerprint {fingerprint!r}, but "
                f"model_fingerprint={model_fingerprint!r} was recorded: it is not the model this "
                "embedding was saved with (indexes built with that model need it); load the "
                "matching model folder."
            )
        fields: dict[str, Any] = {  # pydantic fields (a dict: mypy has no pydantic plugin here)
            "model_name": name,
            "model_fingerprint": fingerprint,
            "device": device,
            "max_length": max_length,
            "query_instruction": query_instruction,
            "embed_batch_size": embed_batch_size,
            "vector_cache_mb": vector_cache_mb,
            "query_cache_mb": query_cache_mb,
            "url_timeout": url_timeout,
            "callback_manager": callback_manager,
        }
        super().__init__(**fields, **kwargs)
        self._model = model

    @classmethod
    def class_name(cls) -> str:
        return "MetaEmbedEmbedding"

    # ------------------------------------------------------------------ model access
    @property
    def model(self) -> MetaEmbedModel:
        """The underlying :class:`metaembed_rag.MetaEmbedModel`."""
        return self._model

    @property
    def dim(self) -> int:
        """Width D of every vector."""
        return self._model.dim

    def get_query_multi_vectors(self, queries: Sequence[Any]) -> torch.Tensor:
        """Full query multi-vectors.

        Args:
            queries: texts, images (``pathlib.Path``, bytes, ``PIL.Image``, or a path / URL
                string inside a ``{"image": ...}`` dict) or ``(text, image)`` pairs.

        Returns:
            ``(n, R_q, D)`` float32 CPU tensor of unit vectors (``R_q = 16`` for the default).
        """
        vectors = self._model.encode_queries(
            list(queries),
            batch_size=self.embed_batch_size,
            max_length=self.max_length,
            instruction=self.query_instruction,
        )
        self._remember("query", vectors)
        return vectors

    def get_document_multi_vectors(self, documents: Sequence[Any]) -> torch.Tensor:
        """Full document multi-vectors (same inputs as :meth:`get_query_multi_vectors`).

        Returns:
            ``(n, R_c, D)`` float32 CPU tensor of unit vectors (``R_c = 64`` for the default);
            ``[:, :r_c]`` is the budget prefix.
        """
        vectors = self._model.encode_documents(
            list(documents), batch_size=self.embed_batch_size, max_length=self.max_length
        )
        self._remember("document", vectors)
        return vectors

    def get_query_bundle_multi_vector(self, query: QueryBundle | str) -> torch.Tensor:
        """The multi-vector of a LlamaIndex query: ``embedding_strs`` (``custom_embedding_strs``
        or ``query_str``) and ``image_path`` (see
        :func:`llama_index.embeddings.metaembed.inputs.query_items`), several items averaged
        position by position.

        Returns:
            ``(R_q, D)`` float32 CPU tensor.
        """
        return encode_query_bundle(
            self._model,
            query,
            instruction=self.query_instruction,
            max_length=self.max_length,
            batch_size=self.embed_batch_size,
            timeout=self.url_timeout,
        )

    # ------------------------------------------------------------------ vector cache
    def attach_vector_cache(self) -> None:
        """Start remembering multi-vectors by their returned first vector (called by
        ``MetaEmbedVectorStore``; a standalone embedding keeps nothing)."""
        self._cache_enabled = True

    def _cap(self, side: Side) -> int:
        mb = self.vector_cache_mb if side == "document" else self.query_cache_mb
        return int(mb * _MIB)

    def _cache(self, side: Side) -> _VectorCache:
        return self._doc_cache if side == "document" else self._query_cache

    def _remember(
        self, side: Side, vectors: torch.Tensor, keys: Sequence[bytes] | None = None
    ) -> None:
        """Keep ``vectors`` (``(n, R, D)``) under ``keys`` (default: their first vectors)."""
        if not self._cache_enabled:
            return
        cap = self._cap(side)
        if cap == 0:
            return
        cache = self._cache(side)
        with self._lock:
            for i, row in enumerate(vectors):
                key = vector_key(row[0]) if keys is None else keys[i]
                cache.put(key, row.detach().to("cpu", torch.float32).clone(), cap)

    def lookup_multi_vector(
        self, side: Side, embedding: Sequence[float] | torch.Tensor, *, pop: bool = False
    ) -> torch.Tensor | None:
        """The full multi-vector whose first vector is ``embedding``, if this embedding made
        it recently (and a store attached the cache); ``None`` otherwise.

        Args:
            side: ``"query"`` or ``"document"``.
            embedding: the returned single vector (D floats).
            pop: remove the entry (the store does for documents it has added).

        Returns:
            ``(R_q, D)`` or ``(R_c, D)`` float32 tensor, or ``None``.
        """
        key = vector_key(embedding)
        with self._lock:
            return self._cache(side).get(key, pop)

    def cache_stats(self) -> dict[str, int]:
        """Entries, bytes and evictions of the two caches (for monitoring and tests)."""
        with self._lock:
            return {
                "document_entries": len(self._doc_cache.items),
                "document_bytes": self._doc_cache.nbytes,
                "document_evicted": self._doc_cache.evicted,
                "query_entries": len(self._query_cache.items),
                "query_bytes": self._query_cache.nbytes,
                "query_evicted": self._query_cache.evicted,
            }

    def clear_vector_cache(self) -> None:
        """Drop every cached multi-vector."""
        with self._lock:
            self._doc_cache.clear()
            self._query_cache.clear()

    # ------------------------------------------------------------------ LlamaIndex API
    def _first(self, vectors: torch.Tensor) -> list[Embedding]:
        return vectors[:, 0].tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._first(self.get_query_multi_vectors([query]))[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """Document-side, one batched encode for the whole list."""
        return self._first(self.get_document_multi_vectors(texts))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    def _image(self, img: ImageType) -> Any:
        return image_input(img, timeout=self.url_timeout, where="image")

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        """Query side: LlamaIndex calls the single-image method for image queries."""
        return self._first(self.get_query_multi_vectors([self._image(img_file_path)]))[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        """Document side: LlamaIndex calls the batch method when indexing ``ImageNode``s."""
        return self._first(
            self.get_document_multi_vectors([self._image(p) for p in img_file_paths])
        )

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)

    def _remember_aggregate(
        self, embeddings: list[Embedding], agg: Embedding, agg_fn: AggFn | None
    ) -> None:
        """Keep the aggregated multi-vector of several query embeddings under ``agg``."""
        if not self._cache_enabled or len(embeddings) < 2 or self._cap("query") == 0:
            return
        parts = [self.lookup_multi_vector("query", e) for e in embeddings]
        if any(p is None for p in parts):  # evicted meanwhile: the store then reports it
            logger.warning(
                "The multi-vectors of %d aggregated query strings were evicted before they "
                "could be combined (query_cache_mb=%s); raise query_cache_mb.",
                len(embeddings),
                self.query_cache_mb,
            )
            return
        fn = None if agg_fn is None or agg_fn is mean_agg else agg_fn
        combined = aggregate_multi_vectors(torch.stack(parts), fn)  # type: ignore[arg-type]
        self._remember("query", combined.unsqueeze(0), keys=[vector_key(agg)])

    def get_agg_embedding_from_queries(
        self, queries: list[str], agg_fn: AggFn | None = None
    ) -> Embedding:
        """LlamaIndex's aggregate of several query embeddings (``mean_agg`` by default), e.g.
        for HyDE's ``custom_embedding_strs``; with a store attached, the position-wise
        aggregate of the strings' query multi-vectors is kept under the returned vector, so
        the store searches with all of them, not only the first vector."""
        embeddings = [self.get_query_embedding(q) for q in queries]
        agg = (agg_fn or mean_agg)(embeddings)
        self._remember_aggregate(embeddings, agg, agg_fn)
        return agg

    async def aget_agg_embedding_from_queries(
        self, queries: list[str], agg_fn: AggFn | None = None
    ) -> Embedding:
        """Async :meth:`get_agg_embedding_from_queries`."""
        embeddings = [await self.aget_query_embedding(q) for q in queries]
        agg = (agg_fn or mean_agg)(embeddings)
        self._remember_aggregate(embeddings, agg, agg_fn)
        return agg
