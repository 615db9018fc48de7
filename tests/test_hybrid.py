"""Hybrid search: fusion arithmetic, the BM25 sidecar (add/delete, persistence, atomic save)
and MultiVectorIndex.search(hybrid=...) against a brute-force reference."""

from __future__ import annotations

import json
import math

import bm25s
import numpy as np
import pytest
import torch

from metaembed_rag.baselines import bm25_rankings
from metaembed_rag.index import MultiVectorIndex, SearchParams
from metaembed_rag.index import saving as saving_mod
from metaembed_rag.index.fusion import RRF_K, fuse, rrf, weighted
from metaembed_rag.index.lexical import BM25_SETTINGS, LexicalIndex
from metaembed_rag.scoring import maxsim

WORDS = [
    "apple",
    "banana",
    "cherry",
    "dragon",
    "eagle",
    "falcon",
    "grape",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lemon",
]
K, D = 4, 8


def _corpus(n: int, seed: int = 0) -> tuple[list[str], torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]
    texts[3] = texts[5]  # a tie in BM25 and (below) in MaxSim
    g = torch.Generator().manual_seed(seed)
    vecs = torch.nn.functional.normalize(torch.randn(n, K, D, generator=g), dim=-1)
    vecs[5] = vecs[3]
    return [f"d{i}" for i in range(n)], vecs, texts


def _index(n: int = 40, **kw) -> tuple[MultiVectorIndex, list[str], torch.Tensor, list[str]]:
    ids, vecs, texts = _corpus(n)
    idx = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32", **kw)
    idx.add(ids, vecs, texts, [{"even": i % 2 == 0} for i in range(n)])
    return idx, ids, vecs, texts


def _queries(nq: int = 3) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(7)
    q = torch.nn.functional.normalize(torch.randn(nq, 2, D, generator=g), dim=-1)
    return q, ["banana cherry", "the island of lemon kettle", "zebra"][:nq]


# ---------------------------------------------------------------------- fusion arithmetic
def _ref_ranks(scores: list[float]) -> list[int]:
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    r = [0] * len(scores)
    for pos, j in enumerate(order):
        r[j] = pos + 1
    return r


def test_rrf_matches_a_hand_reference_with_ties_and_padding() -> None:
    rng = np.random.default_rng(1)
    dense = rng.integers(0, 4, size=(5, 9)).astype(float)  # many ties
    lex = rng.integers(0, 4, size=(5, 9)).astype(float)
    valid = rng.random((5, 9)) > 0.2
    got = rrf(dense, lex, valid)
    for i in range(5):
        cols = [j for j in range(9) if valid[i, j]]
        rd = _ref_ranks([dense[i, j] for j in cols])
        rl = _ref_ranks([lex[i, j] for j in cols])
        for c, j in enumerate(cols):
            assert got[i, j] == pytest.approx(1 / (RRF_K + rd[c]) + 1 / (RRF_K + rl[c]))
        assert all(got[i, j] == -math.inf for j in range(9) if not valid[i, j])


def test_weighted_matches_a_hand_reference() -> None:
    rng = np.random.default_rng(2)
    dense, lex = rng.normal(size=(4, 7)), np.abs(rng.normal(size=(4, 7)))
    lex[2] = 0.0  # a constant signal normalises to 0
    valid = np.ones((4, 7), dtype=bool)
    valid[1, 3:] = False
    for w in (0.0, 0.3, 1.0):
        got = weighted(dense, lex, valid, w)
        for i in range(4):
            cols = [j for j in range(7) if valid[i, j]]

            def norm(xs: list[float]) -> list[float]:
                lo, hi = min(xs), max(xs)
                return [(x - lo) / (hi - lo) if hi > lo else 0.0 for x in xs]

            nd, nl = norm([dense[i, j] for j in cols]), norm([lex[i, j] for j in cols])
            for c, j in enumerate(cols):
                assert got[i, j] == pytest.approx(w * nd[c] + (1 - w) * nl[c])


def test_fuse_rejects_bad_input() -> None:
    ones = np.ones((1, 2))
    with pytest.raises(ValueError, match="hybrid must be one of"):
        fuse("max", ones, ones, ones.astype(bool))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fuse("weighted", ones, ones, ones.astype(bool), 1.5)
    with pytest.raises(ValueError, match="one \\(nq, C\\) shape"):
        fuse("rrf", ones, np.ones((1, 3)), ones.astype(bool))


