"""The MMR loss on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from metaembed_rag import Budget
from metaembed_rag.training import MMRLoss, group_logits


def _unit(*rows: list[float]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=-1, keepdim=True)


def test_group_scores_use_the_right_prefix() -> None:
    # 2 queries with 2 vectors, 2 positives + 2 negatives with 2 vectors, D = 2.
    q = torch.stack([_unit([1, 0], [0, 1]), _unit([0, 1], [1, 0])])
    pos = torch.stack([_unit([1, 0], [1, 1]), _unit([0, 1], [-1, 0])])
    neg = torch.stack([_unit([0, 1], [0, 1]), _unit([-1, 0], [1, 0])])
    out = group_logits(q, pos, neg, [(1, 1), (2, 2)])
    s = 1 / math.sqrt(2)
    # (1,1): only first vectors: q0=[1,0], q1=[0,1]; p0=[1,0], p1=[0,1]; n0=[0,1], n1=[-1,0]
    expected_11 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(out[Budget(1, 1)], expected_11)
    # (2,2): q0 vs p0: max(1, s) + max(0, s) = 1 + s; q0 vs p1: max(0,-1) + max(1,0) = 1
    #        q0 vs n0: max(0,0) + max(1,1) = 1
    #        q1 vs p0: [0,1]: max(0, s) = s, [1,0]: max(1, s) = 1 -> 1 + s
    #        q1 vs p1: [0,1]: max(1, 0) = 1, [1,0]: max(0, -1) = 0 -> 1
    #        q1 vs n1: [0,1]: max(0, 0) = 0, [1,0]: max(-1, 1) = 1 -> 1
    expected_22 = torch.tensor([[1 + s, 1.0, 1.0], [1 + s, 1.0, 1.0]])
    torch.testing.assert_close(out[Budget(2, 2)], expected_22)

    loss = MMRLoss([(1, 1), (2, 2)], temperature=0.5)(q, pos, neg)

    def ce(row: list[float], label: int) -> float:
        z = [v / 0.5 for v in row]
        return -(z[label] - math.log(sum(math.exp(v) for v in z)))

    l11 = (ce([1, 0, 0], 0) + ce([0, 1, 0], 1)) / 2
    l22 = (ce([1 + s, 1, 1], 0) + ce([1 + s, 1, 1], 1)) / 2
    assert loss.group_losses["1,1"] == pytest.approx(l11, rel=1e-5)
    assert loss.group_losses["2,2"] == pytest.approx(l22, rel=1e-5)
    assert float(loss.loss) == pytest.approx(l11 + l22, rel=1e-5)
    mean = MMRLoss([(1, 1), (2, 2)], temperature=0.5, reduction="mean")(q, pos, neg)
    assert float(mean.loss) == pytest.approx((l11 + l22) / 2, rel=1e-5)


def test_only_own_negative_in_denominator() -> None:
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    pos = torch.nn.functional.normalize(torch.randn(3, 8, 8), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(3, 8, 8), dim=-1)
    logits = group_logits(q, pos, neg, [(4, 8)])[Budget(4, 8)]
    assert logits.shape == (3, 4)
    for a in range(3):
        own = (q[a] @ neg[a].T).amax(dim=-1).sum()
        torch.testing.assert_close(logits[a, 3], own)
        for b in range(3):
            torch.testing.assert_close(logits[a, b], (q[a] @ pos[b].T).amax(dim=-1).sum())


def test_weights_and_errors() -> None:
    q = torch.nn.functional.normalize(torch.randn(2, 2, 4), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(2, 4, 4), dim=-1)
    a = MMRLoss([(1, 1), (2, 4)], weights=[1.0, 0.0])(q, p)
    b = MMRLoss([(1, 1)])(q, p)
    assert float(a.loss) == pytest.approx(float(b.loss))
    with pytest.raises(ValueError, match="needs 4 query"):
        MMRLoss([(4, 4)])(q, p)
    with pytest.raises(ValueError, match="one positive per query"):
        MMRLoss([(1, 1)])(q, p[:1])
