"""Every storage kind (float, int8, PLAID-style residual, tiered, index-time truncation): round trip,
add / delete / compact, save / load, corruption detected, and the residual kernel against its
reference (decode + float32 MaxSim)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.index.persist import IndexCorruptedError
from metaembed_rag.index.residual import ResidualCodebook, default_centroids
from metaembed_rag.scoring import maxsim, maxsim_pairwise
from metaembed_rag.scoring.residual import (
    decode_residual,
    maxsim_residual_ids,
    residual_kernel_available,
)

D, K, N = 32, 8, 120
BUDGETS = [(1, 1), (2, 4), (4, 8)]
KINDS = ["float32", "float16", "bfloat16", "int8", "residual1", "residual2", "residual4", "tiered"]
RESIDUAL = ["residual1", "residual2", "residual4"]
CODED = [*RESIDUAL, "tiered"]  # kinds that save a codebook
#: Largest mean |decoded - original| per value each kind may show on the clustered test data.
TOLERANCE = {
    "float32": 0.0, "float16": 1e-3, "bfloat16": 4e-3, "int8": 4e-3,
    "residual1": 0.12, "residual2": 0.07, "residual4": 0.02, "tiered": 0.03,
}  # fmt: skip

needs_kernel = pytest.mark.skipif(
    not residual_kernel_available(), reason="compiled residual kernel not built"
)


def _docs(n: int = N, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Clustered unit vectors (n, K, D): 6 topics + noise, like trained embeddings."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((6, D)).astype(np.float32)
    x = topics[rng.integers(0, 6, (n, K))] + 0.4 * rng.standard_normal((n, K, D))
    x = x.astype(np.float32) + shift
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ids(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _index(kind: str, **kw) -> MultiVectorIndex:
    return MultiVectorIndex(D, num_vectors=K, budgets=BUDGETS, storage=kind, num_centroids=16, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_exact_search(kind):
    x = _docs()
    index = _index(kind)
    index.add(_ids(N), x)
    got = np.stack([index.get(f"d{i}")["vectors"].numpy() for i in range(N)])
    assert got.shape == x.shape
    assert float(np.abs(got - x).mean()) <= TOLERANCE[kind]
    # two-stage over every document == exhaustive == exact MaxSim on the decoded vectors
    q = torch.from_numpy(_docs(5, seed=3)[:, :4])
    two_s, two_r = index.search_rows(q, k=10, fetch_k=N, rerank_budget=(4, 8))
    ex_s, ex_r = index.search_rows(q, k=10, mode="exhaustive", rerank_budget=(4, 8))
    np.testing.assert_array_equal(two_r, ex_r)
    ref = maxsim_pairwise(q, torch.from_numpy(got)[None].expand(5, -1, -1, -1), (4, 8))
    np.testing.assert_allclose(
        two_s, np.take_along_axis(ref.numpy(), two_r, 1), rtol=1e-5, atol=1e-5
    )
    assert index.dtype == kind


@pytest.mark.parametrize("kind", KINDS)
def test_add_delete_compact(kind, tmp_path):
    x = _docs()
    index = _index(kind, path=tmp_path / "ix")
    index.add(_ids(60), x[:60])
    codebook = index.codec.codebook
    centroids = None if codebook is None else codebook.centroids.copy()
    index.add(_ids(60, "e"), x[60:])  # the codebook is kept on add (the policy)
    if codebook is not None:
        np.testing.assert_array_equal(codebook.centroids, centroids)
    before = index.get("e5")["vectors"]
    index.delete([f"d{i}" for i in range(0, 60, 2)])
    assert len(index) == 90
    q = torch.from_numpy(x[61:62, :4])
    hits_before = [h.id for h in index.search(q, k=5, fetch_k=N)[0]]
    index.compact()
    assert index.num_rows == 90
    assert [h.id for h in index.search(q, k=5, fetch_k=N)[0]] == hits_before
    torch.testing.assert_close(index.get("e5")["vectors"], before, rtol=0, atol=0)
    assert "d0" not in index and "d1" in index
    index.close()


@pytest.mark.parametrize("kind", KINDS)
def test_save_load(kind, tmp_path):
    x = _docs()
    index = _index(kind)
    index.add(_ids(N), x)
    q = torch.from_numpy(x[:3, :4])
    s0, r0 = index.search_rows(q, k=5)
    index.save(tmp_path / "saved")
    for mmap in (True, False):
        loaded = MultiVectorIndex.load(tmp_path / "saved", mmap=mmap)
        assert loaded.dtype == kind
        s1, r1 = loaded.search_rows(q, k=5)
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_array_equal(s0, s1)
        loaded.close()
    # append in place after a load, save again, reload
    loaded = MultiVectorIndex.load(tmp_path / "saved")
    loaded.add(["new"], x[:1])
    loaded.save()
    again = MultiVectorIndex.load(tmp_path / "saved")
    assert len(again) == N + 1
    torch.testing.assert_close(again.get("new")["vectors"], index.get("d0")["vectors"])
    again.close()
    loaded.close()


@pytest.mark.parametrize("kind", KINDS)
def test_corruption_detected(kind, tmp_path):
    index = _index(kind)
    index.add(_ids(N), _docs())
    folder = index.save(tmp_path / "saved")
    target = next(folder.glob("vectors-*.bin"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        MultiVectorIndex.load(folder)


@pytest.mark.parametrize("kind", CODED)
def test_corrupt_or_missing_codebook_detected(kind, tmp_path):
    index = _index(kind)
    index.add(_ids(N), _docs())
    folder = index.save(tmp_path / "saved")
    book = next(folder.glob("codebook-*.safetensors"))
    data = bytearray(book.read_bytes())
    data[-5] ^= 0xFF
    book.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        MultiVectorIndex.load(folder)
    book.unlink()
    with pytest.raises(IndexCorruptedError, match="missing"):
        MultiVectorIndex.load(folder)


@pytest.mark.parametrize("kind", ["bfloat16", "residual2", "tiered"])
def test_index_time_truncation(kind, tmp_path):
    x = _docs()
    index = _index(kind, stored_vectors=4, path=tmp_path / "ix")
    index.add(_ids(N), x)
    full = _index(kind)
    full.add(_ids(N), x)
    assert index.bytes_per_document < full.bytes_per_document
    assert index.get("d0")["vectors"].shape == (4, D)
    q = torch.from_numpy(x[:2, :4])
    # the default rerank budget is the largest that fits the stored vectors
    s, r = index.search_rows(q, k=5, fetch_k=N)
    s_ref, r_ref = index.search_rows(q, k=5, fetch_k=N, rerank_budget=(2, 4))
    np.testing.assert_array_equal(r, r_ref)
    for options in ({"rerank_budget": (4, 8)}, {"mode": "exhaustive", "rerank_budget": (4, 8)}):
        with pytest.raises(ValueError, match="stores only the first 4"):
            index.search_rows(q, k=5, **options)
    index.save()
    loaded = MultiVectorIndex.load(tmp_path / "ix")
    assert loaded.stored_vectors == 4
    with pytest.raises(ValueError, match="stores only the first 4"):
        loaded.search(q, rerank_budget=(4, 8))
    loaded.close()
    index.close()
    with pytest.raises(ValueError, match="stored_vectors"):
        _index(kind, stored_vectors=K + 1)


def test_drift_warning_and_policy(caplog):
    """The codebook is trained on the first batch and kept; a batch it fits badly logs a
    warning that says to rebuild."""
    index = _index("residual2")
    index.add(_ids(N), _docs())
    book = index.codec.codebook
    assert book is not None and book.trained
    centroids = book.centroids.copy()
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.residual"):
        index.add(_ids(20, "same"), _docs(20, seed=0))
    assert "drift" not in caplog.text
    far = np.random.default_rng(9).standard_normal((20, K, D)).astype(np.float32)
    far /= np.linalg.norm(far, axis=-1, keepdims=True)
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.residual"):
        index.add(_ids(20, "far"), far)
    assert "drift" in caplog.text and "Rebuild" in caplog.text
    np.testing.assert_array_equal(book.centroids, centroids)


@pytest.mark.parametrize("kind", RESIDUAL)
def test_unit_length_policy(kind, tmp_path):
    """Trained on unit vectors, a residual index decodes to unit length, keeps that through a
    save and load, refuses a later batch of other lengths (nothing added), and scores the
    unit-length decodings."""
    index = _index(kind)
    index.add(_ids(N), _docs())
    book = index.codec.codebook
    assert book is not None and book.unit_norm
    got = torch.stack([index.get(f"d{i}")["vectors"] for i in range(N)])
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(N, K), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="unit-length vectors.*normalise them"):
        index.add(_ids(5, "long"), 2 * _docs(5, seed=3))
    assert len(index) == N
    index.add(_ids(5, "long"), _docs(5, seed=3))  # the same ids, normalised: taken
    index.delete(_ids(5, "long"))
    q = torch.from_numpy(_docs(3, seed=5)[:, :4])
    ref = maxsim(q, got, (4, 8))
    hits = index.search(q, k=N, mode="exhaustive", rerank_budget=(4, 8))
    for i in range(3):
        scores = {h.id: h.score for h in hits[i]}
        np.testing.assert_allclose(
            [scores[f"d{j}"] for j in range(N)], ref[i].numpy(), rtol=1e-5, atol=1e-5
        )
    index.save(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx")
    assert loaded.codec.codebook is not None and loaded.codec.codebook.unit_norm
    np.testing.assert_array_equal(loaded.get("d7")["vectors"].numpy(), got[7].numpy())
    loaded.close()
    index.close()


def test_codebook_of_other_lengths_and_old_files(tmp_path):
    """Vectors not of unit length: no rescaling (decoding as before), any later batch is
    taken. A codebook file saved before the flag existed loads as not unit_norm."""
    from safetensors.numpy import load_file, save_file

    x = _docs(40) * np.float32(3.0)
    book = ResidualCodebook(D, 2, 16)
    book.train(x.reshape(-1, D))
    assert not book.unit_norm
    cid, packed = book.encode(_docs(5, seed=2))  # unit vectors are fine here
    assert book.decode(cid, packed).shape == (5, K, D)
    unit = ResidualCodebook(D, 2, 16)
    unit.train(_docs(40).reshape(-1, D))
    path = tmp_path / "old.safetensors"
    path.write_bytes(unit.to_bytes())
    tensors = load_file(str(path))
    assert tensors["unit_norm"].tolist() == [1]
    del tensors["unit_norm"]
    save_file(tensors, str(path))
    old = ResidualCodebook(D, 2)
    old.load(path)
    assert not old.unit_norm
    cid, packed = unit.encode(_docs(5, seed=2))
    np.testing.assert_array_equal(
        old.decode(cid, packed),
        decode_residual(cid, packed, unit.centroids, unit.byte_table(), normalize=False),
    )


def test_residual_needs_packable_dim():
    with pytest.raises(ValueError, match="multiple of 8"):
        MultiVectorIndex(30, num_vectors=K, budgets=BUDGETS, storage="residual1")
    with pytest.raises(ValueError, match="disagree"):
        MultiVectorIndex(D, num_vectors=K, budgets=BUDGETS, storage="int8", dtype="float16")
    with pytest.raises(ValueError, match="Unknown storage"):
        MultiVectorIndex(D, num_vectors=K, budgets=BUDGETS, storage="residual3")


def test_default_centroids_rule():
    assert default_centroids(320_000) == 1024
    assert default_centroids(100) == 100  # never more centroids than vectors
    assert default_centroids(10_000) == 1024 and default_centroids(1000) == 256


# ------------------------------------------------------------------------------------ kernel
def _coded(nbits: int, seed: int = 0, length: float = 1.0):
    x = _docs(80, seed=seed) * np.float32(length)
    book = ResidualCodebook(D, nbits, 16)
    book.train(x.reshape(-1, D))
    cid, packed = book.encode(x)
    return x, book, cid, packed


@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("length", [1.0, 2.0])
def test_decode_matches_codebook_bit_for_bit(nbits, length):
    """The byte-table decoding (codebook, torch path, kernel) against the bucket values read
    per dimension from the unpacked codes: ``centroids[cid] + weights[d, code]``."""
    from metaembed_rag.scoring.residual import unit_length

    _, book, cid, packed = _coded(nbits, length=length)
    assert book.unit_norm == (length == 1.0)
    codes = book.unpack(packed).astype(np.int64)
    reference = book.centroids[cid.astype(np.int64)] + book.weights[np.arange(D), codes]
    if book.unit_norm:
        reference = unit_length(reference)
    decoded = decode_residual(cid, packed, book.centroids, book.byte_table(), book.unit_norm)
    np.testing.assert_array_equal(decoded, reference)
    np.testing.assert_array_equal(book.decode(cid, packed), reference)


@needs_kernel
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("budget", [(1, 1), (3, 5), (4, 8)])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("length", [1.0, 0.5])
def test_kernel_against_reference(nbits, budget, threads, length):
    x, book, cid, packed = _coded(nbits, length=length)
    rng = np.random.default_rng(1)
    q = torch.nn.functional.normalize(torch.randn(4, 6, D), dim=-1)
    ids = rng.integers(0, 80, (4, 33))
    args = (q, cid, packed, book.centroids, book.byte_table(), ids, *budget)
    kw = {"normalize": book.unit_norm}
    kernel = maxsim_residual_ids(*args, backend="kernel", threads=threads, **kw)
    torch_path = maxsim_residual_ids(*args, backend="torch", **kw)
    decoded = torch.from_numpy(book.decode(cid, packed))[torch.from_numpy(ids)]
    reference = maxsim_pairwise(q, decoded, budget, backend="torch")
    # against its own reference (decode + float32 MaxSim): float32 rounding only
    torch.testing.assert_close(kernel, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch_path, reference, rtol=1e-5, atol=1e-5)
    # against the original vectors: within the quantisation error. For unit queries
    # |<q, v> - <q, v'>| <= |v - v'|, so each of the r_q maxima moves at most max |err|.
    exact = maxsim_pairwise(q, torch.from_numpy(x)[torch.from_numpy(ids)], budget, backend="torch")
    err = np.linalg.norm(book.decode(cid, packed) - x, axis=-1)[:, : budget[1]].max()
    assert float((kernel - exact).abs().max()) <= budget[0] * err + 1e-5


@needs_kernel
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dim", [32, 40])
@pytest.mark.parametrize("length", [1.0, 0.5])
def test_kernel_paths_against_reference(monkeypatch, isa, dim, length):
    """Each build of the kernel's loops (portable, AVX2 2x4, AVX-512 4x4 query x decoded vector
    blocks) against decode + float32 MaxSim: budgets that fill the blocks and leave remainders
    (r_q 6 and 5, r_c 7), and D=40, whose last 8 dimensions are outside AVX-512's 16 lanes."""
    from metaembed_rag.scoring import residual

    code = {"generic": 0, "avx2": 1, "avx512": 2}[isa]
    if residual._ext is None or code > residual._ext.best_isa():
        pytest.skip(f"{isa} is not supported by this CPU")
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 8, dim)).astype(np.float32)
    x *= np.float32(length) / np.linalg.norm(x, axis=-1, keepdims=True)
    q = torch.nn.functional.normalize(torch.randn(3, 6, dim), dim=-1)
    ids = rng.integers(0, 60, (3, 17))
    for nbits in (1, 2, 4):
        book = ResidualCodebook(dim, nbits, 8)
        book.train(x.reshape(-1, dim))
        cid, packed = book.encode(x)
        decoded = torch.from_numpy(decode_residual(cid, packed, book.centroids,
                                                   book.byte_table(), book.unit_norm))  # fmt: skip
        for budget in [(6, 7), (5, 8), (1, 1)]:
            got = maxsim_residual_ids(q, cid, packed, book.centroids, book.byte_table(), ids,
                                      *budget, backend="kernel", normalize=book.unit_norm)  # fmt: skip
            want = maxsim_pairwise(q, decoded[torch.from_numpy(ids)], budget, backend="torch")
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_kernel_on_memmaps_and_bad_input(tmp_path):
    x, book, cid, packed = _coded(2)
    path = tmp_path / "p.bin"
    packed.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=packed.shape)
    q = torch.nn.functional.normalize(torch.randn(2, 4, D), dim=-1)
    ids = np.arange(10).reshape(2, 5)
    a = maxsim_residual_ids(q, cid, mm, book.centroids, book.byte_table(), ids, 4, 8)
    b = maxsim_residual_ids(q, cid, packed, book.centroids, book.byte_table(), ids, 4, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(IndexError, match="out of range"):
        maxsim_residual_ids(q, cid, packed, book.centroids, book.byte_table(), ids + 100, 4, 8)
    bad = cid.copy()
    bad[0, 0] = 60000
    with pytest.raises(ValueError, match="centroid id"):
        maxsim_residual_ids(q, bad, packed, book.centroids, book.byte_table(), ids, 4, 8)
    with pytest.raises(ValueError, match="budget"):
        maxsim_residual_ids(q, cid, packed, book.centroids, book.byte_table(), ids, 5, 8)


@needs_kernel
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dim", [32, 40])
def test_int8_kernel_against_reference(monkeypatch, isa, dim):
    """int8 rows scored by the coded-row kernel (each instruction set's loops) and by the torch
    backend against dequantisation (VectorCodec.decode) + float32 MaxSim."""
    from metaembed_rag.index.storage import VectorCodec
    from metaembed_rag.scoring import residual
    from metaembed_rag.scoring.int8 import maxsim_int8_ids

    code = {"generic": 0, "avx2": 1, "avx512": 2}[isa]
    if residual._ext is None or code > residual._ext.best_isa():
        pytest.skip(f"{isa} is not supported by this CPU")
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    rng = np.random.default_rng(8)
    codec = VectorCodec("int8", dim)
    x = rng.standard_normal((50, 8, dim)).astype(np.float32)
    rows, scales = codec.encode(x / np.linalg.norm(x, axis=-1, keepdims=True))
    assert scales is not None
    decoded = codec.decode(rows, scales)
    q = torch.nn.functional.normalize(torch.randn(3, 6, dim), dim=-1)
    ids = rng.integers(0, 50, (3, 11))
    for budget in [(6, 7), (4, 8), (1, 1)]:
        want = maxsim_pairwise(q, decoded[torch.from_numpy(ids)], budget, backend="torch")
        for backend in ("kernel", "torch"):
            got = maxsim_int8_ids(q, rows, scales, ids, *budget, backend=backend)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_int8_kernel_bad_input():
    from metaembed_rag.scoring.int8 import maxsim_int8_ids

    rows = np.zeros((4, 8, D), np.int8)
    scales = np.ones((4, 8), np.float32)
    q = torch.nn.functional.normalize(torch.randn(1, 4, D), dim=-1)
    with pytest.raises(IndexError, match="out of range"):
        maxsim_int8_ids(q, rows, scales, np.array([[0, 4]]), 2, 2)
    # the torch backend checks too (numpy indexing would wrap a negative id)
    with pytest.raises(IndexError, match="candidate row -1 out of range"):
        maxsim_int8_ids(q, rows, scales, np.array([[0, -1]]), 2, 2, backend="torch")
    with pytest.raises(ValueError, match="budget"):
        maxsim_int8_ids(q, rows, scales, np.array([[0]]), 5, 2)
    with pytest.raises(ValueError, match="scales"):
        maxsim_int8_ids(q, rows, scales[:, :4], np.array([[0]]), 2, 2)
