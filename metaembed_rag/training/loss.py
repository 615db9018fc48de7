"""Matryoshka Multi-Vector Retrieval (MMR) loss.

For every prefix group ``(r_q, r_c)`` an InfoNCE loss over budgeted MaxSim scores: each query's
denominator holds its positive, the other in-batch positives and **its own** hard negative (never
other queries' negatives). The token-similarity tensor is computed once and sliced per group.
Scores are unnormalised sums over query vectors (not divided by ``r_q``).

Optionally (``distill_weight > 0``) every group also matches a teacher's in-batch score
distribution: KL(softmax(teacher / distill_temperature) || softmax(group scores / temperature))
over the same columns (in-batch positives and the query's own negative). The recipe's teacher is
the backbone's own mean-pooled cosine, so training adds to what the backbone knows instead of
overwriting it. This is a recipe choice of this package, not part of the MetaEmbed paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget, BudgetLike

__all__ = ["MMRLoss", "MMRLossOutput", "group_logits"]


@dataclass
class MMRLossOutput:
    """Total loss and the loss of each group (detached floats, for logging)."""

    loss: torch.Tensor
    group_losses: dict[str, float]


def _prefix_maxsim(sims: torch.Tensor, r_q: int, r_c: int) -> torch.Tensor:
    """(..., Rq, Rc) token similarities -> (...) budgeted MaxSim: sum_i<r_q max_j<r_c."""
    return sims[..., :r_q, :r_c].amax(dim=-1).sum(dim=-1)


def group_logits(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None,
    groups: Sequence[BudgetLike],
) -> dict[Budget, torch.Tensor]:
    """Budgeted scores of every query against the in-batch positives and its own negative.

    Args:
        queries: (B, Rq, D) query multi-vectors.
        positives: (B, Rc, D); row ``b`` is query ``b``'s positive.
        negatives: (B, Rc, D) hard negatives (row ``b`` belongs to query ``b``) or ``None``.
        groups: the prefix groups.

    Returns:
        ``{budget: (B, B [+1]) scores}``; column ``b`` is positive ``b``, the last column (if
        ``negatives`` is given) the query's own negative.
    """
    if queries.dim() != 3 or positives.dim() != 3:
        raise ValueError(
            f"queries and positives must be (B, R, D); got {tuple(queries.shape)} and "
            f"{tuple(positives.shape)}"
        )
    if queries.shape[0] != positives.shape[0]:
        raise ValueError(
            f"{queries.shape[0]} queries but {positives.shape[0]} positives; one positive per query."
        )
    if negatives is not None and negatives.shape != positives.shape:
        raise ValueError(
            f"negatives {tuple(negatives.shape)} must match positives {tuple(positives.shape)}"
        )
    # (B, B, Rq, Rc): every query token against every positive's tokens, computed once.
    pos_sims = torch.einsum("aid,bjd->abij", queries, positives)
    neg_sims = torch.einsum("aid,ajd->aij", queries, negatives) if negatives is not None else None
    out: dict[Budget, torch.Tensor] = {}
    for g in groups:
        b = Budget.parse(g)
        if b.r_q > queries.shape[1] or b.r_c > positives.shape[1]:
            raise ValueError(
                f"group ({b}) needs {b.r_q} query and {b.r_c} candidate vectors; the batch has "
                f"{queries.shape[1]} and {positives.shape[1]}"
            )
        scores = _prefix_maxsim(pos_sims, b.r_q, b.r_c)
        if neg_sims is not None:
            scores = torch.cat([scores, _prefix_maxsim(neg_sims, b.r_q, b.r_c)[:, None]], dim=1)
        out[b] = scores
    return out


class MMRLoss(torch.nn.Module):
    """Sum (or mean) over prefix groups of InfoNCE with temperature ``temperature``.

    Args:
        groups: the prefix groups, e.g. ``DEFAULT_BUDGETS``.
        temperature: InfoNCE temperature (0.03 in MetaEmbed).
        weights: one weight per group (default 1 each).
        reduction: ``"sum"`` or ``"mean"`` over groups.
        distill_weight: weight of each group's KL term against the teacher scores passed to
            :meth:`forward` (0: off).
        distill_temperature: temperature of the teacher's distribution.
        distill_groups: the groups that get the KL term (default: every group), e.g.
            ``["1,1"]`` to tie only the smallest budget to the teacher and leave the larger
            ones to the contrastive loss.
    """

    def __init__(
        self,
        groups: Sequence[BudgetLike],
        temperature: float = 0.03,
        weights: Sequence[float] | None = None,
        reduction: str = "sum",
        distill_weight: float = 0.0,
        distill_temperature: float = 0.05,
        distill_groups: Sequence[BudgetLike] | None = None,
    ) -> None:
        super().__init__()
        self.groups = [Budget.parse(g) for g in groups]
        if not self.groups:
            raise ValueError("MMRLoss needs at least one group")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.weights = [1.0] * len(self.groups) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.groups):
            raise ValueError(
                f"{len(self.weights)} group weights for {len(self.groups)} groups "
                f"({', '.join(f'({g})' for g in self.groups)}): give one weight per group"
            )
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        if distill_weight < 0 or distill_temperature <= 0:
            raise ValueError(
                "distill_weight must be >= 0 and distill_temperature > 0, got "
                f"{distill_weight} and {distill_temperature}"
            )
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        if distill_groups is None:
            self.distill_groups = set(self.groups)
        else:
            self.distill_groups = {Budget.parse(g) for g in distill_groups}
            unknown = self.distill_groups - set(self.groups)
            if unknown or not self.distill_groups:
                raise ValueError(
                    f"distill_groups {sorted(str(g) for g in unknown) or '[]'} are not groups "
                    f"of this loss: choose among {[str(g) for g in self.groups]}"
                )

    def forward(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
    ) -> MMRLossOutput:
        """Loss for one batch; shapes as in :func:`group_logits`. ``teacher``: (B, B [+1])
        teacher scores over the same columns, required when ``distill_weight > 0``."""
        logits = group_logits(queries, positives, negatives, self.groups)
        labels = torch.arange(queries.shape[0], device=queries.device)
        total = queries.new_zeros(())
        per_group: dict[str, float] = {}
        target = None
        if self.distill_weight > 0:
            first = logits[self.groups[0]]
            if teacher is None or teacher.shape != first.shape:
                raise ValueError(
                    f"distill_weight > 0 needs teacher scores of shape {tuple(first.shape)}, got "
                    f"{None if teacher is None else tuple(teacher.shape)}"
                )
            target = F.softmax(teacher.float() / self.distill_temperature, dim=1)
        for weight, group in zip(self.weights, self.groups, strict=True):
            scaled = logits[group].float() / self.temperature
            loss = F.cross_entropy(scaled, labels)
            per_group[str(group)] = float(loss.detach())
            if target is not None and group in self.distill_groups:
                kl = F.kl_div(F.log_softmax(scaled, dim=1), target, reduction="batchmean")
                per_group[f"kl{group}"] = float(kl.detach())
                loss = loss + self.distill_weight * kl
            total = total + weight * loss
        if self.reduction == "mean":
            total = total / sum(self.weights)
        return MMRLossOutput(total, per_group)
