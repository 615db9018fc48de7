"""The chunking policy of a collection, in one place: the unit, the default size and overlap
for a model, how a run's options combine with a collection's saved ones, and the checks.

The splitting itself is :mod:`metaembed_rag.ingest` (``chunk_text``); this module decides
*which* chunking a collection and each :meth:`~metaembed_rag.collection.Collection.add_paths`
run use:

* unit: ``tokens`` of the model's tokenizer, or ``words`` for a model without one;
* default size: the largest chunk the model reads whole
  (:func:`~metaembed_rag.ingest.model_chunk_limit`) minus
  :data:`~metaembed_rag.ingest.TOKEN_MARGIN`; :data:`~metaembed_rag.ingest.DEFAULT_CHUNK_SIZE`
  words without a tokenizer;
* default overlap: :data:`~metaembed_rag.ingest.DEFAULT_TOKEN_OVERLAP` tokens
  (:data:`~metaembed_rag.ingest.DEFAULT_CHUNK_OVERLAP` words), or a sixth of a chunk size too
  small for it (:func:`small_chunk_overlap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ingest import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_OVERLAP,
    TOKEN_MARGIN,
    check_chunking,
    model_chunk_limit,
)

__all__ = ["Chunking", "check_options", "small_chunk_overlap"]


def small_chunk_overlap(size: int) -> int:
    """The overlap used when the default one does not fit ``size``: a sixth of it."""
    return size // 6


def check_options(chunk_size: int | None, chunk_overlap: int | None) -> None:
    """The checks that need no model (run before anything loads): ``chunk_size`` (if given)
    positive, ``chunk_overlap`` (if given) in ``[0, chunk_size)``.

    Raises:
        ValueError: the message names the option and the valid range.
    """
    if chunk_size is not None:
        check_chunking(chunk_size, 0 if chunk_overlap is None else chunk_overlap)


def _check_token_limit(size: int, limit: int | None, model: Any) -> None:
    if limit is not None and size > limit:
        max_length = int(model.config.max_length)
        raise ValueError(
            f"chunk_size {size} is more tokens than the model reads ({limit}: its max_length "
            f"{max_length} minus {max_length - limit} it adds around a document); use "
            f"--chunk-size / chunk_size <= {limit}."
        )


@dataclass(frozen=True)
class Chunking:
    """One chunking: ``size`` and ``overlap`` in ``unit`` (``"tokens"`` or ``"words"``)."""

    unit: str
    size: int
    overlap: int

    @classmethod
    def for_model(cls, model: Any, size: int | None = None, overlap: int | None = None) -> Chunking:
        """A new collection's chunking on ``model`` (``None``: the defaults above).

        Raises:
            ValueError: bad values, or a token ``size`` larger than the model reads whole.
        """
        limit = model_chunk_limit(model)
        if limit is None:
            unit, default_size, default_overlap = "words", DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP
        else:
            unit, default_size = "tokens", max(1, limit - TOKEN_MARGIN)
            default_overlap = DEFAULT_TOKEN_OVERLAP
        size = default_size if size is None else size
        if overlap is None:  # the default overlap, if it fits the chunk size
            overlap = default_overlap if size > 4 * default_overlap else small_chunk_overlap(size)
        check_chunking(size, overlap)
        if unit == "tokens":
            _check_token_limit(size, limit, model)
        return cls(unit, int(size), int(overlap))

    def for_run(self, model: Any, size: int | None = None, overlap: int | None = None) -> Chunking:
        """The chunking of one ``add_paths`` run: this (the collection's) with the run's
        options; a saved overlap that does not fit a smaller given size shrinks to
        :func:`small_chunk_overlap`.

        Raises:
            ValueError: bad values, or a token ``size`` larger than the model reads whole.
        """
        new_size = self.size if size is None else size
        new_overlap = self.overlap if overlap is None else overlap
        if overlap is None and isinstance(new_size, int) and new_overlap >= new_size:
            new_overlap = small_chunk_overlap(new_size)
        check_chunking(new_size, new_overlap)
        if self.unit == "tokens" and size is not None:
            _check_token_limit(new_size, model_chunk_limit(model), model)
        return Chunking(self.unit, new_size, new_overlap)
