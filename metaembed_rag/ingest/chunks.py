"""Splitting text into chunks of whole words, measured in tokens or words."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from .base import _WORD, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE


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
