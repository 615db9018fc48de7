"""Late-interaction scorers of the exact (second) search stage, chosen per query.

See :mod:`metaembed_rag.scorers.base` (the interface, MaxSim, pooled dot product),
:mod:`metaembed_rag.scorers.learned` (bilinear, cross-attention) and ``docs/scorers.md``.
"""

from .base import MaxSimScorer, PooledDotScorer, Scorer, ScorerMismatchError
from .io import SCORER_NAMES, load_scorer, resolve_scorer, save_scorer
from .learned import BilinearScorer, CrossAttentionScorer, LearnedScorer

__all__ = [
    "SCORER_NAMES",
    "BilinearScorer",
    "CrossAttentionScorer",
    "LearnedScorer",
    "MaxSimScorer",
    "PooledDotScorer",
    "Scorer",
    "ScorerMismatchError",
    "load_scorer",
    "resolve_scorer",
    "save_scorer",
]
