"""Metadata filters: syntax, and filtering inside the coarse stage (not after truncation)."""

from __future__ import annotations

import numpy as np
import pytest
from _index_utils import K, as_pairs, make_index, queries, unit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaembed_rag.index import compile_filter

META = {"lang": "en", "year": 2018, "score": 0.5, "tags": "a", "nested": {"x": 1}, "flag": True}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"lang": "en"}, True),
        ({"lang": "de"}, False),
        ({"lang": {"$eq": "en"}}, True),
        ({"lang": {"$ne": "en"}}, False),
        ({"missing": {"$ne": 1}}, True),
        ({"missing": 1}, False),
        ({"year": {"$in": [2017, 2018]}}, True),
        ({"year": {"$nin": [2017, 2018]}}, False),
        ({"year": {"$gte": 2018, "$lt": 2019}}, True),
        ({"year": {"$gt": 2018}}, False),
        ({"score": {"$lte": 0.5}}, True),
        ({"lang": {"$gt": 1}}, False),  # strings never match numeric ranges
        ({"nested.x": 1}, True),
        ({"flag": 1}, False),  # booleans only equal booleans
        ({"flag": True}, True),
        ({"source": {"$exists": False}}, True),
        ({"$and": [{"lang": "en"}, {"year": 2018}]}, True),
        ({"$or": [{"lang": "de"}, {"year": 2018}]}, True),
        ({"$or": [{"lang": "de"}, {"year": 2000}]}, False),
        ({"$not": {"lang": "en"}}, False),
        ({"lang": "en", "year": {"$lt": 2000}}, False),
    ],
)
def test_filter_syntax(spec, expected):
    assert compile_filter(spec)(META) is expected


@pytest.mark.parametrize(
    "spec",
    [{"year": {"$between": [1, 2]}}, {"$xor": []}, {"year": {"$gt": "2000"}}, {"y": {"$in": 3}},
     {"$or": []}, [1, 2], {"a": {"$exists": 1}}],
)  # fmt: skip
def test_bad_filters_raise(spec):
    with pytest.raises(ValueError):
        compile_filter(spec)


def _build(n, rng, **kw):
    docs = unit(rng, n, K, 16)
    metas = [{"group": int(i % 20), "year": int(2000 + i % 25), "lang": ["en", "de", "fr"][i % 3]}
             for i in range(n)]  # fmt: skip
    index = make_index(**kw)
    index.add([str(i) for i in range(n)], docs, metadatas=metas)
    return index, docs, metas


FILTERS = [
    {"group": 3},
    {"group": {"$in": [1, 7]}, "lang": "de"},
    {"year": {"$gte": 2010, "$lt": 2013}},
    {"$or": [{"group": 0}, {"year": {"$gt": 2023}}]},
]


@pytest.mark.parametrize("coarse_index", ["flat", "hnsw"])
@pytest.mark.parametrize("exact_subset_max", [0, 10_000])  # FAISS selector path / exact subset
@pytest.mark.parametrize("spec", FILTERS)
def test_filter_equals_exhaustive_over_subset(coarse_index, exact_subset_max, spec):
    rng = np.random.default_rng(11)
    index, docs, metas = _build(
        400, rng, coarse_index=coarse_index, exact_subset_max=exact_subset_max
    )
    pred = compile_filter(spec)
    keep = [i for i in range(400) if pred(metas[i])]
    sub = make_index()
    sub.add([str(i) for i in keep], docs[keep], metadatas=[metas[i] for i in keep])
    q = queries(rng, 4)
    # fetch_k >= subset size: exactly the subset's exhaustive top-k
    got = index.search(q, k=10, fetch_k=len(keep), filter=spec)
    assert as_pairs(got) == as_pairs(sub.search(q, k=10, mode="exhaustive"))
    assert as_pairs(index.search(q, k=10, filter=spec, mode="exhaustive")) == as_pairs(
        sub.search(q, k=10, mode="exhaustive")
    )
    # a small fetch_k still yields k matching hits: filtering happens inside the coarse stage
    few = index.search(q, k=10, fetch_k=12, filter=spec)
    for row in few:
        assert len(row) == min(10, len(keep))
        assert all(pred(h.metadata) for h in row)
    # with an exact coarse stage the candidates are the subset's coarse top-12
    assert as_pairs(few) == as_pairs(sub.search(q, k=10, fetch_k=12)) or coarse_index == "hnsw"


def test_filter_matching_nothing_returns_empty_lists():
    rng = np.random.default_rng(12)
    index, _, _ = _build(50, rng)
    assert index.search(queries(rng, 2), filter={"group": 99}) == [[], []]


def test_filter_after_delete_and_upsert():
    rng = np.random.default_rng(13)
    index, docs, _ = _build(100, rng)
    index.delete([str(i) for i in range(0, 100, 20)])  # group 0 rows 0,20,40,60,80
    index.upsert(["40"], docs[40:41], metadatas=[{"group": 0}])
    hits = index.search(queries(rng, 1), k=10, filter={"group": 0})[0]
    assert [h.id for h in hits] == ["40"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    groups=st.sets(st.integers(0, 19), min_size=1, max_size=5),
    lo=st.integers(2000, 2024),
    k=st.integers(1, 15),
)
def test_property_filtered_search(seed, groups, lo, k):
    rng = np.random.default_rng(seed)
    index, docs, metas = _build(200, rng, exact_subset_max=0)
    spec = {"$and": [{"group": {"$in": sorted(groups)}}, {"year": {"$gte": lo}}]}
    pred = compile_filter(spec)
    keep = [i for i in range(200) if pred(metas[i])]
    q = queries(rng, 2)
    got = index.search(q, k=k, fetch_k=max(1, len(keep)), filter=spec)
    ref = index.search(q, k=k, filter=spec, mode="exhaustive")
    assert as_pairs(got) == as_pairs(ref)
    assert all(len(r) == min(k, len(keep)) for r in got)


@pytest.mark.parametrize("coarse_index", ["flat", "hnsw"])
def test_filtered_cascade_with_selector(coarse_index):
    rng = np.random.default_rng(14)
    index, _, metas = _build(300, rng, coarse_index=coarse_index, exact_subset_max=0)
    spec = {"group": {"$in": [2, 5]}}
    pred = compile_filter(spec)
    n_match = sum(pred(m) for m in metas)
    q = queries(rng, 3)
    got = index.search(q, k=5, fetch_k=6, recall_budget=(2, 4), filter=spec)
    for row in got:
        assert 0 < len(row) <= 5 and all(pred(h.metadata) for h in row)
    full = index.search(q, k=5, fetch_k=n_match, recall_budget=(2, 4), filter=spec)
    assert as_pairs(full) == as_pairs(index.search(q, k=5, filter=spec, mode="exhaustive"))
