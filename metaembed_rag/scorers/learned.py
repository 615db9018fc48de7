"""Scorers learned on frozen vectors: :class:`BilinearScorer` and :class:`CrossAttentionScorer`.

Both start as MaxSim exactly (an untrained one scores like :class:`MaxSimScorer`, bit for bit)
and learn a correction with ``metaembed-rag train-scorer`` (:mod:`metaembed_rag.scorers.training`).

* Bilinear: ``s(q, c) = sum_i max_j q_i^T W c_j`` with ``W = I + U V^T`` (rank ``r``; ``U``
  starts at zero). Since ``q^T W c = (W^T q)^T c`` it is MaxSim on the transformed query
  vectors ``q W``: it reuses the kernel in place on the stored rows and can score every
  document (a first-stage scorer).
* Cross-attention: each of the first ``r_q`` query vectors attends over the first ``r_c``
  candidate vectors (one head in a ``hidden``-wide projection); a small MLP reads the attended
  context, the query vector's projection and its MaxSim term and adds one number per query
  vector to the MaxSim sum (its last layer starts at zero). A reranker of the top candidates
  (each pair costs ``O((r_q + r_c) * D * hidden)``), not a first stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..budget import Budget, BudgetLike
from ..scoring import maxsim, maxsim_pairwise
from .base import Scorer, as_budget

if TYPE_CHECKING:  # pragma: no cover
    from ..index.backend import StorageBackend

__all__ = ["BilinearScorer", "CrossAttentionScorer", "LearnedScorer"]

#: Query-candidate pairs scored per step by the cross-attention block (bounds memory).
PAIR_CHUNK = 1024


class LearnedScorer(Scorer, nn.Module):
    """A scorer with trainable weights (an ``nn.Module``); ``config()`` is what is saved beside
    the weights and rebuilds it (``kind`` + constructor arguments)."""

    kind: ClassVar[str] = ""

    def __init__(self, dim: int, fingerprint: str | None = None) -> None:
        nn.Module.__init__(self)
        self.dim = int(dim)
        self.fingerprint = fingerprint

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready)."""
        return {"dim": self.dim}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, **self.config()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args}, fingerprint={self.fingerprint!r})"

    def train_scores(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: Budget
    ) -> torch.Tensor:
        """Differentiable ``(n, Kq, D) x (n, m, Kc, D) -> (n, m)`` (pure torch; training)."""
        raise NotImplementedError