def test_search_params_validate_hybrid_options() -> None:
    assert SearchParams(hybrid="weighted", hybrid_weight=1).weight == 1.0
    assert SearchParams(hybrid="weighted").weight == 0.5
    with pytest.raises(ValueError, match="hybrid must be"):
        SearchParams(hybrid="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="applies to hybrid='weighted' only"):
        SearchParams(hybrid="rrf", hybrid_weight=0.2)
    with pytest.raises(ValueError, match=r"number in \[0, 1\]"):
        SearchParams(hybrid="weighted", hybrid_weight=2.0)
    p = SearchParams(hybrid="weighted", hybrid_weight=0.2)
    assert p.replace(hybrid=None, hybrid_weight=None).hybrid is None


# ---------------------------------------------------------------------- the BM25 sidecar
def test_sidecar_scores_equal_the_bm25_baseline() -> None:
    ids, _, texts = _corpus(60, seed=3)
    lex = LexicalIndex()
    lex.add(ids, texts)
    queries = ["banana cherry", "harbor", "lemon lemon grape"]
    scores = lex.scores(queries)
    ranked = bm25_rankings(ids, texts, queries, k=10)
    for i, row in enumerate(ranked):
        # the baseline's top 10 carry the 10 best sidecar scores (order may differ on ties)
        got = sorted(scores[i], reverse=True)[:10]
        assert np.allclose(sorted((scores[i][ids.index(d)] for d in row), reverse=True), got)


def _reference(
    idx_ids, vecs, texts, q, qtexts, method, weight, budget=(2, 4), keep=None, allow=None
):
    """Brute force over every document: MaxSim at ``budget``, BM25 from a fresh bm25s index
    of the live (``keep``) texts, fused by hand over the ``allow``-ed ones; ties by
    position."""
    live = [i for i in range(len(idx_ids)) if keep is None or keep(i)]
    s = BM25_SETTINGS
    tok = {"stopwords": s["stopwords"], "lower": s["lower"], "token_pattern": s["token_pattern"],
           "return_ids": False, "show_progress": False}  # fmt: skip
    model = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
    model.index(bm25s.tokenize([texts[i] for i in live], **tok), show_progress=False)
    dense = maxsim(q, vecs[live], budget).numpy()
    out = []
    for qi, text in enumerate(qtexts):
        toks = [t for t in bm25s.tokenize([text], **tok)[0] if t in model.vocab_dict]
        lex = model.get_scores(toks) if toks else np.zeros(len(live))
        cand = [j for j in range(len(live)) if allow is None or allow(live[j])]
        d = [float(dense[qi][j]) for j in cand]
        lx = [float(lex[j]) for j in cand]
        if method == "rrf":
            rd, rl = _ref_ranks(d), _ref_ranks(lx)
            f = [1 / (RRF_K + a) + 1 / (RRF_K + b) for a, b in zip(rd, rl, strict=True)]
        else:

            def norm(xs: list[float]) -> list[float]:
                lo, hi = min(xs), max(xs)
                return [(x - lo) / (hi - lo) if hi > lo else 0.0 for x in xs]

            f = [weight * a + (1 - weight) * b for a, b in zip(norm(d), norm(lx), strict=True)]
        order = sorted(range(len(cand)), key=lambda j: (-f[j], j))
        out.append([(idx_ids[live[cand[j]]], f[j]) for j in order])
    return out


@pytest.mark.parametrize("method,weight", [("rrf", None), ("weighted", 0.5), ("weighted", 0.2)])
@pytest.mark.parametrize("mode", ["two_stage", "exhaustive"])
def test_hybrid_search_equals_brute_force_fusion(method, weight, mode) -> None:
    idx, ids, vecs, texts = _index()
    q, qtexts = _queries()
    hits = idx.search(q, 12, texts=qtexts, fetch_k=len(ids), hybrid=method,
                      hybrid_weight=weight, mode=mode)  # fmt: skip
    ref = _reference(ids, vecs, texts, q, qtexts, method, weight or 0.5)
    for got, want in zip(hits, ref, strict=True):
        assert [h.id for h in got] == [d for d, _ in want[:12]]
        assert np.allclose([h.score for h in got], [s for _, s in want[:12]], atol=1e-6)


def test_hybrid_search_respects_the_filter_and_deletes() -> None:
    idx, ids, vecs, texts = _index()
    idx.delete(["d2", "d8"])
    q, qtexts = _queries()
    hits = idx.search(q, 10, texts=qtexts, fetch_k=100, hybrid="rrf", filter={"even": True})
    ref = _reference(ids, vecs, texts, q, qtexts, "rrf", 0.5,
                     keep=lambda i: i not in (2, 8), allow=lambda i: i % 2 == 0)  # fmt: skip
    for got, want in zip(hits, ref, strict=True):
        assert [h.id for h in got] == [d for d, _ in want[:10]]
        assert all(h.metadata["even"] for h in got)


def test_small_fetch_k_fuses_the_union_of_each_signals_top() -> None:
    idx, ids, _, texts = _index(60)
    q, qtexts = _queries(1)
    dense = [h.id for h in idx.search(q, 5, mode="exhaustive")[0]]
    lex = idx.lexical
    col = lex.scores(qtexts)[0]
    lexical = [lex.ids[j] for j in np.argsort(-col, kind="stable")[:5] if col[j] > 0]
    hits = idx.search(q, 5, texts=qtexts, fetch_k=5, hybrid="rrf", mode="exhaustive")[0]
    assert len(hits) == 5 and {h.id for h in hits} <= set(dense) | set(lexical)
    assert len(set(dense) | set(lexical)) > 5  # the fusion chose among more than k


def test_hybrid_needs_texts_and_a_sidecar() -> None:
    idx, *_ = _index()
    q, _ = _queries()
    with pytest.raises(ValueError, match="needs the query texts"):
        idx.search(q, 3, hybrid="rrf")
    off, *_ = _index(lexical=False)
    with pytest.raises(ValueError, match="lexical=False"):
        off.search(q, 3, hybrid="rrf", texts=["a", "b", "c"])
    assert off.search(q, 3)  # the dense search is unaffected


def test_sidecar_follows_add_upsert_delete() -> None:
    idx, ids, vecs, texts = _index(10)
    idx.delete(["d1"])
    idx.upsert(["d2"], vecs[:1], ["zebra zebra"])
    idx.add(["new"], vecs[1:2], ["quokka"])
    assert sorted(idx.lexical.ids) == sorted(idx.ids)
    q, _ = _queries(1)
    top = idx.search(q, 1, texts=["zebra"], hybrid="weighted", hybrid_weight=0.0)[0][0]
    assert top.id == "d2"
    top = idx.search(q, 1, texts=["quokka"], hybrid="weighted", hybrid_weight=0.0)[0][0]
    assert top.id == "new"


def test_sidecar_saved_in_the_manifest_and_reloaded(tmp_path) -> None:
    idx, ids, vecs, texts = _index()
    q, qtexts = _queries()
    before = idx.search(q, 8, texts=qtexts, hybrid="rrf")
    idx.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["files"]["lexical"]
    assert entry["name"].startswith("lexical-") and entry["name"].endswith(".safetensors")
    assert not (tmp_path / entry["name"]).read_bytes().startswith(b"\x80")  # not a pickle
    loaded = MultiVectorIndex.load(tmp_path)
    assert loaded.search(q, 8, texts=qtexts, hybrid="rrf") == before
    # unchanged sidecar: the same file is kept; after a delete a new one replaces it
    loaded.save()
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]["lexical"] == entry
    loaded.delete(["d0"])
    loaded.save()
    new = json.loads((tmp_path / "manifest.json").read_text())["files"]["lexical"]
    assert new["name"] != entry["name"] and not (tmp_path / entry["name"]).exists()
    assert "d0" not in MultiVectorIndex.load(tmp_path).lexical


