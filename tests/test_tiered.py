"""The tiered storage kind (gain-shape transform coding): its layout and size, decoding
against an independent reference, the kernel against decoding + float32 MaxSim (every ISA
build, budgets across tiers), the keep-on-add policy, the coarse vectors it derives, and a
damaged codebook. The storage-kind suite (round trip, add/delete/compact, save/load,
corruption, truncation) runs it too: ``tests/test_storage_kinds.py``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.index.persist import IndexCorruptedError, IndexMismatchError
from metaembed_rag.index.tiered import LAYOUT, TieredCodebook, tier_bits
from metaembed_rag.scoring import maxsim_pairwise
from metaembed_rag.scoring.tiered import maxsim_tiered_ids, tiered_kernel_available

needs_kernel = pytest.mark.skipif(
    not tiered_kernel_available(), reason="compiled tiered kernel not built"
)


def _docs(n: int, k: int, d: int, seed: int = 0, spread: float = 0.5) -> np.ndarray:
    """Unit vectors ``(n, k, d)`` around one direction per document (like a chunk's Meta
    vectors, which share its topic)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, d)) + spread * rng.standard_normal((n, k, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_size_at_the_default_shape():
    book = TieredCodebook(384, 64)
    assert [tier_bits(k, 384) for k in (0, 8, 16)] == [1024, 512, 256]
    # codes + float16 gains + float16 centre: under 4 KiB with the document line
    assert book.row_bytes() == 8 * 128 + 8 * 64 + 48 * 32
    assert book.row_bytes() + 64 * 2 + 384 * 2 == 3968
    assert TieredCodebook(384, 16).row_bytes(16) == 8 * 128 + 8 * 64


def _reference_decode(book: TieredCodebook, x: np.ndarray) -> np.ndarray:
    """Decoding written from the codebook's arrays, without the packed bytes: each value
    bucketed by its width's edges and replaced by the bucket mean."""
    centre = x.mean(axis=1).astype(np.float16).astype(np.float32)
    out = np.empty_like(x)
    for g, (start, end) in enumerate(book.groups):
        for k in range(start, end):
            r = x[:, k] - centre - book.offsets[k]
            gain = np.linalg.norm(r, axis=1).astype(np.float16).astype(np.float32)
            y = ((r / np.maximum(gain, 1e-6)[:, None]) @ book.axes[g]) / book.scale[g]
            vals = np.zeros_like(y)
            for a in range(book.dim):
                b = int(book.bits[g, a])
                if b:
                    code = np.searchsorted(book.edges[g, b, : (1 << b) - 1], y[:, a], "left")
                    vals[:, a] = book.means[g, b][code]
            out[:, k] = (
                centre + book.offsets[k] + gain[:, None] * ((vals * book.scale[g]) @ book.axes[g].T)
            )
    return out


@pytest.mark.parametrize("shape", [(20, 40), (24, 32), (5, 16)])
def test_decode_against_reference(shape):
    k, d = shape
    x = _docs(60, k, d)
    book = TieredCodebook(d, k)
    book.train(x)
    codes, gains, centres = book.encode(x)
    assert codes.shape == (60, book.row_bytes()) and gains.dtype == np.float16
    got = book.decode(codes, gains, centres)
    np.testing.assert_allclose(got, _reference_decode(book, x), rtol=0, atol=2e-5)
    # coding is lossy but close, and the first tier (most bits) is the most precise
    err = ((got - x) ** 2).sum(-1)
    assert err.mean() < 0.25 * (x**2).sum(-1).mean()
    if k > 16:
        assert err[:, :8].mean() < err[:, 16:].mean()
    # the first r vectors decode from the same rows
    np.testing.assert_array_equal(book.decode(codes, gains[:, :3], centres), got[:, :3])


def test_long_residuals_are_not_clipped():
    """Gain-shape: a document whose vectors lie far from the others' is coded as well, in
    relative terms, as a typical one (a residual quantiser fitted to typical residuals would
    clip it towards the slot offsets)."""
    x = _docs(200, 16, 32, spread=0.3)
    rng = np.random.default_rng(1)
    far = rng.standard_normal((1, 16, 32)).astype(np.float32)  # no shared direction
    x = np.concatenate([x, far / np.linalg.norm(far, axis=-1, keepdims=True)])
    book = TieredCodebook(32, 16)
    book.train(x)
    dec = book.decode(*book.encode(x))
    rel = ((dec - x) ** 2).sum(-1) / ((x - x.mean(1, keepdims=True)) ** 2).sum(-1)
    assert rel[-1].mean() < 3 * np.median(rel[:-1])


def _skewed_docs(n: int, k: int, d: int, seed: int = 0) -> np.ndarray:
    """:func:`_docs` whose spread decays over the dimensions, so the first principal axes get
    6-8 bits and the last ones 0-2 (every decoding variant of the kernel)."""
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(d) / 2.0)
    x = rng.standard_normal((n, 1, d)) + 4.0 * decay * rng.standard_normal((n, k, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def kernel_case():
    """Three tiers of 8, 8 and 24 slots (the last: one full 16-lane step and one half-empty
    one), coded axes not a multiple of 16, axes of every bit width 1-8."""
    k, d = 40, 40
    x = _skewed_docs(300, k, d)
    book = TieredCodebook(d, k)
    book.train(x)
    assert {1, 6, 7, 8} <= set(book.bits[0].tolist())  # permute, 2 permutes, gather
    codes, gains, centres = book.encode(x)
    return book, codes, gains, centres, book.decode(codes, gains, centres)


@needs_kernel
@pytest.mark.parametrize("isa", ["generic", "avx512"])
@pytest.mark.parametrize(
    "budget", [(1, 1), (1, 9), (1, 40), (3, 9), (4, 20), (2, 24), (16, 40), (18, 33), (20, 7)]
)
@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_against_reference(monkeypatch, kernel_case, isa, budget, threads):
    """Every lane arrangement: two candidates side by side (tiers of <= 8 used slots, also
    across a query boundary: 29 candidates a query), one candidate's 16 or fewer slots, more
    than 16 query vectors (two blocks)."""
    from metaembed_rag.scoring import _tiered

    if isa == "avx512" and _tiered.best_isa() < 2:
        pytest.skip("no AVX-512 on this CPU")
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    book, codes, gains, centres, dec = kernel_case
    d = book.dim
    q = torch.from_numpy(_skewed_docs(3, 20, d, seed=5))
    ids = np.random.default_rng(2).integers(0, codes.shape[0], (3, 29))
    r_q, r_c = budget
    got = maxsim_tiered_ids(
        q, codes, gains, centres.astype(np.float16), book.tables(), ids, r_q, r_c,
        backend="kernel", threads=threads,
    )  # fmt: skip
    ref = maxsim_pairwise(q, torch.from_numpy(dec[ids]), (r_q, r_c), backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch_got = maxsim_tiered_ids(
        q, codes, gains, centres.astype(np.float16), book.tables(), ids, r_q, r_c,
        backend="torch",
    )  # fmt: skip
    torch.testing.assert_close(torch_got, ref, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_kernel_on_memmaps_and_bad_input(tmp_path):
    x = _docs(30, 8, 32)
    book = TieredCodebook(32, 8)
    book.train(x)
    codes, gains, centres = book.encode(x)
    path = tmp_path / "codes.bin"
    codes.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=codes.shape)
    q = torch.from_numpy(_docs(2, 4, 32, seed=1))
    ids = np.array([[0, 29, 3], [1, 1, 2]])
    cen16 = centres.astype(np.float16)
    a = maxsim_tiered_ids(q, mapped, gains, cen16, book.tables(), ids, 4, 8, backend="kernel")
    b = maxsim_tiered_ids(q, codes, gains, cen16, book.tables(), ids, 4, 8, backend="kernel")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(IndexError, match="out of range"):
        maxsim_tiered_ids(q, codes, gains, cen16, book.tables(), np.array([[0], [30]]), 1, 1)
    with pytest.raises(ValueError, match="budget"):
        maxsim_tiered_ids(q, codes, gains, cen16, book.tables(), ids, 4, 9)
    with pytest.raises(ValueError, match="do not fit"):
        maxsim_tiered_ids(q, codes[:, :-4], gains, cen16, book.tables(), ids, 1, 1)


def test_small_first_batch_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.tiered"):
        TieredCodebook(16, 4).train(_docs(1000, 4, 16))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.tiered"):
        TieredCodebook(16, 4).train(_docs(7, 4, 16))
    assert "trained on 7 document(s)" in caplog.text and "bfloat16" in caplog.text


def test_codebook_kept_on_add_and_drift_warning(caplog):
    index = MultiVectorIndex(32, num_vectors=8, budgets=[(1, 1), (4, 8)], storage="tiered")
    index.add([f"d{i}" for i in range(40)], _docs(40, 8, 32))
    book = index.codec.tiered
    assert book is not None and book.trained
    assert "trained on 40 document(s)" in caplog.text  # a small first batch
    caplog.clear()
    axes = book.axes.copy()
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.tiered"):
        index.add(["e0", "e1"], _docs(2, 8, 32, seed=4))
    assert not caplog.records
    np.testing.assert_array_equal(book.axes, axes)  # kept: stored rows never change
    other = np.random.default_rng(3).standard_normal((5, 8, 32)).astype(np.float32) * 3
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.index.tiered"):
        index.add([f"f{i}" for i in range(5)], other)
    assert "Rebuild the index" in caplog.text


@pytest.mark.parametrize("coarse_vector", ["first", "mean"])
def test_coarse_vectors_from_the_stored_rows(coarse_vector, tmp_path):
    """The tiered kind keeps each document's centre in the coarse store and derives its
    coarse vector from it (mean) or from its first decoded vector (first), so FAISS holds
    what a reload rebuilds."""
    x = _docs(40, 8, 32)
    index = MultiVectorIndex(
        32, num_vectors=8, budgets=[(1, 1), (4, 8)], storage="tiered",
        coarse_vector=coarse_vector, path=tmp_path / "ix",
    )  # fmt: skip
    index.add([f"d{i}" for i in range(40)], x)
    rows = index.backend.rows
    centres = x.mean(1).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(rows.coarse.array), centres)
    coarse = rows.coarse_rows(np.arange(40))
    if coarse_vector == "mean":
        c = centres.astype(np.float32)
        np.testing.assert_allclose(coarse, c / np.linalg.norm(c, axis=1, keepdims=True), atol=1e-6)
    else:
        np.testing.assert_array_equal(coarse, rows.decode(np.arange(40), 1)[:, 0].numpy())
    q = torch.from_numpy(_docs(3, 4, 32, seed=9))
    before = index.search_rows(q, k=5, fetch_k=10)
    index.save()
    loaded = MultiVectorIndex.load(tmp_path / "ix")
    after = loaded.search_rows(q, k=5, fetch_k=10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    loaded.close()
    index.close()


def test_damaged_codebook_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    index = MultiVectorIndex(32, num_vectors=8, budgets=[(1, 1)], storage="tiered")
    index.add([f"d{i}" for i in range(20)], _docs(20, 8, 32))
    blob = index.codec.tiered.to_bytes()
    path = tmp_path / "book.safetensors"
    path.write_bytes(blob)
    book = TieredCodebook(32, 8)
    book.load(path)
    np.testing.assert_array_equal(book.axes, index.codec.tiered.axes)
    assert book.train_mse == index.codec.tiered.train_mse
    with pytest.raises(IndexCorruptedError, match="'offsets' has shape"):
        TieredCodebook(16, 8).load(path)
    t = load_file(str(path))
    t["bits"] = np.full_like(t["bits"], 8)  # more bits than the tier holds
    save_file(t, str(path), metadata={"layout": str(LAYOUT)})
    with pytest.raises(IndexCorruptedError, match="bit allocation"):
        TieredCodebook(32, 8).load(path)
    # a codebook of the first row layout (each slot's bytes together, no layout mark)
    save_file(load_file(str(path)), str(path))
    with pytest.raises(IndexMismatchError, match="layout 1; .* reads layout 2.*Rebuild"):
        TieredCodebook(32, 8).load(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(IndexCorruptedError, match="unreadable"):
        TieredCodebook(32, 8).load(path)


def test_bad_shapes():
    book = TieredCodebook(32, 8)
    with pytest.raises(RuntimeError, match="not trained"):
        book.encode(_docs(2, 8, 32))
    with pytest.raises(ValueError, match=r"\(n, 8, 32\)"):
        book.train(_docs(2, 4, 32))
    from metaembed_rag.index.storage import VectorCodec

    with pytest.raises(ValueError, match="needs the vector width"):
        VectorCodec("tiered", 32)


def test_docstring_examples():
    import doctest

    from metaembed_rag.index import tiered

    result = doctest.testmod(tiered)
    assert result.attempted > 0 and result.failed == 0