def _torch_maxsim_pairwise(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``(n, rq, D) x (n, m, rc, D) -> (n, m)`` differentiable MaxSim (already sliced)."""
    sim = torch.einsum("nid,nmjd->nmij", q, d)
    return sim.max(dim=-1).values.sum(dim=-1)


class BilinearScorer(LearnedScorer):
    """``sum_i max_j q_i^T (I + U V^T) c_j`` (see the module docstring).

    Args:
        dim: vector width D.
        rank: rank of the learned part ``U V^T`` (``U``, ``V``: ``(D, rank)``).
        fingerprint: the encoder the scorer is trained for.
        seed: initialisation of ``V`` (``U`` starts at zero, so ``W = I``).

    >>> import torch
    >>> from metaembed_rag.scorers import MaxSimScorer
    >>> q, d = torch.randn(2, 4, 8), torch.randn(3, 6, 8)
    >>> torch.equal(BilinearScorer(8).score(q, d, (4, 6)), MaxSimScorer().score(q, d, (4, 6)))
    True
    """

    name = "bilinear"
    kind = "bilinear"

    def __init__(
        self, dim: int, rank: int = 32, fingerprint: str | None = None, seed: int = 0
    ) -> None:
        super().__init__(dim, fingerprint)
        if rank < 1 or rank > dim:
            raise ValueError(f"rank must be in 1..{dim} (the vector width), got {rank}")
        self.rank = int(rank)
        g = torch.Generator().manual_seed(seed)
        self.u = nn.Parameter(torch.zeros(dim, rank))
        self.v = nn.Parameter(torch.randn(dim, rank, generator=g) / math.sqrt(dim))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "rank": self.rank}

    def transform(self, queries: torch.Tensor) -> torch.Tensor:
        """``q W = q + (q U) V^T`` (float32; ``q`` unchanged while ``U`` is zero)."""
        q = queries.float()
        if not bool(self.u.detach().any()):
            return q
        return q + (q @ self.u) @ self.v.T

    def score(self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike) -> torch.Tensor:
        with torch.no_grad():
            return maxsim(self.transform(queries), docs, as_budget(budget).as_tuple())

    def score_pairwise(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike
    ) -> torch.Tensor:
        with torch.no_grad():
            return maxsim_pairwise(self.transform(queries), docs, as_budget(budget).as_tuple())

    def rerank(
        self, backend: StorageBackend, queries: torch.Tensor, rows: np.ndarray, budget: Budget
    ) -> np.ndarray:
        with torch.no_grad():
            return backend.score(self.transform(queries), rows, budget)

    def scan(
        self, backend: StorageBackend, queries: torch.Tensor, budget: Budget, allowed: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with torch.no_grad():
            q = self.transform(queries)
        return backend.scan(q, budget, allowed)

    def train_scores(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: Budget
    ) -> torch.Tensor:
        q = queries[:, : budget.r_q].float()
        q = q + (q @ self.u) @ self.v.T
        return _torch_maxsim_pairwise(q, docs[:, :, : budget.r_c].float())


class CrossAttentionScorer(LearnedScorer):
    """MaxSim plus a learned per-query-vector correction from attention over the candidate.

    Args:
        dim: vector width D.
        hidden: width of the attention projections and the MLP.
        fingerprint: the encoder the scorer is trained for.
        seed: initialisation (the MLP's last layer starts at zero: untrained = MaxSim).

    >>> import torch
    >>> from metaembed_rag.scorers import MaxSimScorer
    >>> q, d = torch.randn(2, 4, 8), torch.randn(2, 3, 6, 8)
    >>> s = CrossAttentionScorer(8, hidden=4).score_pairwise(q, d, (4, 6))
    >>> torch.allclose(s, MaxSimScorer().score_pairwise(q, d, (4, 6)), atol=1e-5)
    True
    """

    name = "cross-attention"
    kind = "cross-attention"
    first_stage = False

    def __init__(
        self, dim: int, hidden: int = 64, fingerprint: str | None = None, seed: int = 0
    ) -> None:
        super().__init__(dim, fingerprint)
        self.hidden = int(hidden)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.q_proj = nn.Linear(dim, hidden)
            self.k_proj = nn.Linear(dim, hidden)
            self.v_proj = nn.Linear(dim, hidden)
            last = nn.Linear(hidden, 1)
            self.mlp = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.GELU(), last)
        finally:
            torch.random.set_rng_state(gen_state)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": self.hidden}

    def _pairs(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``(B, rq, D) x (B, rc, D) -> (B,)``: MaxSim + the attention correction."""
        sim = q @ c.transpose(1, 2)  # (B, rq, rc)
        best = sim.max(dim=-1).values  # (B, rq)
        qp = self.q_proj(q)
        att = torch.softmax(qp @ self.k_proj(c).transpose(1, 2) / math.sqrt(self.hidden), -1)
        ctx = att @ self.v_proj(c)  # (B, rq, hidden)
        extra = self.mlp(torch.cat([ctx, qp, best.unsqueeze(-1)], dim=-1)).squeeze(-1)
        return best.sum(dim=-1) + extra.sum(dim=-1)

    def train_scores(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: Budget
    ) -> torch.Tensor:
        n, m = docs.shape[:2]
        q = queries[:, : budget.r_q].float()
        c = docs[:, :, : budget.r_c].float()
        qq = q.unsqueeze(1).expand(n, m, *q.shape[1:]).reshape(n * m, *q.shape[1:])
        return self._pairs(qq, c.reshape(n * m, *c.shape[2:])).view(n, m)

    def score_pairwise(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike
    ) -> torch.Tensor:
        b = as_budget(budget)
        n, m = docs.shape[:2]
        q = torch.as_tensor(queries)[:, : b.r_q].float()
        c = torch.as_tensor(docs)[:, :, : b.r_c].float()
        out = torch.empty(n * m, device=q.device)
        flat_c = c.reshape(n * m, *c.shape[2:])
        query_of = torch.arange(n, device=q.device).repeat_interleave(m)
        with torch.no_grad():
            for s in range(0, n * m, PAIR_CHUNK):
                e = min(n * m, s + PAIR_CHUNK)
                out[s:e] = self._pairs(q[query_of[s:e]], flat_c[s:e])
        return out.view(n, m)

    def score(self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike) -> torch.Tensor:
        q = torch.as_tensor(queries)
        d = torch.as_tensor(docs).unsqueeze(0)
        return torch.cat([self.score_pairwise(q[i : i + 1], d, budget) for i in range(q.shape[0])])
