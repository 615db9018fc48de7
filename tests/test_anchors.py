"""Segment anchors (metaembed_rag.anchors): the slot plan and the pooling weights."""

from __future__ import annotations

import pytest
import torch

from metaembed_rag.anchors import mix_whole, segment_levels, segment_means, segment_weights


def test_levels_follow_the_budget_boundaries() -> None:
    levels = segment_levels([1, 4, 8, 16, 64], 64)
    assert len(levels) == 64
    sizes = [levels[s][0] for s in (0, 1, 4, 8, 16, 63)]
    assert sizes == [1, 3, 4, 8, 48, 48]
    assert [j for n, j in levels if n == 48] == list(range(48))
    # slot 0 is its own level, then slot 1 up to the first boundary (2), then slots 2-3
    assert segment_levels([2, 4], 4) == [(1, 0), (1, 0), (2, 0), (2, 1)]
    assert segment_levels([1, 99], 1) == [(1, 0)]
    with pytest.raises(ValueError, match="slots must be >= 1"):
        segment_levels([1], 0)


def test_weights_ignore_padding_on_either_side() -> None:
    levels = segment_levels([1, 4], 4)
    left = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    wl, wr = segment_weights(left, levels, 1), segment_weights(right, levels, 1)
    torch.testing.assert_close(wl[0, :, 2:], wr[0, :, :6])
    assert wl[0, :, :2].abs().sum() == 0 and wr[0, :, 6:].abs().sum() == 0
    torch.testing.assert_close(wl.sum(-1), torch.ones(1, 4))
    # 6 tokens in 3 segments: ranks 0-1, 2-3, 4-5
    assert wr[0, 1].tolist() == [0.5, 0.5, 0, 0, 0, 0, 0, 0]
    assert wr[0, 3].tolist() == [0, 0, 0, 0, 0.5, 0.5, 0, 0]


def test_short_inputs_get_fewer_segments_and_the_mean_elsewhere() -> None:
    levels = segment_levels([1, 4], 4)  # one level of 3 segments after slot 0
    mask = torch.ones(2, 8)
    mask[1, :5] = 0  # 3 tokens
    w = segment_weights(mask, levels, min_tokens=2)
    # 8 tokens, min 2: three segments (8 // 2 = 4 >= 3): ranks 0-1, 2-4, 5-7
    assert w[0, 1].nonzero().flatten().tolist() == [0, 1]
    assert w[0, 2].nonzero().flatten().tolist() == [2, 3, 4]
    assert w[0, 3].nonzero().flatten().tolist() == [5, 6, 7]
    # 3 tokens, min 2: one segment (the whole input), then the mean again
    for s in range(4):
        assert w[1, s].nonzero().flatten().tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="min_tokens must be >= 1"):
        segment_weights(mask, levels, 0)


def test_means_match_a_loop_and_keep_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 10, 5, generator=g)
    mask = torch.ones(3, 10)
    mask[1, :4] = 0
    mask[2, :9] = 0  # a single token: every slot is that token
    levels = segment_levels([1, 4, 8], 8)
    out = segment_means(hidden, mask, levels, 1)
    for b in range(3):
        states = hidden[b][mask[b].bool()]
        n = len(states)
        for s, (segs, j) in enumerate(levels):
            k = max(1, min(segs, n))
            part = states[j * n // k : (j + 1) * n // k] if j < k else states
            torch.testing.assert_close(out[b, s], part.mean(0))
    assert segment_means(hidden.double(), mask, levels, 1).dtype == torch.float64


def test_mix_adds_the_whole_mean_to_every_slot() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(2, 5, 7, generator=g, dtype=torch.float64) * 3
    anchors[1, 4] = anchors[1, 0] * 0.5  # a slot that repeats the whole mean
    out = mix_whole(anchors, 0.75)
    for b in range(2):
        whole = anchors[b, 0] / anchors[b, 0].norm()
        for s in range(5):
            v = anchors[b, s] / anchors[b, s].norm() + 0.75 * whole
            torch.testing.assert_close(out[b, s], v / v.norm())
        torch.testing.assert_close(out[b, 0], whole)
    torch.testing.assert_close(out[1, 4], out[1, 0])
    unit = torch.nn.functional.normalize(anchors, dim=-1)
    torch.testing.assert_close(mix_whole(anchors, 0.0), unit)
    with pytest.raises(ValueError, match="mix must be >= 0, got -1"):
        mix_whole(anchors, -1.0)


def test_docstring_examples_run() -> None:
    import doctest

    from metaembed_rag import anchors

    result = doctest.testmod(anchors, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def test_content_mask_cuts_segments_from_content_only() -> None:
    """``content``: segments (levels of two or more slots) are cut from the content positions
    and counted by them; levels of one slot and the repeated slots pool every attended
    position; a row without content positions falls back to them all (a loop reference)."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 12, 5, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 12)
    mask[1, :3] = 0  # left padding
    mask[2, :8] = 0  # 4 tokens: [CLS] a b [SEP]
    content = mask.clone()
    for b in range(4):
        on = mask[b].nonzero().flatten()
        content[b, on[0]] = content[b, on[-1]] = 0  # [CLS] ... [SEP]
    content[3] = 0  # nothing but special tokens
    levels = segment_levels([1, 2, 4], 4)  # slot 0, slot 1 (a level of one slot), slots 2-3
    out = segment_means(hidden, mask, levels, 2, content=content)
    for b in range(4):
        every = hidden[b][mask[b].bool()]
        cut = hidden[b][content[b].bool()] if content[b].any() else every
        n = len(cut)
        for s, (segs, j) in enumerate(levels):
            k = max(1, min(segs, n // 2))
            part = cut[j * n // k : (j + 1) * n // k] if segs > 1 and j < k else every
            torch.testing.assert_close(out[b, s], part.mean(0))
    # [CLS] a b [SEP] with 2 tokens a segment: one content segment, then the whole input
    w = segment_weights(mask, levels, 2, content=content)
    assert w[2, 2, 8:].tolist() == [0, 0.5, 0.5, 0] and w[2, 3, 8:].tolist() == [0.25] * 4
    torch.testing.assert_close(segment_weights(mask, levels, 2, content=mask),
                               segment_weights(mask, levels, 2))  # fmt: skip
    with pytest.raises(ValueError, match="content mask shape"):
        segment_weights(mask, levels, 2, content=content[:, 1:])
