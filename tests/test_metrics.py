"""Ranking metrics: the hand-written reference on hand-computed cases, and
``metaembed_rag.metrics.evaluate`` (pytrec_eval) equal to the reference on hand cases, random
rankings and a suite set."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from _reference_metrics import average_precision, mrr_at_k, ndcg_at_k, recall_at_k
from _reference_metrics import evaluate as reference_evaluate

from metaembed_rag.metrics import evaluate

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


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


def test_evaluate_equals_the_reference_on_random_graded_rankings():
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(300)]
    qrels = {f"q{i}": {rng.choice(docs): rng.choice([1, 2, 3]) for _ in range(rng.randint(1, 6))}
             for i in range(80)}  # fmt: skip
    qrels["q_none"] = {"d1": 0}
    rankings = {q: rng.sample(docs, rng.randint(0, 150)) for q in qrels if q != "q5"}
    got = evaluate(rankings, qrels, ks=(1, 10, 100))
    want = reference_evaluate(rankings, qrels, ks=(1, 10, 100))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_evaluate_equals_the_reference_on_scifact_bm25():
    """The figures of a budget row (evaluation.ranking_metrics) on a real set, BM25 rankings."""
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip("../shared/data/scifact is not available")
    from metaembed_rag.baselines import bm25_rankings
    from metaembed_rag.data import load_beir

    ds = load_beir(SCIFACT)
    qids = sorted(ds.qrels)
    doc_ids = sorted(ds.corpus)
    ranked = bm25_rankings(
        doc_ids, [ds.doc_text(d) for d in doc_ids], [ds.queries[q] for q in qids]
    )
    rankings = dict(zip(qids, ranked, strict=True))
    for cut in (100, None):
        r = {q: v[:cut] for q, v in rankings.items()}
        got, want = (
            evaluate(r, ds.qrels, ks=(10, 100)),
            reference_evaluate(r, ds.qrels, ks=(10, 100)),
        )
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["ndcg@10"] == pytest.approx(0.662, abs=0.002)  # the README's BM25 reference
