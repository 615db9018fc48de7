"""Training a learned scorer on frozen vectors (``metaembed-rag train-scorer``).

The training pairs (``pairs/<source>/pairs.jsonl``: ``query``, ``positive``) are sampled per
source, encoded once with the model (cached on disk, keyed by the model fingerprint and the
files' identities), hard negatives are mined once with MaxSim over the encoded positives, and
then only the scorer's weights move: InfoNCE over ``[positive, mined negatives, the other
queries' positives]`` with ``logits = score / (r_q * temperature)``. A tenth of the pairs is
held out, so the saved record says whether the scorer helped there: the held-out MRR@10 (the scorer reranking
MaxSim's top 30) is measured every ``eval_every`` steps and the best weights are kept, step 0
(the untrained scorer, equal to MaxSim) included: a scorer that never beats MaxSim on the
held-out pairs is saved as MaxSim.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..data import load_pairs as read_pairs_file
from ..scoring import maxsim
from ..vector_cache import cached_vectors, default_cache_dir, file_identity
from .base import MaxSimScorer, Scorer
from .learned import BilinearScorer, CrossAttentionScorer, LearnedScorer

__all__ = [
    "PairVectors",
    "ScorerRecipe",
    "encode_pairs",
    "infonce_loss",
    "load_pairs",
    "mine_negatives",
    "mrr_at_10",
    "train_scorer",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerRecipe:
    """What ``train-scorer`` does (saved in the scorer's JSON)."""

    kind: str = "bilinear"
    per_source: int = 300
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    negatives: int = 7
    lr: float = 2e-4
    temperature: float = 0.05
    rank: int = 32
    hidden: int = 64
    mine_budget: tuple[int, int] = (2, 16)
    dev_fraction: float = 0.1
    eval_every: int = 25
    keep: str = "best"

    def __post_init__(self) -> None:
        if self.kind not in ("bilinear", "cross-attention"):
            raise ValueError(f"kind must be 'bilinear' or 'cross-attention', got {self.kind!r}")
        for name in ("per_source", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.negatives < 0 or self.temperature <= 0 or self.lr <= 0:
            raise ValueError("negatives must be >= 0, temperature and lr > 0")


@dataclass
class PairVectors:
    """Encoded pairs: ``queries (n, Kq, D)``, ``docs (n, Kc, D)`` (float16 in the cache)."""

    queries: torch.Tensor
    docs: torch.Tensor
    texts: list[tuple[str, str]]


def load_pairs(
    folder: str | Path, per_source: int, seed: int = 0
) -> tuple[list[tuple[str, str]], list[Path]]:
    """``per_source`` (query, positive) pairs sampled from each ``<folder>/*/pairs.jsonl``
    (deterministic for a ``seed``) and the files read.

    Raises:
        FileNotFoundError: the folder holds no ``*/pairs.jsonl``.
    """
    root = Path(folder).expanduser()
    files = sorted(root.glob("*/pairs.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"{root}: no <source>/pairs.jsonl files; pass the training pairs folder "
            "(../shared/data/pairs)"
        )
    pairs: list[tuple[str, str]] = []
    for f in files:
        rows = [(p.query, p.positive) for p in read_pairs_file(f)]
        random.Random(f"{seed}|{f.parent.name}").shuffle(rows)
        pairs += rows[:per_source]
    return pairs, files


def encode_pairs(
    model: Any,
    pairs: list[tuple[str, str]],
    files: list[Path],
    recipe: ScorerRecipe,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
) -> PairVectors:
    """Encode the pairs once (cached under ``cache_dir``, default
    ``~/.cache/metaembed-rag/scorer-pairs``)."""
    cache = (
        Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "scorer-pairs"
    )
    key = "|".join(
        [
            model.fingerprint(),
            str(model.config.max_length),
            str(recipe.per_source),
            str(recipe.seed),
        ]
        + [file_identity(f) for f in files]
    )
    queries, _, _ = cached_vectors(
        cache, "pairs-queries", key,
        lambda: model.encode_queries(
            [q for q, _ in pairs], batch_size=batch_size, show_progress_bar=True
        ).half(),
    )  # fmt: skip
    docs, _, _ = cached_vectors(
        cache, "pairs-docs", key,
        lambda: model.encode_documents(
            [p for _, p in pairs], batch_size=batch_size, show_progress_bar=True
        ).half(),
    )  # fmt: skip
    return PairVectors(queries, docs, pairs)


def mine_negatives(data: PairVectors, count: int, budget: tuple[int, int]) -> torch.Tensor:
    """``(n, count)`` int64: for each query the best-scoring other positives under MaxSim at
    ``budget``, skipping pairs that share the query or the positive text (false negatives)."""
    n = data.queries.shape[0]
    out = torch.empty(n, count, dtype=torch.long)
    positives = [p for _, p in data.texts]
    queries = [q for q, _ in data.texts]
    docs = data.docs[:, : budget[1]].float()
    for s in range(0, n, 256):
        e = min(n, s + 256)
        scores = maxsim(data.queries[s:e, : budget[0]].float(), docs, budget)
        order = scores.argsort(dim=1, descending=True)
        for i in range(s, e):
            picked = []
            for j in order[i - s].tolist():
                if j != i and positives[j] != positives[i] and queries[j] != queries[i]:
                    picked.append(j)
                    if len(picked) == count:
                        break
            out[i] = torch.tensor(picked)
    return out


def infonce_loss(scores: torch.Tensor, r_q: int, temperature: float) -> torch.Tensor:
    """Cross-entropy with the positive in column 0 of ``scores (n, m)``."""
    logits = scores / (r_q * temperature)
    return F.cross_entropy(logits, torch.zeros(scores.shape[0], dtype=torch.long))


def _batch_docs(data: PairVectors, idx: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + H + B - 1, Kc, D)``: own positive, mined negatives, the others' positives."""
    b = idx.numel()
    cols = []
    for a in range(b):
        others = torch.cat([idx[:a], idx[a + 1 :]])
        cols.append(torch.cat([idx[a : a + 1], negatives[idx[a]], others]))
    return data.docs[torch.stack(cols)].float()


def mrr_at_10(
    scorer: Scorer, data: PairVectors, rows: torch.Tensor, budget: Budget, pool: int = 30
) -> float:
    """MRR@10 of the held-out queries ``rows`` when ``scorer`` reranks the top ``pool`` held-out
    positives by MaxSim at ``budget`` (the second stage, as in a search); a query whose positive
    is not in its pool counts 0."""
    if rows.numel() == 0:
        return float("nan")
    q = data.queries[rows].float()
    d = data.docs[rows].float()
    first = maxsim(q, d, budget.as_tuple())
    top = first.topk(min(pool, rows.numel()), dim=1).indices  # (n, pool)
    with torch.no_grad():
        scores = scorer.score_pairwise(q, d[top], budget)
    total = 0.0
    for i in range(rows.numel()):
        hit = (top[i] == i).nonzero()
        if hit.numel() == 0:
            continue
        rank = int((scores[i] > scores[i, int(hit[0])]).sum()) + 1
        total += 1.0 / rank if rank <= 10 else 0.0
    return total / rows.numel()


def build_scorer(recipe: ScorerRecipe, dim: int, fingerprint: str | None) -> LearnedScorer:
    """An untrained scorer of ``recipe.kind`` (equal to MaxSim before training)."""
    if recipe.kind == "bilinear":
        return BilinearScorer(dim, rank=recipe.rank, fingerprint=fingerprint, seed=recipe.seed)
    return CrossAttentionScorer(
        dim, hidden=recipe.hidden, fingerprint=fingerprint, seed=recipe.seed
    )


def train_scorer(
    data: PairVectors,
    recipe: ScorerRecipe,
    budget: Budget,
    fingerprint: str | None = None,
    progress: bool = True,
) -> tuple[LearnedScorer, dict[str, Any]]:
    """Train a scorer of ``recipe.kind`` at ``budget`` on the encoded pairs.

    Returns:
        (the trained scorer, a record: recipe, losses, held-out MRR@10 of MaxSim and of the
        scorer, seconds).
    """
    n = data.queries.shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 training pairs, got {n}")
    gen = torch.Generator().manual_seed(recipe.seed)
    perm = torch.randperm(n, generator=gen)
    n_dev = int(n * recipe.dev_fraction)
    dev, train = perm[:n_dev], perm[n_dev:]
    torch.manual_seed(recipe.seed)
    scorer = build_scorer(recipe, data.queries.shape[-1], fingerprint)
    t0 = time.perf_counter()
    train_data = PairVectors(data.queries[train], data.docs[train], [data.texts[i] for i in train])
    count = min(recipe.negatives, max(0, train.numel() - 2))
    negatives = mine_negatives(train_data, count, recipe.mine_budget)
    mine_s = time.perf_counter() - t0
    baseline = mrr_at_10(MaxSimScorer(), data, dev, budget)
    best_mrr, best_step = mrr_at_10(scorer, data, dev, budget), 0
    best_state = {k: v.detach().clone() for k, v in scorer.state_dict().items()}
    history = [(0, best_mrr)]
    opt = torch.optim.AdamW(scorer.parameters(), lr=recipe.lr, weight_decay=0.0)
    losses: list[float] = []
    batch = min(recipe.batch_size, train.numel())
    from tqdm.auto import tqdm

    bar = tqdm(range(recipe.steps), desc=f"train {recipe.kind}", disable=not progress)
    scorer.train()
    for _ in bar:
        idx = torch.randperm(train.numel(), generator=gen)[:batch]
        docs = _batch_docs(train_data, idx, negatives)
        scores = scorer.train_scores(train_data.queries[idx].float(), docs, budget)
        loss = infonce_loss(scores, budget.r_q, recipe.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        step = len(losses)
        if dev.numel() and (step % recipe.eval_every == 0 or step == recipe.steps):
            scorer.eval()
            mrr = mrr_at_10(scorer, data, dev, budget)
            scorer.train()
            history.append((step, mrr))
            if mrr > best_mrr:
                best_mrr, best_step = mrr, step
                best_state = {k: v.detach().clone() for k, v in scorer.state_dict().items()}
    if recipe.keep == "best":
        scorer.load_state_dict(best_state)  # the held-out best (step 0: untrained = MaxSim)
    else:
        best_mrr, best_step = history[-1][1], len(losses)
    scorer.eval()
    record = {
        "recipe": asdict(recipe),
        "budget": list(budget.as_tuple()),
        "pairs": n,
        "train_pairs": int(train.numel()),
        "dev_pairs": int(dev.numel()),
        "loss_first": losses[0],
        "loss_last_mean10": sum(losses[-10:]) / len(losses[-10:]),
        "dev_mrr10_maxsim": baseline,
        "dev_mrr10_scorer": best_mrr,
        "best_step": best_step,
        "dev_history": history,
        "mine_seconds": mine_s,
        "seconds": time.perf_counter() - t0,
    }
    return scorer, record