def test_crash_before_the_manifest_keeps_the_previous_sidecar(tmp_path, monkeypatch) -> None:
    idx, *_ = _index()
    idx.save(tmp_path)
    live = MultiVectorIndex.load(tmp_path)
    live.add(["late"], torch.nn.functional.normalize(torch.randn(1, K, D), dim=-1), ["quokka"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saving_mod, "write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        live.save()
    monkeypatch.undo()
    again = MultiVectorIndex.load(tmp_path)
    assert "late" not in again.lexical and len(again.lexical) == len(again) == 40


def test_index_saved_without_a_sidecar_builds_it_from_its_texts(tmp_path) -> None:
    idx, *_ = _index()
    q, qtexts = _queries()
    want = idx.search(q, 8, texts=qtexts, hybrid="weighted")
    idx._lexical = None  # as an index saved before hybrid search existed
    idx.save(tmp_path)
    assert "lexical" not in json.loads((tmp_path / "manifest.json").read_text())["files"]
    loaded = MultiVectorIndex.load(tmp_path)
    assert loaded.search(q, 8, texts=qtexts, hybrid="weighted") == want
    loaded.save()
    assert "lexical" in json.loads((tmp_path / "manifest.json").read_text())["files"]


def test_a_sidecar_that_disagrees_with_the_manifest_is_refused(tmp_path) -> None:
    from metaembed_rag.index import IndexCorruptedError

    idx, *_ = _index()
    idx.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    # counts that agree with each other (so the manifest check passes) but not with the sidecar
    manifest["counts"]["documents"], manifest["counts"]["deleted"] = 39, 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptedError, match="40 documents but the manifest records 39"):
        MultiVectorIndex.load(tmp_path)


def test_hybrid_refuses_a_non_maxsim_scorer() -> None:
    from metaembed_rag.index import SearchParams

    with pytest.raises(ValueError, match="drop hybrid or the scorer"):
        SearchParams.of(5, hybrid="rrf", scorer="pooled")
    assert SearchParams.of(5, hybrid="rrf", scorer="maxsim").scorer is None  # MaxSim is fine
