"""Repeated query vectors: score one, count it ``r_q`` times.

A model whose query side pools the whole input for every slot (the anchored default: every
query vector is the query's mean plus a learned map that is zero until trained) returns ``Kq``
identical vectors. Under a budget ``(r_q, r_c)`` each of them adds the same
``max_{j < r_c} <q_0, c_j>``, so the score is ``r_q`` times the ``(1, r_c)`` score. The
scorers (:func:`~metaembed_rag.scoring.maxsim` and the coded-row ones) check for that, bit for
bit, and compute the ``(1, r_c)`` score once instead of ``r_q`` times:

>>> import torch
>>> q = torch.tensor([[[0.6, 0.8], [0.6, 0.8], [0.6, 0.8]]])
>>> q1, r_q, times = collapse_repeated(q, 3)
>>> tuple(q1.shape), r_q, times
((1, 1, 2), 1, 3)
>>> collapse_repeated(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), 2)[1:]
(2, 1)

The result differs from summing ``r_q`` equal maxima only by float32 rounding (a multiplication
instead of ``r_q - 1`` additions). Queries that need gradients are never collapsed (the equal
vectors may be distinct parameters' outputs), nor is a batch in which any query's first
``r_q`` vectors differ.
"""

from __future__ import annotations

import torch

__all__ = ["collapse_repeated", "scale_repeated"]


def collapse_repeated(q: torch.Tensor, r_q: int) -> tuple[torch.Tensor, int, int]:
    """``(queries, r_q, times)`` to score with: ``(q[:, :1], 1, r_q)`` when every query's first
    ``r_q`` vectors of ``q`` ``(nq, Kq, D)`` are equal to its first one (and ``q`` needs no
    gradient), else ``(q, r_q, 1)``. Multiply the scores by ``times``
    (:func:`scale_repeated`)."""
    if r_q <= 1 or q.requires_grad or q.shape[0] == 0:
        return q, r_q, 1
    head = q[:, :r_q]
    if not torch.equal(head, head[:, :1].expand_as(head)):
        return q, r_q, 1
    return q[:, :1], 1, r_q


def scale_repeated(scores: torch.Tensor, times: int) -> torch.Tensor:
    """``scores * times`` (in place; ``scores`` unchanged when ``times`` is 1)."""
    return scores.mul_(times) if times != 1 else scores
