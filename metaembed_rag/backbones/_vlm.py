"""Helpers shared by the vision-language adapters: prompts and image-safe truncation.

A VLM input is rendered as one chat turn: ``[image placeholder] + body``, where the body is the
item's text with the side's prefix (and, for queries, the instruction). Truncation at
``max_length`` only ever shortens the body: the image tokens and the chat template stay whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..inputs import Item

logger = logging.getLogger(__name__)

__all__ = ["item_body", "chat_messages", "truncate_bodies"]


def item_body(adapter: Any, item: Item, side: str, instruction: str | None) -> str:
    """The text part of a VLM input: the item's text (or ``config.image_prompt`` for an
    image-only input) with the side's prefix, a document's title and the query instruction
    applied."""
    text = item.text if item.text is not None else adapter.config.image_prompt
    return adapter.format_text(text, side, instruction, item.title)  # type: ignore[no-any-return]


def chat_messages(body: str, has_image: bool) -> list[dict[str, Any]]:
    """One user turn: the image (if any) first, then the text."""
    content: list[dict[str, Any]] = []
    if has_image:
        content.append({"type": "image"})
    content.append({"type": "text", "text": body})
    return [{"role": "user", "content": content}]


def _cut_body(tokenizer: Any, body: str, num_tokens: int) -> str:
    """``body`` without its last ``num_tokens`` tokens, cut at a character boundary."""
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    keep = len(offsets) - max(1, num_tokens)
    if keep <= 0:
        return ""
    return body[: offsets[keep - 1][1]]


def truncate_bodies(
    bodies: list[str],
    lengths_of: Callable[[list[int], list[str]], list[int]],
    tokenizer: Any,
    max_length: int,
    sources: Sequence[str],
    max_rounds: int = 8,
) -> tuple[list[str], list[int], int]:
    """Shorten the bodies whose rendered input exceeds ``max_length`` tokens.

    Args:
        bodies: the text parts, one per item.
        lengths_of: ``(indices, bodies)`` -> the rendered length (template + image tokens +
            body) of each listed item with the given body.
        tokenizer: a fast tokenizer (for offsets).
        max_length: token limit per input.
        sources: item descriptions for log messages.

    Returns:
        (new bodies, their lengths, number of items truncated). An input whose fixed part
        (template and image tokens) alone exceeds ``max_length`` keeps an empty body and is
        left longer than ``max_length``: image tokens are never cut.
    """
    bodies = list(bodies)
    lengths = lengths_of(list(range(len(bodies))), bodies)
    truncated: set[int] = set()
    for _ in range(max_rounds):
        over = [i for i, n in enumerate(lengths) if n > max_length and bodies[i]]
        if not over:
            break
        for i in over:
            truncated.add(i)
            bodies[i] = _cut_body(tokenizer, bodies[i], lengths[i] - max_length)
        new_lengths = lengths_of(over, [bodies[i] for i in over])
        for i, n in zip(over, new_lengths, strict=True):
            lengths[i] = n
    for i, n in enumerate(lengths):
        if n > max_length:
            truncated.add(i)
            logger.warning(
                "%s: the image and prompt template alone take %d tokens, more than "
                "max_length=%d; the text was dropped but the image tokens are kept whole "
                "(raise max_length or lower the image processor's max_pixels).",
                sources[i],
                n,
                max_length,
            )
    return bodies, lengths, len(truncated)
