"""Matryoshka Multi-Vector Retrieval (MMR) training and hard-negative mining."""

from .examples import beir_pairs, caption_pairs, group_pairs, title_pairs, with_negatives
from .loss import MMRLoss, MMRLossOutput, group_logits
from .mining import mine_hard_negatives, select_negatives
from .trainer import MMRTrainer, TrainExample, TrainingConfig

__all__ = [
    "MMRLoss",
    "MMRLossOutput",
    "MMRTrainer",
    "TrainExample",
    "TrainingConfig",
    "beir_pairs",
    "caption_pairs",
    "group_pairs",
    "group_logits",
    "mine_hard_negatives",
    "select_negatives",
    "title_pairs",
    "with_negatives",
]
