"""Ranking metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from metaembed_rag.metrics import average_precision, evaluate, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed():
    qrels = {"a": 2, "c": 1, "z": 1}
    ranking = ["b", "a", "c", "d"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranking, qrels, 4) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranking, qrels, 1) == 0.0
    assert ndcg_at_k(["a", "c", "z"], qrels, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["b"], {}, 10) == 0.0


def test_recall_mrr_map():
    qrels = {"a": 1, "c": 1, "z": 0}
    ranking = ["b", "a", "d", "c"]
    assert recall_at_k(ranking, qrels, 2) == 0.5
    assert recall_at_k(ranking, qrels, 4) == 1.0
    assert mrr_at_k(ranking, qrels, 10) == 0.5
    assert mrr_at_k(ranking, qrels, 1) == 0.0
    assert average_precision(ranking, qrels) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert average_precision(ranking, qrels, k=2) == pytest.approx((1 / 2) / 2)


def test_evaluate_averages_and_skips_queries_without_relevant():
    out = evaluate(
        {"q1": ["a"], "q2": ["x", "b"]}, {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    )
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert out["mrr@10"] == pytest.approx(0.75)
    assert out["recall@10"] == 1.0
    assert out["map"] == pytest.approx(0.75)
