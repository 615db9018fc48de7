"""MultiVectorIndex: two-stage vs exhaustive, incremental updates, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _index_utils import BUDGETS, D, K, as_pairs, make_index, queries, unit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metaembed_rag.index import Hit, MultiVectorIndex
from metaembed_rag.scoring import maxsim

DTYPES = ["bfloat16", "float16", "float32", "int8"]


def brute_force(index: MultiVectorIndex, docs: np.ndarray, ids: list[str], q, k, budget):
    """Reference top-k from float32 vectors decoded from the index (exact, ties by row)."""
    stored = torch.stack([index.get(i)["vectors"] for i in ids])
    s = maxsim(q, stored, budget, backend="torch").numpy()
    out = []
    for row in s:
        order = np.lexsort((np.arange(len(ids)), -row))[:k]
        out.append([ids[j] for j in order])
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("coarse_vector", ["first", "mean"])
def test_two_stage_equals_exhaustive_when_fetch_k_covers_all(dtype, coarse_vector):
    rng = np.random.default_rng(0)
    docs = unit(rng, 120, K, D)
    docs[60:80] = docs[0:20]  # duplicates: exact score ties
    ids = [f"d{i}" for i in range(120)]
    index = make_index(dtype=dtype, coarse_vector=coarse_vector)
    index.add(ids, docs)
    q = queries(rng, 6)
    for budget in BUDGETS:
        two = index.search(q, k=15, fetch_k=120, rerank_budget=budget)
        ex = index.search(q, k=15, rerank_budget=budget, mode="exhaustive")
        assert [[h.id for h in r] for r in two] == [[h.id for h in r] for r in ex]
        for r1, r2 in zip(two, ex, strict=True):
            np.testing.assert_allclose([h.score for h in r1], [h.score for h in r2], rtol=1e-6)
        assert [[h.id for h in r] for r in ex] == brute_force(index, docs, ids, q, 15, budget)


def test_ties_broken_by_row_order():
    rng = np.random.default_rng(1)
    base = unit(rng, 1, K, D)
    docs = np.repeat(base, 5, axis=0)
    index = make_index(dtype="float32")
    index.add(["e", "d", "c", "b", "a"], docs)
    q = queries(rng, 1)
    for mode in ("two_stage", "exhaustive"):
        hits = index.search(q, k=5, fetch_k=2, mode=mode)[0]
        assert [h.id for h in hits][: 2 if mode == "two_stage" else 5] == ["e", "d", "c", "b", "a"][
            : 2 if mode == "two_stage" else 5
        ]
        assert [h.rank for h in hits] == list(range(len(hits)))


def test_two_stage_scores_are_exact_and_sorted():
    rng = np.random.default_rng(2)
    docs = unit(rng, 300, K, D)
    index = make_index(dtype="float32")
    index.add([str(i) for i in range(300)], docs)
    q = queries(rng, 5)
    hits = index.search(q, k=10, fetch_k=30)
    exact = maxsim(q, torch.from_numpy(docs), (4, 8), backend="torch").numpy()
    for qi, row in enumerate(hits):
        assert len(row) == 10
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)
        for h in row:
            assert h.score == pytest.approx(exact[qi, int(h.id)], rel=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 12),
    dup=st.integers(0, 10),
    seed=st.integers(0, 2**16),
    budget=st.sampled_from(BUDGETS),
    dtype=st.sampled_from(DTYPES),
)
# duplicate rows 34 == 36: BLAS once scored them 1 ulp apart depending on batch position
@example(n=38, k=3, dup=8, seed=9818, budget=(1, 1), dtype="int8")
def test_property_two_stage_full_fetch_is_exhaustive(n, k, dup, seed, budget, dtype):
    rng = np.random.default_rng(seed)
    docs = unit(rng, n, K, D)
    if dup and n > 1:
        src = rng.integers(0, n, size=dup)
        dst = rng.integers(0, n, size=dup)
        docs[dst] = docs[src]
    index = make_index(dtype=dtype)
    index.add([f"x{i}" for i in range(n)], docs)
    q = queries(rng, 3)
    a = index.search(q, k=k, fetch_k=n, rerank_budget=budget)
    b = index.search(q, k=k, rerank_budget=budget, mode="exhaustive")
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    assert all(len(r) == min(k, n) for r in a)


def _final_state_index(ops_index: MultiVectorIndex, docs: dict[str, np.ndarray], **kw):
    fresh = make_index(**kw)
    ids = ops_index.ids  # rebuilt in the same row order the live documents have
    fresh.add(ids, np.stack([docs[i] for i in ids]), metadatas=[{"id": i} for i in ids])
    return fresh


@pytest.mark.parametrize("coarse_index", ["flat", "hnsw"])
def test_add_delete_upsert_equals_rebuild(coarse_index):
    rng = np.random.default_rng(3)
    index = make_index(coarse_index=coarse_index)
    current: dict[str, np.ndarray] = {}

    def put(ids, upsert=False):
        vecs = unit(rng, len(ids), K, D)
        (index.upsert if upsert else index.add)(ids, vecs, metadatas=[{"id": i} for i in ids])
        current.update(zip(ids, vecs, strict=True))

    put([f"a{i}" for i in range(80)])
    put([f"b{i}" for i in range(40)])
    assert index.delete([f"a{i}" for i in range(0, 80, 3)]) == 27
    for i in range(0, 80, 3):
        current.pop(f"a{i}")
    put([f"b{i}" for i in range(0, 40, 2)] + ["c0", "c1"], upsert=True)
    put([f"c{i}" for i in range(2, 30)])
    assert len(index) == len(current)
    q = queries(rng, 5)
    fresh = _final_state_index(index, current, coarse_index=coarse_index)
    for fetch_k in (len(current), 40):
        a = index.search(q, k=10, fetch_k=fetch_k)
        b = fresh.search(q, k=10, fetch_k=fetch_k)
        assert as_pairs(a) == as_pairs(b)
    assert as_pairs(index.search(q, k=10, mode="exhaustive")) == as_pairs(
        fresh.search(q, k=10, mode="exhaustive")
    )
    index.compact()
    assert index.num_rows == len(current)
    assert as_pairs(index.search(q, k=10, fetch_k=40)) == as_pairs(
        fresh.search(q, k=10, fetch_k=40)
    )


def test_deleted_documents_never_returned():
    rng = np.random.default_rng(4)
    docs = unit(rng, 50, K, D)
    for kind in ("flat", "hnsw"):
        index = make_index(coarse_index=kind)
        index.add([str(i) for i in range(50)], docs)
        index.delete([str(i) for i in range(0, 50, 2)])
        q = queries(rng, 4)
        for fetch_k in (5, 50):
            for row in index.search(q, k=20, fetch_k=fetch_k):
                assert all(int(h.id) % 2 == 1 for h in row)
        assert all(len(r) == 20 for r in index.search(q, k=20, fetch_k=50))


def test_auto_switches_to_hnsw(monkeypatch):
    import metaembed_rag.index.coarse as coarse

    monkeypatch.setattr(coarse, "AUTO_FLAT_MAX", 100)
    rng = np.random.default_rng(5)
    index = make_index()
    index.add([str(i) for i in range(60)], unit(rng, 60, K, D))
    assert index.coarse_kind == "flat"
    index.add([str(i) for i in range(60, 130)], unit(rng, 70, K, D))
    assert index.coarse_kind == "hnsw"
    q = queries(rng, 3)
    assert as_pairs(index.search(q, fetch_k=130)) == as_pairs(index.search(q, mode="exhaustive"))


def test_ivf_coarse(monkeypatch):
    import metaembed_rag.index.coarse as coarse

    monkeypatch.setattr(coarse, "IVF_MIN_TRAIN", 200)
    rng = np.random.default_rng(6)
    index = make_index(coarse_index="ivf", nprobe=64)
    index.add([str(i) for i in range(400)], unit(rng, 400, K, D))
    assert index.coarse_kind == "ivf"
    index.delete(["1", "2"])
    hits = index.search(queries(rng, 2), k=5, fetch_k=50)
    assert all(len(r) == 5 and {"1", "2"}.isdisjoint(h.id for h in r) for r in hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_coarse_stage_scores_the_stored_float16_rows_exactly(monkeypatch, kind):
    """Coarse rows are stored in float16; FAISS (flat float32, HNSW / IVF float16 codes) holds
    them without further loss, so its coarse scores equal float64 dot products of the query's
    coarse vector with the stored rows."""
    import metaembed_rag.index.coarse as coarse

    monkeypatch.setattr(coarse, "IVF_MIN_TRAIN", 200)
    rng = np.random.default_rng(17)
    index = make_index(coarse_index=kind, nprobe=10_000, coarse_vector="mean")
    index.add([str(i) for i in range(300)], unit(rng, 300, K, D))
    index.delete([str(i) for i in range(0, 300, 3)])
    backend = index.backend
    assert backend.rows.coarse.dtype == np.float16 and index.coarse_kind == kind
    q = queries(rng, 2)
    qc = backend._query_coarse(q)
    live = np.flatnonzero(backend.table.alive)
    scores, slots = backend.coarse.search(qc, 20, None if kind != "hnsw" else backend.table.alive)
    ref = qc.astype(np.float64) @ backend.rows.coarse_rows(live).astype(np.float64).T
    for i in range(len(q)):
        want = np.sort(ref[i])[::-1][:20]
        np.testing.assert_allclose(np.sort(scores[i])[::-1], want, rtol=0, atol=1e-5)
        stored = backend.rows.coarse_rows(slots[i]).astype(np.float64) @ qc[i]
        np.testing.assert_allclose(scores[i], stored, rtol=0, atol=1e-5)
        assert np.isin(slots[i], live).all()


def test_format1_ivf_wrapper_is_never_trusted_after_a_deletion(monkeypatch, tmp_path):
    """Format-1 indexes wrapped IVF in ``IndexIDMap2``, which maps wrong ids after a removal.
    Loaded, such an index marks later deletions stale instead of removing them; saved with
    deleted rows and loaded again, it is rebuilt as a plain IVF index. Either way the coarse
    stage returns live rows and the index searches as a flat one does."""
    import faiss

    import metaembed_rag.index.coarse as coarse

    monkeypatch.setattr(coarse, "IVF_MIN_TRAIN", 200)
    rng = np.random.default_rng(19)
    docs = unit(rng, 400, K, D)
    ids = [str(i) for i in range(400)]
    index = make_index(coarse_index="ivf", nprobe=10_000, coarse_vector="mean")
    index.add(ids, docs)
    backend = index.backend
    rows = backend.rows.coarse_rows(slice(None))
    quantizer = faiss.IndexFlatIP(D)
    ivf = faiss.IndexIVFFlat(quantizer, D, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.train(rows)
    ivf.nprobe = 4
    old = faiss.IndexIDMap2(ivf)
    old.add_with_ids(rows, np.arange(400, dtype=np.int64))
    backend.coarse.index = old  # as a format-1 file reads back
    assert backend.coarse.ids_shift_on_remove and not backend.coarse.supports_remove
    gone = [str(i) for i in range(0, 400, 3)]
    index.delete(gone)
    assert backend.coarse.stale == len(gone)
    flat = make_index(coarse_index="flat", coarse_vector="mean")
    flat.add(ids, docs)
    flat.delete(gone)
    q = queries(rng, 3)
    assert as_pairs(index.search(q, fetch_k=40)) == as_pairs(flat.search(q, fetch_k=40))
    index.save(tmp_path / "old")
    loaded = MultiVectorIndex.load(tmp_path / "old")
    assert not loaded.backend.coarse.ids_shift_on_remove and loaded.coarse_kind == "ivf"
    assert loaded.backend.coarse.stale == 0
    assert as_pairs(loaded.search(q, fetch_k=40)) == as_pairs(flat.search(q, fetch_k=40))


def test_flat_torch_scan_equals_faiss_search(monkeypatch):
    """A few queries scan the flat index's own float32 vectors with torch (faster on two cores);
    after deletions (FAISS compacts its storage) they find the candidates FAISS finds."""
    from metaembed_rag.index import local

    rng = np.random.default_rng(18)
    index = make_index(coarse_index="flat")
    index.add([str(i) for i in range(200)], unit(rng, 200, K, D))
    index.delete([str(i) for i in range(0, 200, 7)])
    backend = index.backend
    q = queries(rng, 3)
    alive = backend.table.alive
    torch_cand, _ = backend.candidates(q, 25, alive, filtered=False)
    monkeypatch.setattr(local, "_TORCH_FLAT_MAX_QUERIES", 0)
    faiss_cand, valid = backend.candidates(q, 25, alive, filtered=False)
    assert valid.all() and alive[torch_cand].all()
    for t, f in zip(torch_cand, faiss_cand, strict=True):
        assert set(t.tolist()) == set(f.tolist())


def test_ivf_is_trained_again_when_the_collection_grows(monkeypatch, tmp_path):
    """IVF lists are fitted to the documents present when they are trained: an add that brings
    IVF_RETRAIN_GROWTH times as many trains them again on all live documents (and a loaded
    index counts from what it holds); with every list probed it returns what a flat coarse
    stage returns."""
    import metaembed_rag.index.coarse as coarse

    monkeypatch.setattr(coarse, "IVF_MIN_TRAIN", 200)
    rng = np.random.default_rng(16)
    index = make_index(coarse_index="ivf", nprobe=10_000, path=tmp_path / "ivf")
    backend = index.backend.coarse
    docs = unit(rng, 1000, K, D)
    index.add([str(i) for i in range(250)], docs[:250])
    assert (index.coarse_kind, backend.trained_on) == ("ivf", 250)
    index.add([str(i) for i in range(250, 999)], docs[250:999])
    assert backend.trained_on == 250  # 999 < 4 x 250: the same lists
    index.add(["999"], docs[999:])
    assert backend.trained_on == 1000  # 4 x 250 reached: trained again on all of them
    flat = make_index(coarse_index="flat")
    flat.add([str(i) for i in range(1000)], docs)
    q = queries(rng, 3)
    assert as_pairs(index.search(q, fetch_k=30)) == as_pairs(flat.search(q, fetch_k=30))
    index.save()
    loaded = MultiVectorIndex.load(tmp_path / "ivf")
    assert (loaded.coarse_kind, loaded.backend.coarse.trained_on) == ("ivf", 1000)
    loaded.close()
    index.close()


def test_ivf_list_count_follows_the_collection_not_the_training_sample():
    """Above 200k documents IVF trains on a sample; its list count is 4 * sqrt(N) of the N
    documents it will hold (capped at 39 training points per list), not of the sample."""
    from metaembed_rag.index.coarse import CoarseIndex

    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(17)
    train = rng.standard_normal((31_200, 8)).astype(np.float32)
    index = CoarseIndex(8, "ivf")._new("ivf", train, 40_000)
    assert faiss.extract_index_ivf(index).nlist == 800  # 4 * sqrt(40,000); sample alone: 706


def test_recall_budget_cascade():
    rng = np.random.default_rng(7)
    docs = unit(rng, 200, K, D)
    index = make_index(dtype="float32", recall_pool_factor=4)
    index.add([str(i) for i in range(200)], docs)
    q = queries(rng, 3)
    # pool = 4 * 50 = 200 covers everything: rescoring at (2,4) then reranking the best 50
    hits = index.search(q, k=5, fetch_k=50, recall_budget=(2, 4), rerank_budget=(4, 8))
    exact24 = maxsim(q, torch.from_numpy(docs), (2, 4), backend="torch").numpy()
    exact48 = maxsim(q, torch.from_numpy(docs), (4, 8), backend="torch").numpy()
    for qi, row in enumerate(hits):
        top50 = set(np.argsort(-exact24[qi], kind="stable")[:50].tolist())
        expect = sorted(top50, key=lambda j: (-exact48[qi, j], j))[:5]
        assert [int(h.id) for h in row] == expect


def test_errors():
    rng = np.random.default_rng(8)
    index = make_index()
    q = queries(rng, 1)
    with pytest.raises(ValueError, match="empty"):
        index.search(q)
    index.add(["a", "b"], unit(rng, 2, K, D), texts=["A", "B"], metadatas=[{"x": 1}, None])
    with pytest.raises(ValueError, match="already in the index.*upsert"):
        index.add(["a"], unit(rng, 1, K, D))
    with pytest.raises(ValueError, match="Duplicate ids"):
        index.add(["c", "c"], unit(rng, 2, K, D))
    with pytest.raises(ValueError, match=r"\(n, 8, 16\)"):
        index.add(["c"], unit(rng, 1, K, D + 1))
    with pytest.raises(ValueError, match=r"Valid budgets: \(1,1\), \(2,4\), \(4,8\)"):
        index.search(q, rerank_budget=(8, 16))
    with pytest.raises(ValueError, match="Valid budgets"):
        index.search(q, recall_budget=(3, 3))
    with pytest.raises(ValueError, match="dim=16"):
        index.search(torch.zeros(1, 4, D + 2))
    with pytest.raises(KeyError, match="'zz'"):
        index.delete(["a", "zz"])
    assert len(index) == 2  # nothing deleted
    assert index.delete(["zz"], missing_ok=True) == 0
    with pytest.raises(ValueError, match="NaN"):
        index.add(["n"], np.full((1, K, D), np.nan, dtype=np.float32))
    with pytest.raises(TypeError, match="JSON"):
        index.add(["m"], unit(rng, 1, K, D), metadatas=[{"x": object()}])
    hits = index.search(q, k=5)
    assert isinstance(hits[0][0], Hit) and len(hits[0]) == 2
    assert {h.id: (h.text, h.metadata) for h in hits[0]} == {"a": ("A", {"x": 1}), "b": ("B", {})}


@pytest.mark.parametrize("dtype", DTYPES)
def test_storage_precision_and_bytes(dtype):
    rng = np.random.default_rng(9)
    docs = unit(rng, 10, K, D)
    index = make_index(dtype=dtype)
    index.add([str(i) for i in range(10)], docs)
    got = np.stack([index.get(str(i))["vectors"].numpy() for i in range(10)])
    tol = {"float32": 0, "float16": 1e-3, "bfloat16": 8e-3, "int8": 1e-2}[dtype]
    assert np.abs(got - docs).max() <= tol
    per = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[dtype]
    extra = K * 4 if dtype == "int8" else 0
    assert index.bytes_per_document == K * D * per + extra + D * 2  # float16 coarse row


def test_disk_backed_index_grows(tmp_path):
    rng = np.random.default_rng(10)
    index = make_index(path=tmp_path / "idx")
    for s in range(0, 3000, 700):
        n = min(700, 3000 - s)
        index.add([str(i) for i in range(s, s + n)], unit(rng, n, K, D))
    assert len(index) == 3000
    assert isinstance(index.backend.rows.vectors.array, np.memmap)
    q = queries(rng, 2)
    assert as_pairs(index.search(q, fetch_k=3000)) == as_pairs(index.search(q, mode="exhaustive"))
    with pytest.raises(FileExistsError):
        index.save()
        make_index(path=tmp_path / "idx")


@pytest.mark.parametrize("deleted", [False, True])
def test_flat_torch_scan_matches_faiss_batch(deleted):
    """Few queries use a torch scan, batches use FAISS: both give the same results."""
    rng = np.random.default_rng(11)
    index = make_index(coarse_index="flat")
    index.add([str(i) for i in range(300)], unit(rng, 300, K, D))
    if deleted:
        index.delete([str(i) for i in range(0, 300, 3)])
    q = queries(rng, 12)  # > 8 queries: FAISS
    batch = index.search(q, k=10, fetch_k=30)
    singles = [index.search(q[i : i + 1], k=10, fetch_k=30)[0] for i in range(12)]
    assert as_pairs(batch) == as_pairs(singles)
    filt = {"$not": {"x": 1}}
    assert as_pairs(index.search(q, k=5, fetch_k=20, filter=filt)) == as_pairs(
        [index.search(q[i : i + 1], k=5, fetch_k=20, filter=filt)[0] for i in range(12)]
    )
