"""Maximal marginal relevance over stored rows (metaembed_rag.index.diversity) against a
brute-force reference written from the definition with plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _index_utils import D, K, make_index, unit

from metaembed_rag import Budget
from metaembed_rag.index import SearchParams
from metaembed_rag.index.diversity import document_similarity, mmr, mmr_search


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float(sum(max(float(qv @ dv) for dv in d) for qv in q))


def _reference(
    query: np.ndarray, docs: np.ndarray, budget: Budget, k: int, fetch_k: int, lam: float
) -> list[int]:
    """Exhaustive relevance, top ``fetch_k``, then greedy MMR - all from the definition."""
    r_q, r_c = budget.r_q, budget.r_c
    rel = [_maxsim(query[:r_q], doc[:r_c]) / r_q for doc in docs]
    pool = sorted(range(len(docs)), key=lambda i: (-rel[i], i))[:fetch_k]

    def sim(a: int, b: int) -> float:
        return (_maxsim(docs[a][:r_q], docs[b][:r_c]) + _maxsim(docs[b][:r_q], docs[a][:r_c])) / (
            2 * r_q
        )

    picked: list[int] = []
    while len(picked) < min(k, len(pool)):
        best, best_value = None, -np.inf
        for i in pool:
            if i in picked:
                continue
            penalty = max((sim(i, j) for j in picked), default=0.0)
            value = lam * rel[i] - (1 - lam) * penalty
            if value > best_value + 1e-9:
                best, best_value = i, value
        picked.append(best)
    return picked


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("budget", [Budget(1, 1), Budget(2, 4), Budget(4, 8)])
def test_mmr_search_matches_brute_force(lam: float, budget: Budget) -> None:
    rng = np.random.default_rng(7)
    base = unit(rng, 6, K, D)
    # near-duplicates of a few documents make diversity matter
    docs = np.concatenate([base, base[:3] + 0.05 * unit(rng, 3, K, D)])
    docs /= np.linalg.norm(docs, axis=-1, keepdims=True)
    query = unit(rng, 4, D)
    index = make_index(dtype="float32")
    ids = [f"d{i}" for i in range(len(docs))]
    index.add(ids, torch.from_numpy(docs), texts=ids)
    params = SearchParams(k=4, fetch_k=7, rerank_budget=budget, mode="exhaustive")
    hits = mmr_search(index, torch.from_numpy(query), params, lambda_mult=lam)
    expected = _reference(query, docs, budget, 4, 7, lam)
    assert [h.id for h in hits] == [ids[i] for i in expected]
    # scores stay the raw MaxSim at the budget
    for h, i in zip(hits, expected, strict=True):
        assert h.score == pytest.approx(
            _maxsim(query[: budget.r_q], docs[i][: budget.r_c]), abs=1e-4
        )


def test_mmr_lambda_one_is_relevance_order_and_diversity_changes_it() -> None:
    rng = np.random.default_rng(3)
    doc = unit(rng, 1, K, D)
    docs = np.concatenate([doc, doc, doc, unit(rng, 3, K, D)])  # three identical documents
    index = make_index(dtype="float32")
    index.add([f"d{i}" for i in range(6)], torch.from_numpy(docs))
    query = torch.from_numpy(docs[0, :4].copy())
    params = SearchParams(k=3, fetch_k=6, rerank_budget=(4, 8), mode="exhaustive")
    plain = [h.id for h in index.search(query.unsqueeze(0), params=params)[0]]
    assert [h.id for h in mmr_search(index, query, params, lambda_mult=1.0)] == plain
    diverse = [h.id for h in mmr_search(index, query, params, lambda_mult=0.3)]
    assert diverse[0] == "d0" and not {"d1", "d2"} & set(diverse)


def test_mmr_search_respects_filter_and_empty_index() -> None:
    rng = np.random.default_rng(5)
    index = make_index(dtype="float32")
    assert mmr_search(index, torch.from_numpy(unit(rng, 4, D)), SearchParams(k=2)) == []
    docs = torch.from_numpy(unit(rng, 8, K, D))
    index.add([f"d{i}" for i in range(8)], docs, metadatas=[{"even": i % 2 == 0} for i in range(8)])
    params = SearchParams(k=3, fetch_k=8, filter={"even": True})
    hits = mmr_search(index, torch.from_numpy(unit(rng, 4, D)), params)
    assert len(hits) == 3 and all(int(h.id[1:]) % 2 == 0 for h in hits)


def test_mmr_validates() -> None:
    with pytest.raises(ValueError, match="lambda_mult"):
        mmr([1.0], [[1.0]], 1, lambda_mult=1.5)
    with pytest.raises(ValueError, match="similarity"):
        mmr([1.0, 0.5], [[1.0]], 1)
    sims = document_similarity(
        torch.from_numpy(unit(np.random.default_rng(0), 3, K, D)), Budget(2, 4)
    )
    assert torch.allclose(sims, sims.T)
