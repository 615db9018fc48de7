"""Anchors of anchored models: what each output vector starts from before the Meta tokens add.

An anchored model (``MetaEmbedConfig.anchor``) computes vector ``i`` of an input as
``normalize(a_i + W h_i + b)``: ``h_i`` Meta token ``i``'s last-layer state, ``W, b`` a learned
map initialised at zero, and ``a_i`` an *anchor* pooled from the same pass's input states:

* ``"mean"``: every ``a_i`` is the unit mean of the input states (the backbone's own sentence
  embedding for a mean-pooling backbone such as all-MiniLM-L6-v2).
* ``"segments"``: on the document side, ``a_i`` is the unit mean of one *segment* of the
  input (queries keep the mean). The slots are cut into levels at the trained budgets' ``r_c``
  boundaries (for 1, 4, 8, 16, 64: levels of 1, 3, 4, 8 and 48 slots; slot 0 is always a
  level of its own); a level of ``n`` slots
  splits the input into ``n`` contiguous segments of equal length (a level of one slot is the
  whole input). Every budget prefix is thus whole levels: a larger budget adds finer views of
  the same document, and MaxSim takes, per query vector, the best-matching part.

Inputs too short for ``n`` segments of ``min_tokens`` use ``max(1, L // min_tokens)``
segments; the level's remaining slots repeat the whole-input mean (a duplicate changes no
MaxSim). Padding is excluded, wherever it sits (models pad on the left).

With a *content* mask (``MetaEmbedConfig.anchor_skip_special``: the tokenizer's special tokens,
such as BERT's ``[CLS]`` and ``[SEP]``, left out) segments are cut from the content tokens
only, and ``L`` counts them; levels of one slot and the repeated slots stay the mean of every
token, so slot 0 is still the backbone's own sentence embedding. An input without content
tokens falls back to all its tokens.

With a *mix* ``m > 0`` (``MetaEmbedConfig.anchor_mix``) a segment's anchor is
``normalize(unit(segment mean) + m * unit(whole mean))`` (:func:`mix_whole`): every vector
keeps the document's identity, so a part that many documents share (a title or header that
every chunk of a page repeats) weighs less against what tells them apart.

This module holds only pure functions; :class:`~metaembed_rag.MetaEmbedModel` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["ANCHORS", "mix_whole", "segment_levels", "segment_means", "segment_weights"]

#: anchor settings a :class:`~metaembed_rag.config.MetaEmbedConfig` accepts (``None``: none)
ANCHORS = ("mean", "segments")


def segment_levels(boundaries: Iterable[int], slots: int) -> list[tuple[int, int]]:
    """``(segments, index)`` of every slot: slot ``s`` is segment ``index`` of a split of the
    input into ``segments`` parts. Slot 0 is always the whole input (a level of one slot);
    the other levels end at each boundary (the trained budgets' ``r_c``) below ``slots``, and
    at ``slots``.

    >>> segment_levels([1, 4, 8], 8)
    [(1, 0), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3)]
    >>> segment_levels([], 3)
    [(1, 0), (2, 0), (2, 1)]

    Raises:
        ValueError: ``slots`` < 1.
    """
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    ends = sorted({b for b in boundaries if 0 < b < slots} | {1, slots})
    out: list[tuple[int, int]] = []
    start = 0
    for end in ends:
        out += [(end - start, j) for j in range(end - start)]
        start = end
    return out


def segment_weights(
    mask: torch.Tensor,
    levels: list[tuple[int, int]],
    min_tokens: int,
    content: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, S, L) pooling weights, each row summing to 1 over the attended positions.

    Args:
        mask: (B, L) attention mask of the input positions (1 = a token, 0 = padding, on
            either side).
        levels: :func:`segment_levels` of the S slots.
        min_tokens: fewest tokens a segment may hold (>= 1).
        content: optional (B, L) mask of the positions segments are cut from (a subset of
            ``mask``, e.g. without special tokens); ``None``: ``mask``. A row without content
            positions uses ``mask``.

    Segment ``j`` of ``k`` covers the content tokens of rank ``floor(j L / k)`` to
    ``floor((j + 1) L / k) - 1``, ``L`` the input's content token count. Levels of one slot
    and slots past an input's ``k`` segments pool every attended position.

    >>> w = segment_weights(torch.tensor([[0, 1, 1, 1, 1]]), [(1, 0), (2, 0), (2, 1)], 1)
    >>> w[0].tolist()
    [[0.0, 0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5, 0.5]]
    >>> segment_weights(torch.tensor([[1, 1, 1, 1]]), [(1, 0), (2, 0), (2, 1)], 1,
    ...                 content=torch.tensor([[0, 1, 1, 0]]))[0].tolist()
    [[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    """
    if min_tokens < 1:
        raise ValueError(f"min_tokens must be >= 1, got {min_tokens}")
    on = mask.bool()
    if content is None:
        cut = on
    else:
        if content.shape != mask.shape:
            raise ValueError(
                f"content mask shape {tuple(content.shape)} differs from the attention "
                f"mask's {tuple(mask.shape)}"
            )
        cut = content.bool() & on
        cut = torch.where(cut.any(dim=1, keepdim=True), cut, on)  # no content: every token
    rank = (cut.long().cumsum(dim=1) - 1)[:, None, :]  # (B, 1, L): a token's place among tokens
    n = cut.sum(dim=1)[:, None, None]  # (B, 1, 1)
    segs = torch.tensor([s for s, _ in levels], device=mask.device)[None, :, None]  # (1, S, 1)
    idx = torch.tensor([j for _, j in levels], device=mask.device)[None, :, None]
    k = torch.minimum(segs, (n // min_tokens).clamp_min(1))  # segments this input gets
    lo = torch.div(idx * n, k, rounding_mode="floor")
    hi = torch.div((idx + 1) * n, k, rounding_mode="floor")
    # levels of one slot and slots past this input's segments: the whole input
    whole = ((segs == 1) | (idx >= k)) & on[:, None, :]  # (B, S, L)
    inside = (rank >= lo) & (rank < hi) & (idx < k) & (segs > 1) & cut[:, None, :]
    w = (inside | whole).float()
    return w / w.sum(dim=-1, keepdim=True).clamp_min(1)


def segment_means(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    levels: list[tuple[int, int]],
    min_tokens: int,
    content: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, S, H) mean of ``hidden`` (B, L, H) over each slot's segment (not normalised);
    ``content`` as in :func:`segment_weights`.

    >>> h = torch.arange(8.0).reshape(1, 4, 2)
    >>> segment_means(h, torch.ones(1, 4), [(1, 0), (2, 0), (2, 1)], 1)[0].tolist()
    [[3.0, 4.0], [1.0, 2.0], [5.0, 6.0]]
    """
    w = segment_weights(mask, levels, min_tokens, content).to(hidden.dtype)
    return torch.bmm(w, hidden)


def mix_whole(anchors: torch.Tensor, mix: float) -> torch.Tensor:
    """(B, S, H) unit anchors ``normalize(unit(a_s) + mix * unit(a_0))``: each slot's pooled
    states ``anchors`` (B, S, H) with the whole-input mean (slot 0, :func:`segment_levels`)
    added at weight ``mix`` >= 0. Slot 0, and any slot that repeats it, stays the unit mean.

    >>> a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    >>> mix_whole(a, 1.0)[0].tolist()  # doctest: +ELLIPSIS
    [[1.0, 0.0], [0.7071..., 0.7071...]]

    Raises:
        ValueError: ``mix`` < 0.
    """
    if mix < 0:
        raise ValueError(f"mix must be >= 0, got {mix}")
    unit = torch.nn.functional.normalize(anchors, p=2, dim=-1)
    return torch.nn.functional.normalize(unit + mix * unit[:, :1], p=2, dim=-1)
