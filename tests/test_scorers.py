"""Scorers of the exact stage: each against a reference, through the index, saving/loading,
fingerprint refusal and training on a tiny set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _index_utils import BUDGETS, D, K, make_index, queries, unit

from metaembed_rag.budget import Budget
from metaembed_rag.index import SearchParams
from metaembed_rag.scorers import (
    BilinearScorer,
    CrossAttentionScorer,
    MaxSimScorer,
    PooledDotScorer,
    ScorerMismatchError,
    load_scorer,
    resolve_scorer,
    save_scorer,
)
from metaembed_rag.scorers.training import (
    PairVectors,
    ScorerRecipe,
    infonce_loss,
    mine_negatives,
    train_scorer,
)


def _ref_maxsim(q: torch.Tensor, d: torch.Tensor, rq: int, rc: int) -> torch.Tensor:
    """Loop reference: sum_i max_j <q_i, d_j> over the prefixes, float64."""
    out = torch.zeros(q.shape[0], d.shape[0], dtype=torch.float64)
    for a in range(q.shape[0]):
        for b in range(d.shape[0]):
            sim = q[a, :rq].double() @ d[b, :rc].double().T
            out[a, b] = sim.max(dim=1).values.sum()
    return out


@pytest.fixture
def vecs():
    rng = np.random.default_rng(0)
    return queries(rng, 3, 4), torch.from_numpy(unit(rng, 20, K, D))


def test_maxsim_scorer_matches_reference(vecs):
    q, d = vecs
    for rq, rc in BUDGETS:
        got = MaxSimScorer().score(q, d, (rq, rc))
        assert torch.allclose(got.double(), _ref_maxsim(q, d, rq, rc), atol=1e-5)


def test_pooled_dot_matches_reference(vecs):
    q, d = vecs
    got = PooledDotScorer().score(q, d, (2, 4))
    ref = torch.tensor(
        [
            [float(q[a, :2].double().mean(0) @ d[b, :4].double().mean(0)) for b in range(20)]
            for a in range(3)
        ]
    )
    assert torch.allclose(got.double(), ref.double(), atol=1e-6)
    pair = PooledDotScorer().score_pairwise(q, d[:6].view(3, 2, K, D), (2, 4))
    assert torch.allclose(
        pair, got[torch.arange(3)[:, None], torch.arange(6).view(3, 2)], atol=1e-6
    )


def test_untrained_bilinear_equals_maxsim_exactly(vecs):
    q, d = vecs
    b = BilinearScorer(D, rank=4)
    for budget in BUDGETS:
        assert torch.equal(b.score(q, d, budget), MaxSimScorer().score(q, d, budget))
    idx = make_index(dtype="float32")
    idx.add([str(i) for i in range(20)], d.numpy(), None, None)
    for mode in ("two_stage", "exhaustive"):
        a = idx.search(q, 5, mode=mode)
        c = idx.search(q, 5, mode=mode, scorer=b)
        assert [[(h.id, h.score) for h in r] for r in a] == [
            [(h.id, h.score) for h in r] for r in c
        ]


def test_trained_bilinear_matches_reference(vecs):
    q, d = vecs
    b = BilinearScorer(D, rank=3, seed=1)
    with torch.no_grad():
        b.u.copy_(torch.randn(D, 3) * 0.3)
    w = torch.eye(D, dtype=torch.float64) + b.u.double() @ b.v.double().T
    ref = torch.zeros(3, 20, dtype=torch.float64)
    for a in range(3):
        for c in range(20):
            ref[a, c] = (q[a, :4].double() @ w @ d[c, :8].double().T).max(dim=1).values.sum()
    assert torch.allclose(b.score(q, d, (4, 8)).double(), ref, atol=1e-5)
    train = b.train_scores(q, d[:6].view(3, 2, K, D), Budget(4, 8))
    assert torch.allclose(
        train.detach().double(),
        ref[torch.arange(3)[:, None], torch.arange(6).view(3, 2)],
        atol=1e-5,
    )


def _ref_cross(s: CrossAttentionScorer, q: torch.Tensor, c: torch.Tensor) -> float:
    """One pair, written out step by step."""
    with torch.no_grad():
        sim = q @ c.T
        best = sim.max(dim=1).values
        qp = s.q_proj(q)
        att = torch.softmax(qp @ s.k_proj(c).T / s.hidden**0.5, dim=-1)
        ctx = att @ s.v_proj(c)
        extra = s.mlp(torch.cat([ctx, qp, best[:, None]], dim=-1)).squeeze(-1)
        return float(best.sum() + extra.sum())


def test_cross_attention_shapes_budget_mask_determinism(vecs):
    q, d = vecs
    s = CrossAttentionScorer(D, hidden=8, seed=3)
    torch.nn.init.normal_(s.mlp[2].weight, std=0.5)  # a non-zero correction
    docs = d[:12].view(3, 4, K, D)
    out = s.score_pairwise(q, docs, (2, 4))
    assert out.shape == (3, 4)
    assert out[1, 2].item() == pytest.approx(_ref_cross(s, q[1, :2], docs[1, 2, :4]), abs=1e-5)
    # only the first (r_q, r_c) vectors are read
    q2, d2 = q.clone(), docs.clone()
    q2[:, 2:] = 7.0
    d2[:, :, 4:] = -3.0
    assert torch.equal(s.score_pairwise(q2, d2, (2, 4)), out)
    assert not torch.equal(s.score_pairwise(q, docs, (4, 8)), out)
    # deterministic, and a pair's score does not depend on its batch
    assert torch.equal(s.score_pairwise(q, docs, (2, 4)), out)
    alone = s.score_pairwise(q[1:2], docs[1:2, 2:3], (2, 4))
    assert alone.item() == pytest.approx(out[1, 2].item(), abs=1e-6)
    full = s.score(q, d[:4], (2, 4))
    assert full.shape == (3, 4)
    # the same seed builds the same block
    assert torch.equal(CrossAttentionScorer(D, hidden=8, seed=3).q_proj.weight, s.q_proj.weight)


def test_untrained_cross_attention_is_maxsim(vecs):
    q, d = vecs
    docs = d[:12].view(3, 4, K, D)
    got = CrossAttentionScorer(D, hidden=8).score_pairwise(q, docs, (4, 8))
    assert torch.allclose(got, MaxSimScorer().score_pairwise(q, docs, (4, 8)), atol=1e-5)


def test_scorer_through_index_matches_reference(vecs):
    q, d = vecs
    idx = make_index(dtype="float32")
    idx.add([str(i) for i in range(20)], d.numpy(), None, None)
    ref = PooledDotScorer().score(q, d, (4, 8))
    for mode in ("two_stage", "exhaustive"):
        hits = idx.search(q, 3, mode=mode, scorer="pooled", fetch_k=20)
        for a, row in enumerate(hits):
            top = ref[a].topk(3).indices.tolist()
            assert [h.id for h in row] == [str(i) for i in top]
            assert [h.score for h in row] == pytest.approx(ref[a, top].tolist(), abs=1e-5)
    ca = CrossAttentionScorer(D, hidden=8)
    with pytest.raises(ValueError, match="reranks the top candidates only"):
        idx.search(q, 3, mode="exhaustive", scorer=ca)
    assert len(idx.search(q, 3, scorer=ca)[0]) == 3


def test_resolve_and_params():
    assert isinstance(resolve_scorer(None), MaxSimScorer)
    assert isinstance(resolve_scorer("pooled"), PooledDotScorer)
    assert SearchParams(scorer="maxsim").scorer is None
    assert isinstance(SearchParams(scorer="pooled").scorer, PooledDotScorer)
    with pytest.raises(ValueError, match="neither a scorer name"):
        SearchParams(scorer="nope")
    assert "scorer" not in SearchParams(scorer="pooled").settings()


def test_save_load_round_trip_and_fingerprint_refusal(tmp_path, vecs):
    q, d = vecs
    b = BilinearScorer(D, rank=4, fingerprint="abc")
    with torch.no_grad():
        b.u.normal_()
    save_scorer(b, tmp_path / "s", {"model": "m"})
    meta = json.loads((tmp_path / "s" / "scorer.json").read_text())
    assert meta["kind"] == "bilinear" and meta["fingerprint"] == "abc"
    loaded = load_scorer(tmp_path / "s", fingerprint="abc")
    assert torch.equal(loaded.score(q, d, (4, 8)), b.score(q, d, (4, 8)))
    with pytest.raises(ScorerMismatchError, match="trained for model fingerprint abc"):
        load_scorer(tmp_path / "s", fingerprint="other")
    idx = make_index(dtype="float32", fingerprint="other")
    idx.add([str(i) for i in range(20)], d.numpy(), None, None)
    with pytest.raises(ScorerMismatchError):
        idx.search(q, 3, scorer=str(tmp_path / "s"))
    c = CrossAttentionScorer(D, hidden=8, fingerprint="abc", seed=5)
    save_scorer(c, tmp_path / "c")
    docs = d[:12].view(3, 4, K, D)
    assert torch.equal(
        load_scorer(tmp_path / "c").score_pairwise(q, docs, (2, 4)),
        c.score_pairwise(q, docs, (2, 4)),
    )
    with pytest.raises(FileNotFoundError, match="train-scorer"):
        load_scorer(tmp_path)


def _toy_pairs(n: int = 48, seed: int = 0) -> PairVectors:
    """Queries whose positive is a noisy rotation of them: a bilinear map helps."""
    g = torch.Generator().manual_seed(seed)
    docs = torch.nn.functional.normalize(torch.randn(n, K, D, generator=g), dim=-1)
    rot = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    q = torch.nn.functional.normalize(
        docs[:, :4] @ rot + 0.3 * torch.randn(n, 4, D, generator=g), dim=-1
    )
    texts = [(f"q{i}", f"p{i}") for i in range(n)]
    return PairVectors(q, docs, texts)


def test_mining_skips_own_and_duplicate_positives():
    data = _toy_pairs(10)
    data.texts[3] = ("q3", "p0")  # same positive text as pair 0: never its negative
    neg = mine_negatives(data, 3, (2, 4))
    assert neg.shape == (10, 3)
    for i in range(10):
        assert i not in neg[i].tolist()
    assert 3 not in neg[0].tolist() and 0 not in neg[3].tolist()


def _contrastive_loss(scores: torch.Tensor, temperature: float) -> float:
    """InfoNCE of the full (n, n) score matrix, the positive on the diagonal."""
    n = scores.shape[0]
    rows = torch.cat(
        [scores.diag()[:, None], scores.masked_fill(torch.eye(n, dtype=torch.bool), -1e9)], 1
    )
    return float(infonce_loss(rows, 4, temperature))


@pytest.mark.parametrize("kind", ["bilinear", "cross-attention"])
def test_training_lowers_the_loss(kind):
    from metaembed_rag.budget import Budget

    data = _toy_pairs()
    recipe = ScorerRecipe(
        kind=kind, steps=60, batch_size=8, negatives=2, lr=5e-2, rank=8, hidden=8,
        dev_fraction=0.25, mine_budget=(2, 4),
    )  # fmt: skip
    budget = Budget(4, 8)
    scorer, record = train_scorer(data, recipe, budget, fingerprint="fp", progress=False)
    assert record["loss_last_mean10"] < record["loss_first"]
    # the held-out best is kept, step 0 (MaxSim) included
    assert record["dev_mrr10_scorer"] == max(m for _, m in record["dev_history"])
    if kind == "bilinear":  # untrained bilinear == MaxSim exactly
        assert record["dev_history"][0][1] == record["dev_mrr10_maxsim"]
    assert scorer.fingerprint == "fp"
    before = _contrastive_loss(
        MaxSimScorer().score(data.queries, data.docs, budget), recipe.temperature
    )
    after = _contrastive_loss(scorer.score(data.queries, data.docs, budget), recipe.temperature)
    assert after < before


def test_keep_last_saves_the_last_step():
    from metaembed_rag.budget import Budget

    recipe = ScorerRecipe(steps=10, batch_size=8, negatives=2, rank=4, dev_fraction=0.25,
                          mine_budget=(2, 4), keep="last", eval_every=5)  # fmt: skip
    scorer, record = train_scorer(_toy_pairs(), recipe, Budget(4, 8), progress=False)
    assert record["best_step"] == 10 and [s for s, _ in record["dev_history"]] == [0, 5, 10]
    assert bool(scorer.u.detach().any())  # trained weights, not the untrained start
    with pytest.raises(ValueError, match="keep"):
        ScorerRecipe(keep="first")
