"""save / load: round trip, atomicity under a failing write, refusal of mismatches, corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _index_utils import K, as_pairs, make_index, queries, unit

from metaembed_rag.index import (
    IndexCorruptedError,
    IndexMismatchError,
    MultiVectorIndex,
    doctable,
    rowset,
)
from metaembed_rag.index import coarse as coarse_mod
from metaembed_rag.index import saving as mv


def _filled(rng, n=150, **kw):
    index = make_index(fingerprint="fp-A", **kw)
    index.add([f"d{i}" for i in range(n)], unit(rng, n, K, 16),
              texts=[f"text {i}" for i in range(n)],
              metadatas=[{"i": i, "odd": i % 2 == 1} for i in range(n)])  # fmt: skip
    return index


def _results(index, q):
    return (
        as_pairs(index.search(q, k=8, fetch_k=20)),
        as_pairs(index.search(q, k=8, fetch_k=20, filter={"odd": True})),
        as_pairs(index.search(q, k=8, mode="exhaustive")),
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "int8"])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_identical(tmp_path, dtype, mmap):
    rng = np.random.default_rng(20)
    index = _filled(rng, dtype=dtype)
    index.delete(["d3", "d4"])
    q = queries(rng, 3)
    before = _results(index, q)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dtype"] == dtype and manifest["counts"]["documents"] == 148
    assert manifest["model_fingerprint"] == "fp-A" and manifest["vectors_per_doc"] == K
    loaded = MultiVectorIndex.load(tmp_path / "idx", mmap=mmap)
    assert _results(loaded, q) == before
    assert loaded.get("d7")["text"] == "text 7" and loaded.get("d7")["metadata"] == {
        "i": 7,
        "odd": True,
    }
    assert "d3" not in loaded
    np.testing.assert_array_equal(loaded.get("d9")["vectors"], index.get("d9")["vectors"])
    # the loaded index keeps working incrementally and saves again
    loaded.add(["new"], unit(rng, 1, K, 16))
    loaded.save(tmp_path / "idx2")
    again = MultiVectorIndex.load(tmp_path / "idx2")
    assert len(again) == 149 and "new" in again


@pytest.mark.parametrize("coarse_index", ["flat", "hnsw", "ivf"])
def test_in_place_save_and_reload(tmp_path, monkeypatch, coarse_index):
    """A flat coarse stage is rebuilt from the float16 coarse rows on load (no FAISS file);
    HNSW and IVF save theirs. Either way the reloaded index searches the same."""
    monkeypatch.setattr(coarse_mod, "IVF_MIN_TRAIN", 100)
    rng = np.random.default_rng(21)
    index = _filled(rng, path=tmp_path / "live", coarse_index=coarse_index)
    assert index.coarse_kind == coarse_index
    index.save()
    index.add(["x1", "x2"], unit(rng, 2, K, 16))
    index.delete(["d0"])
    index.save()
    loaded = MultiVectorIndex.load(tmp_path / "live")
    q = queries(rng, 2)
    assert _results(loaded, q) == _results(index, q)
    files = sorted(
        p.name.split("-")[0] for p in (tmp_path / "live").iterdir() if not p.name.startswith(".")
    )
    faiss = [] if coarse_index == "flat" else ["faiss"]
    assert files == ["coarse", "docs", *faiss, "lexical", "manifest.json", "vectors"]
    coarse = np.fromfile(next((tmp_path / "live").glob("coarse-*")), dtype=np.float16)
    np.testing.assert_array_equal(
        coarse.reshape(-1, 16)[loaded.backend.rows_of(["d9"])[0]],
        loaded.backend.rows.coarse_rows(loaded.backend.rows_of(["d9"]))[0],
    )


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("fail_at", ["docs", "faiss", "vectors", "manifest"])
def test_crash_mid_save_keeps_old_index(tmp_path, monkeypatch, in_place, fail_at):
    rng = np.random.default_rng(22)
    folder = tmp_path / "idx"
    # a flat coarse stage is never saved: fail writing an HNSW one
    index = _filled(
        rng,
        path=folder if in_place else None,
        coarse_index="hnsw" if fail_at == "faiss" else "auto",
    )
    index.save(folder)
    q = queries(rng, 3)
    before = _results(MultiVectorIndex.load(folder), q)
    # change the index, then fail half-way through saving it
    index.add([f"n{i}" for i in range(40)], unit(rng, 40, K, 16))
    index.delete([f"d{i}" for i in range(0, 150, 2)])  # past compact_ratio: save compacts first

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    if fail_at == "docs":
        real = json.dumps
        calls = {"n": 0}

        def half(*a, **k):  # fail in the middle of writing the JSONL sidecar
            calls["n"] += 1
            if calls["n"] > 50:
                raise OSError("disk full (simulated)")
            return real(*a, **k)

        monkeypatch.setattr(doctable.json, "dumps", half)
    elif fail_at == "faiss":
        monkeypatch.setattr(index.backend.coarse, "write", boom)
    elif fail_at == "vectors":
        monkeypatch.setattr(rowset, "block_hashes", boom)
    else:
        monkeypatch.setattr(mv, "write_manifest", boom)
    with pytest.raises(OSError, match="simulated"):
        index.save(folder)
    monkeypatch.undo()
    loaded = MultiVectorIndex.load(folder)
    assert len(loaded) == 150
    assert _results(loaded, q) == before
    # and a later successful save works
    index.save(folder)
    assert len(MultiVectorIndex.load(folder)) == len(index)


def test_mismatches_refused(tmp_path):
    rng = np.random.default_rng(23)
    _filled(rng, dtype="bfloat16").save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match=r"fingerprint 'fp-A'.*'fp-B'.*rebuild"):
        MultiVectorIndex.load(tmp_path / "idx", fingerprint="fp-B")
    with pytest.raises(IndexMismatchError, match=r"dtype 'bfloat16'.*'float16'"):
        MultiVectorIndex.load(tmp_path / "idx", dtype="float16")
    with pytest.raises(IndexMismatchError, match=r"dim 16.*32"):
        MultiVectorIndex.load(tmp_path / "idx", dim=32)

    class FakeModel:
        dim = 16

        def fingerprint(self):
            return "fp-Z"

    with pytest.raises(IndexMismatchError, match="fp-Z"):
        MultiVectorIndex.load(tmp_path / "idx", model=FakeModel())
    assert len(MultiVectorIndex.load(tmp_path / "idx", fingerprint="fp-A", dtype="bfloat16")) == 150


def test_other_format_versions_refused(tmp_path):
    """Format 2 reads format 1 (tests/test_legacy_fixtures.py); a newer one is refused with the
    versions this code reads."""
    rng = np.random.default_rng(27)
    _filled(rng, n=5).save(tmp_path / "idx")
    path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["format_version"] == 2
    path.write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(IndexMismatchError, match=r"format version 3.*reads versions 1, 2"):
        MultiVectorIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("target", ["vectors", "coarse", "docs", "faiss"])
def test_corruption_detected(tmp_path, target):
    rng = np.random.default_rng(24)
    _filled(rng, coarse_index="hnsw").save(tmp_path / "idx")  # HNSW: a FAISS file is saved
    path = next((tmp_path / "idx").glob(f"{target}-*"))
    data = bytearray(path.read_bytes())
    pos = len(data) // 2
    data[pos] ^= 0xFF
    data[pos + 1] ^= 0x0F
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match=path.name):
        MultiVectorIndex.load(tmp_path / "idx")


def test_missing_and_truncated_files(tmp_path):
    rng = np.random.default_rng(25)
    _filled(rng).save(tmp_path / "idx")
    vec = next((tmp_path / "idx").glob("vectors-*"))
    vec.write_bytes(vec.read_bytes()[:-10])
    with pytest.raises(IndexCorruptedError, match="truncated"):
        MultiVectorIndex.load(tmp_path / "idx", verify=False)
    vec.unlink()
    with pytest.raises(IndexCorruptedError, match="missing"):
        MultiVectorIndex.load(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        MultiVectorIndex.load(tmp_path / "nowhere")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="not valid JSON"):
        MultiVectorIndex.load(tmp_path / "idx")


def test_only_plain_file_formats(tmp_path):
    rng = np.random.default_rng(26)
    _filled(rng, dtype="int8").save(tmp_path / "idx")
    names = sorted(
        p.name.split("-")[0] for p in (tmp_path / "idx").iterdir() if not p.name.startswith(".")
    )
    assert names == ["coarse", "docs", "lexical", "manifest.json", "scales", "vectors"]
    from safetensors import safe_open

    for p in (tmp_path / "idx").glob("lexical-*.safetensors"):  # the BM25 sidecar
        with safe_open(str(p), "np") as f:
            assert set(f.keys()) == {"tokens", "offsets", "ids", "vocab"}
    for p in (tmp_path / "idx").glob("docs-*.jsonl"):
        assert all(json.loads(line) is None or "id" in json.loads(line) for line in p.open())
