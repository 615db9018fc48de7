"""Tests for metaembed_rag.scoring: budgeted MaxSim against a plain-Python reference."""

from __future__ import annotations

import doctest
import logging
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metaembed_rag.scoring as scoring
from metaembed_rag.scoring import kernel_available, maxsim, maxsim_ids, maxsim_pairwise

# ------------------------------------------------------------------------------------------------
# Plain-Python reference (lists of floats, float64 arithmetic)


def ref_score(q: list[list[float]], c: list[list[float]], r_q: int, r_c: int) -> float:
    """sum_{i < r_q} max_{j < r_c} <q_i, c_j>, using min(r, len) vectors of each item."""
    total = 0.0
    for i in range(min(r_q, len(q))):
        best = None
        for j in range(min(r_c, len(c))):
            s = 0.0
            for a, b in zip(q[i], c[j], strict=True):
                s += a * b
            best = s if best is None or s > best else best
        total += best
    return total


def ref_bound(q: list[list[float]], c: list[list[float]], r_q: int, r_c: int) -> float:
    """Scale for tolerances: sum_i max_j sum_d |q_i[d] c_j[d]|."""
    qa = [[abs(x) for x in v] for v in q]
    ca = [[abs(x) for x in v] for v in c]
    return ref_score(qa, ca, r_q, r_c)


def as_lists(t: torch.Tensor) -> list:
    return t.to(torch.float64).tolist()


def ref_full(queries, documents, r_q, r_c):
    out = np.zeros((len(queries), len(documents)))
    bound = np.zeros_like(out)
    for a, q in enumerate(queries):
        for b, c in enumerate(documents):
            out[a, b] = ref_score(q, c, r_q, r_c)
            bound[a, b] = ref_bound(q, c, r_q, r_c)
    return out, bound


def assert_close(got: torch.Tensor, ref: np.ndarray, bound: np.ndarray, rtol: float = 1e-4):
    assert got.dtype == torch.float32
    assert tuple(got.shape) == ref.shape
    g = got.double().cpu().numpy()
    err = np.abs(g - ref)
    tol = rtol * (np.abs(ref) + bound + 1e-30)
    assert np.all(err <= tol), f"max err {err.max()} (tol {tol[err.argmax() // 1]})"


# ------------------------------------------------------------------------------------------------
# Backends under test


def _kernel_skip_reason() -> str | None:
    if not kernel_available():
        return f"compiled kernel unavailable: {scoring.kernel_info()['error']}"
    return None


BACKENDS = [
    "torch",
    pytest.param(
        "kernel",
        marks=pytest.mark.skipif(not kernel_available(), reason=str(_kernel_skip_reason())),
    ),
]


def _isa_param(name: str):
    reason = _kernel_skip_reason()
    if reason is None:
        code = scoring._kernel._ISA_CODES[name]
        if not scoring._kernel._ext.isa_supported(code & 15):
            reason = f"CPU does not support {name}"
        elif code & scoring._kernel._AMX_FLAG and not scoring._kernel._ext.amx_supported():
            reason = "CPU (or OS) does not support AMX-BF16"
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))


ISAS = [
    _isa_param(n)
    for n in ("generic", "avx2", "avx512", "avx512-noamx", "avx512-nodirect", "avx512-nopairs",
              "amx")
]  # fmt: skip


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@st.composite
def problems(draw, ragged_ok: bool = True):
    seed = draw(st.integers(0, 2**31 - 1))
    nq = draw(st.integers(1, 3))
    n = draw(st.integers(1, 19))
    kq = draw(st.integers(1, 18))
    kc = draw(st.integers(1, 20))
    dim = draw(st.sampled_from([1, 3, 16, 17, 32, 33, 64]))
    dtype = draw(st.sampled_from(DTYPES))
    r_q = draw(st.integers(1, kq))
    r_c = draw(st.integers(1, kc))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, kq, dim, generator=g)
    d = torch.randn(n, kc, dim, generator=g).to(dtype)
    return q, d, (r_q, r_c)


HSET = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------------------------------------
# Property tests against the reference


@HSET
@given(prob=problems(), chunk=st.sampled_from([None, 1, 4]))
def test_maxsim_matches_reference(backend, prob, chunk):
    q, d, (r_q, r_c) = prob
    got = maxsim(q, d, (r_q, r_c), chunk_size=chunk, backend=backend)
    ref, bound = ref_full([as_lists(x) for x in q], [as_lists(x) for x in d], r_q, r_c)
    assert_close(got, ref, bound)


@pytest.mark.parametrize("isa", ISAS)
@HSET
@given(prob=problems())
def test_kernel_every_isa_matches_reference(monkeypatch, isa, prob):
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    q, d, (r_q, r_c) = prob
    ref, bound = ref_full([as_lists(x) for x in q], [as_lists(x) for x in d], r_q, r_c)
    assert_close(maxsim(q, d, (r_q, r_c), backend="kernel"), ref, bound)
    ids = torch.arange(d.shape[0]).flip(0).repeat(q.shape[0], 1)
    assert_close(maxsim_ids(q, d, ids, (r_q, r_c), backend="kernel"), ref[:, ::-1], bound[:, ::-1])


@pytest.mark.parametrize("isa", [_isa_param("avx512")])
@pytest.mark.parametrize("dim", [1, 2, 17, 31, 32, 33, 48, 65, 130])
def test_bf16_pair_staging_matches_reference(monkeypatch, isa, dim):
    # AVX-512, r_q <= 8, bfloat16: rows staged with 16-bit unpacks in 32-dim blocks (dims
    # permuted, the tail zero-padded); odd D, D not a multiple of 32, gapped prefixes, id gather
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    g = torch.Generator().manual_seed(dim)
    q = torch.randn(3, 9, dim, generator=g)
    d = torch.randn(13, 21, dim, generator=g).to(torch.bfloat16)
    qa, da = [as_lists(x) for x in q], [as_lists(x) for x in d]
    for r_q, r_c in [(2, 1), (2, 4), (5, 7), (8, 16), (8, 21), (3, 20)]:
        ref, bound = ref_full(qa, da, r_q, r_c)
        assert_close(maxsim(q, d, (r_q, r_c), backend="kernel"), ref, bound)
        ids = torch.tensor([[12, 0, 5, 5]] * 3)
        assert_close(
            maxsim_ids(q, d, ids, (r_q, r_c), backend="kernel"),
            ref[:, [12, 0, 5, 5]],
            bound[:, [12, 0, 5, 5]],
        )
    ragged = [d[i, : 1 + i % 5] for i in range(6)]
    ref, bound = ref_full(qa, [as_lists(x) for x in ragged], 6, 5)
    assert_close(maxsim(q, ragged, (6, 5), backend="kernel"), ref, bound)


def _direct_path_available() -> bool:
    return kernel_available() and scoring._kernel._ext.isa_supported(2)


@pytest.mark.skipif(not _direct_path_available(), reason="needs the AVX-512 kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [32, 64, 96, 128, 384])
def test_direct_path_matches_reference(monkeypatch, dtype, dim):
    # AVX-512 direct path (rows read in place, D a multiple of 32): every lane layout
    # (r_q 2 | 3-4 | 5-8 | 9-16 | >16 in blocks), r_c remainders (groups of 8, 4, 2, 1), id
    # gather, pairwise, and strided vectors (a D-wide slice of wider rows). bfloat16 uses
    # vdpbf16ps with a hi + lo query split where the CPU has AVX512_BF16.
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", "avx512-direct")
    g = torch.Generator().manual_seed(dim)
    q = torch.randn(2, 20, dim, generator=g)
    wide = torch.randn(11, 23, dim + 32, generator=g).to(dtype)
    for d in (wide[..., :dim].contiguous(), wide[..., :dim]):
        qa, da = [as_lists(x) for x in q], [as_lists(x) for x in d]
        for r_q, r_c in [(2, 1), (2, 23), (3, 5), (4, 8), (6, 15), (8, 16), (9, 7), (16, 23),
                         (17, 22), (20, 3)]:  # fmt: skip
            ref, bound = ref_full(qa, da, r_q, r_c)
            assert_close(maxsim(q, d, (r_q, r_c), backend="kernel"), ref, bound, rtol=1e-5)
            ids = torch.tensor([[10, 0, 5, 5], [3, 3, 1, 9]])
            assert_close(
                maxsim_ids(q, d, ids, (r_q, r_c), backend="kernel"),
                np.take_along_axis(ref, ids.numpy(), axis=1),
                np.take_along_axis(bound, ids.numpy(), axis=1),
                rtol=1e-5,
            )
        pair = d[torch.tensor([[1, 2, 3], [4, 5, 6]])]
        ref = np.array([ref_full([qa[i]], [as_lists(x) for x in pair[i]], 16, 23)[0][0]
                        for i in range(2)])  # fmt: skip
        bound = np.array([ref_full([qa[i]], [as_lists(x) for x in pair[i]], 16, 23)[1][0]
                          for i in range(2)])  # fmt: skip
        assert_close(maxsim_pairwise(q, pair, (16, 23), backend="kernel"), ref, bound, rtol=1e-5)


def _ref64(q: torch.Tensor, d: torch.Tensor, r_q: int, r_c: int) -> tuple[np.ndarray, ...]:
    """float64 reference (nq, Kq, D) x (N, Kc, D) -> (nq, N) scores and sum_i max_j |q_i||c_j|
    bounds, for the sizes the triple loop is too slow for."""
    qa = q[:, :r_q].double().numpy()
    da = d[:, :r_c].double().numpy()
    sim = np.einsum("aid,bjd->abij", qa, da)
    bound = np.einsum("aid,bjd->abij", np.abs(qa), np.abs(da))
    return sim.max(axis=3).sum(axis=2), bound.max(axis=3).sum(axis=2)


@pytest.mark.parametrize("isa", [_isa_param("amx")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [32, 64, 128, 384])
def test_amx_path_matches_reference(monkeypatch, isa, dtype, dim):
    # AMX path (16-bit storage, D a multiple of 32): candidate blocks of 16 vectors (r_c < 16:
    # one block of r_c rows; r_c % 16 != 0: an overlapping last block), groups of up to four
    # blocks (several candidates per group when r_c <= 32, several groups when r_c > 64), query
    # blocks of 16, float16 staged as exact bf16 hi + lo; full, id and pairwise forms, strided
    # vectors (a D-wide slice of wider rows). Tolerance 1e-5 of sum |q c|, as the direct path.
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", isa)
    g = torch.Generator().manual_seed(dim)
    q = torch.randn(3, 20, dim, generator=g)
    wide = torch.randn(9, 72, dim + 32, generator=g).to(dtype)
    for d in (wide[..., :dim].contiguous(), wide[..., :dim]):
        for r_q, r_c in [(2, 1), (2, 4), (3, 5), (8, 16), (16, 64), (17, 33), (20, 72), (16, 15),
                         (5, 17), (4, 48), (16, 65)]:  # fmt: skip
            ref, bound = _ref64(q, d, r_q, r_c)
            assert_close(maxsim(q, d, (r_q, r_c), backend="kernel"), ref, bound, rtol=1e-5)
            assert scoring._kernel._ext.last_path() == "amx"
            ids = torch.tensor([[8, 0, 5, 5, 2], [3, 3, 1, 7, 6], [0, 1, 2, 3, 4]])
            assert_close(
                maxsim_ids(q, d, ids, (r_q, r_c), backend="kernel"),
                np.take_along_axis(ref, ids.numpy(), axis=1),
                np.take_along_axis(bound, ids.numpy(), axis=1),
                rtol=1e-5,
            )
        sel = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 0]])
        pair = d[sel]
        ref, bound = _ref64(q, d, 16, 64)
        assert_close(
            maxsim_pairwise(q, pair, (16, 64), backend="kernel"),
            np.take_along_axis(ref, sel.numpy(), axis=1),
            np.take_along_axis(bound, sel.numpy(), axis=1),
            rtol=1e-5,
        )
    # float16 extremes: subnormals, the largest finite value, values that round up across a
    # binade in the hi / lo split
    if dtype == torch.float16:
        special = torch.tensor([6e-8, 6.1e-5, 65504.0, 1.0 + 2**-8 + 2**-10, -0.0, 2.0 - 2**-10])
        d = special[torch.randint(0, 6, (4, 16, dim), generator=g)].to(dtype)
        qs = torch.randn(2, 4, dim, generator=g) * 1e-3
        ref, bound = _ref64(qs, d, 4, 16)
        assert_close(maxsim(qs, d, (4, 16), backend="kernel"), ref, bound, rtol=1e-5)


@pytest.mark.parametrize("isa", [_isa_param("avx512")])
def test_amx_dispatch(monkeypatch, isa):
    """Which path runs: AMX only for 16-bit storage with D a multiple of 32 and r_q >= 2, and
    never under avx512-noamx."""
    if not scoring._kernel._ext.amx_supported():
        pytest.skip("CPU (or OS) does not support AMX-BF16")
    q = torch.randn(1, 16, 64)
    d = torch.randn(5, 64, 64)
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", "amx")
    for dtype, dim, budget, amx in [(torch.bfloat16, 64, (16, 64), True),
                                    (torch.float16, 64, (8, 16), True),
                                    (torch.float32, 64, (16, 64), False),
                                    (torch.bfloat16, 48, (16, 64), False),
                                    (torch.bfloat16, 64, (1, 1), False)]:  # fmt: skip
        maxsim(q[..., :dim], d[..., :dim].to(dtype), budget, backend="kernel")
        assert (scoring._kernel._ext.last_path() == "amx") == amx, (dtype, dim, budget)
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", "avx512-noamx")
    maxsim(q, d.bfloat16(), (16, 64), backend="kernel")
    assert scoring._kernel._ext.last_path() != "amx"


def test_amx_isa_refused_without_amx(monkeypatch):
    if not kernel_available() or scoring._kernel._ext.amx_supported():
        pytest.skip("needs the compiled kernel on a CPU without AMX")
    monkeypatch.setenv("METAEMBED_RAG_MAXSIM_ISA", "amx")
    with pytest.raises(RuntimeError, match="not supported by this CPU"):
        maxsim(torch.randn(1, 2, 32), torch.randn(3, 4, 32).bfloat16(), (2, 4), backend="kernel")


@HSET
@given(prob=problems(), m=st.integers(1, 5))
def test_pairwise_matches_reference(backend, prob, m):
    q, d, (r_q, r_c) = prob
    n = q.shape[0]
    docs = d[torch.arange(n * m) % d.shape[0]]
    docs4 = docs.reshape(n, m, *d.shape[1:])
    got = maxsim_pairwise(q, docs4, (r_q, r_c), backend=backend, chunk_size=2)
    ref = np.zeros((n, m))
    bound = np.zeros((n, m))
    for i in range(n):
        r, b = ref_full([as_lists(q[i])], [as_lists(x) for x in docs4[i]], r_q, r_c)
        ref[i], bound[i] = r[0], b[0]
    assert_close(got, ref, bound)


@HSET
@given(prob=problems(), m=st.integers(1, 6), seed=st.integers(0, 1000))
def test_ids_matches_reference(backend, prob, m, seed):
    q, d, (r_q, r_c) = prob
    ids = torch.randint(
        0, d.shape[0], (q.shape[0], m), generator=torch.Generator().manual_seed(seed)
    )
    got = maxsim_ids(q, d, ids, (r_q, r_c), backend=backend, chunk_size=3)
    full, bound = ref_full([as_lists(x) for x in q], [as_lists(x) for x in d], r_q, r_c)
    rows = np.arange(q.shape[0])[:, None]
    assert_close(got, full[rows, ids.numpy()], bound[rows, ids.numpy()])


@HSET
@given(
    seed=st.integers(0, 2**31 - 1),
    q_lens=st.lists(st.integers(1, 18), min_size=1, max_size=3),
    d_lens=st.lists(st.integers(1, 20), min_size=1, max_size=7),
    dim=st.sampled_from([2, 16, 19]),
    dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
def test_ragged_lists_match_reference(backend, seed, q_lens, d_lens, dim, dtype, data):
    g = torch.Generator().manual_seed(seed)
    qs = [torch.randn(n, dim, generator=g) for n in q_lens]
    ds = [torch.randn(n, dim, generator=g).to(dtype) for n in d_lens]
    r_q = data.draw(st.integers(1, max(q_lens)))
    r_c = data.draw(st.integers(1, max(d_lens)))
    got = maxsim(qs, ds, (r_q, r_c), backend=backend)
    ref, bound = ref_full([as_lists(x) for x in qs], [as_lists(x) for x in ds], r_q, r_c)
    assert_close(got, ref, bound)
    # ragged queries with a dense index (ids form) and with budget=None
    dense = torch.randn(5, 4, dim, generator=g).to(dtype)
    ids = torch.tensor([[4, 0, 2]] * len(qs))
    got_ids = maxsim_ids(qs, dense, ids, (r_q, 4), backend=backend)
    ref_ids, bound_ids = ref_full([as_lists(x) for x in qs], [as_lists(dense[i]) for i in (4, 0, 2)],
                                  r_q, 4)  # fmt: skip
    assert_close(got_ids, ref_ids, bound_ids)
    got_all = maxsim(qs, ds, backend=backend)
    ref_all, bound_all = ref_full([as_lists(x) for x in qs], [as_lists(x) for x in ds], 99, 99)
    assert_close(got_all, ref_all, bound_all)


def test_query_chunking_boundaries(backend, monkeypatch):
    # force tiny chunks over queries and documents in the torch backend
    monkeypatch.setattr(scoring, "_CHUNK_BYTES", 4096)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 5, 17, generator=g)
    d = torch.randn(23, 9, 17, generator=g).to(torch.bfloat16)
    got = maxsim(q, d, (5, 9), backend=backend)
    ref, bound = ref_full([as_lists(x) for x in q], [as_lists(x) for x in d], 5, 9)
    assert_close(got, ref, bound)


# ------------------------------------------------------------------------------------------------
# (1, 1) is the plain dot product


def test_budget_1_1_is_exact_dot_product_torch():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(5, 16, 128, generator=g)
    d = torch.randn(300, 64, 128, generator=g)
    expected = q[:, 0] @ d[:, 0].T
    assert torch.equal(maxsim(q, d, (1, 1), backend="torch"), expected)
    assert torch.equal(maxsim(q, d, (1, 1)), expected)  # auto uses the same product
    ids = torch.tensor([[5, 299, 0]] * 5)
    torch.testing.assert_close(
        maxsim_ids(q, d, ids, (1, 1)), expected[:, [5, 299, 0]], rtol=1e-5, atol=1e-5
    )


@pytest.mark.skipif(not kernel_available(), reason=str(_kernel_skip_reason()))
def test_budget_1_1_kernel_matches_dot_product():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 16, 384, generator=g)
    d = torch.randn(100, 64, 384, generator=g)
    expected = (q[:, 0].double() @ d[:, 0].double().T).float()
    torch.testing.assert_close(
        maxsim(q, d, (1, 1), backend="kernel"), expected, rtol=1e-5, atol=1e-5
    )


def test_backends_agree_within_1e_5():
    if not kernel_available():
        pytest.skip(str(_kernel_skip_reason()))
    g = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(4, 16, 128, generator=g), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(257, 64, 128, generator=g), dim=-1)
    for dtype in DTYPES:
        dd = d.to(dtype)
        for budget in [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64), (3, 7)]:
            a = maxsim(q, dd, budget, backend="torch")
            b = maxsim(q, dd, budget, backend="kernel")
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class FakeBudget:
    r_q: int
    r_c: int


def test_budget_object_and_none():
    q = torch.randn(2, 4, 8)
    d = torch.randn(3, 6, 8)
    a = maxsim(q, d, FakeBudget(2, 3), backend="torch")
    torch.testing.assert_close(a, maxsim(q, d, (2, 3), backend="torch"))
    torch.testing.assert_close(
        maxsim(q, d, None, backend="torch"), maxsim(q, d, (4, 6), backend="torch")
    )


@pytest.mark.parametrize("budget", [(0, 1), (1, 0), (5, 1), (1, 7), (-1, 2)])
def test_budget_out_of_range(budget):
    q = torch.randn(2, 4, 8)
    d = torch.randn(3, 6, 8)
    with pytest.raises(ValueError, match=r"valid range is 1 <= r_[qc] <= [46]") as err:
        maxsim(q, d, budget)
    assert "(2, 4, 8)" in str(err.value) or "(3, 6, 8)" in str(err.value)
    with pytest.raises(ValueError, match="valid range"):
        maxsim_ids(q, d, torch.zeros(2, 1, dtype=torch.long), budget)
    with pytest.raises(ValueError, match="valid range"):
        maxsim_pairwise(q, d[:2, None], budget)


def test_ragged_budget_out_of_range():
    with pytest.raises(ValueError, match="ragged"):
        maxsim([torch.randn(2, 4)], [torch.randn(3, 4), torch.randn(1, 4)], (1, 4))


def test_dim_mismatch():
    with pytest.raises(ValueError, match="different embedding dims"):
        maxsim(torch.randn(2, 4, 8), torch.randn(3, 6, 9))
    with pytest.raises(ValueError, match="different embedding dims"):
        maxsim_ids(torch.randn(2, 4, 8), torch.randn(3, 6, 9), torch.zeros(2, 1, dtype=torch.long))


def test_bad_arguments():
    q, d = torch.randn(2, 4, 8), torch.randn(3, 6, 8)
    with pytest.raises(ValueError, match="backend"):
        maxsim(q, d, backend="fast")
    with pytest.raises(ValueError, match="3-D"):
        maxsim(q[0], d)
    with pytest.raises(ValueError, match="ids out of range"):
        maxsim_ids(q, d, torch.tensor([[0], [3]]))
    with pytest.raises(ValueError, match="ids must be"):
        maxsim_ids(q, d, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one candidate list per query"):
        maxsim_pairwise(q, torch.randn(3, 2, 6, 8))
    with pytest.raises(TypeError):
        maxsim(q, d, budget=(1.5, 2))


def test_empty_candidates(backend):
    q = torch.randn(2, 4, 8)
    out = maxsim(q, torch.randn(0, 6, 8), (2, 3), backend=backend)
    assert out.shape == (2, 0) and out.dtype == torch.float32
    out = maxsim_ids(q, torch.randn(3, 6, 8), torch.zeros(2, 0, dtype=torch.long), backend=backend)
    assert out.shape == (2, 0)


# ------------------------------------------------------------------------------------------------
# Layouts: non-contiguous views, numpy and memmaps


def test_non_contiguous_inputs(backend):
    g = torch.Generator().manual_seed(4)
    big = torch.randn(11, 10, 40, generator=g)
    d = big[::2, 1:8, 3:23]  # strided candidates, vectors and dims offset
    d_t = torch.randn(6, 20, 7, generator=g).transpose(1, 2)  # last dim not contiguous
    q = torch.randn(3, 6, 40, generator=g)[:, ::2, 3:23]
    for docs in (d, d_t):
        docs = docs[..., : q.shape[-1]] if docs.shape[-1] >= q.shape[-1] else docs
        qq = q[..., : docs.shape[-1]]
        got = maxsim(qq, docs, (2, 3), backend=backend)
        ref, bound = ref_full([as_lists(x) for x in qq], [as_lists(x) for x in docs], 2, 3)
        assert_close(got, ref, bound)
        ids = torch.tensor([[0, 2], [1, 1], [2, 0]]).T.contiguous().T  # non-contiguous ids
        got_ids = maxsim_ids(qq, docs, ids, (2, 3), backend=backend)
        rows = np.arange(3)[:, None]
        assert_close(got_ids, ref[rows, ids.numpy()], bound[rows, ids.numpy()])
        pair = docs[:3, None].expand(3, 2, *docs.shape[1:])
        got_pair = maxsim_pairwise(qq, pair, (2, 3), backend=backend)
        assert_close(got_pair, np.repeat(np.diag(ref[:, :3])[:, None], 2, 1),
                     np.repeat(np.diag(bound[:, :3])[:, None], 2, 1))  # fmt: skip


@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
def test_ids_on_numpy_memmap(backend, tmp_path, np_dtype):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((50, 8, 24)).astype(np_dtype)
    path = tmp_path / "index.bin"
    data.tofile(path)
    mm = np.memmap(path, dtype=np_dtype, mode="r", shape=(50, 8, 24))
    q = torch.from_numpy(rng.standard_normal((2, 4, 24)).astype(np.float32))
    ids = np.array([[49, 0, 7, 7], [3, 2, 1, 0]], dtype=np.int64)
    got = maxsim_ids(q, mm, ids, (3, 5), backend=backend)
    qs = [as_lists(x) for x in q]
    ref = np.array([[ref_score(qs[i], data[k].astype(np.float64).tolist(), 3, 5) for k in row]
                    for i, row in enumerate(ids)])  # fmt: skip
    bound = np.array([[ref_bound(qs[i], data[k].astype(np.float64).tolist(), 3, 5) for k in row]
                      for i, row in enumerate(ids)])  # fmt: skip
    assert_close(got, ref, bound)


def test_ids_on_bf16_memmapped_tensor(backend, tmp_path):
    g = torch.Generator().manual_seed(6)
    d = torch.randn(30, 6, 20, generator=g).to(torch.bfloat16)
    path = tmp_path / "index.bf16"
    d.view(torch.int16).numpy().tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r+", shape=(30, 6, 20))
    index = torch.from_numpy(mm).view(torch.bfloat16)
    q = torch.randn(2, 3, 20, generator=g)
    ids = torch.tensor([[29, 1], [5, 5]])
    got = maxsim_ids(q, index, ids, (3, 6), backend=backend)
    full, bound = ref_full([as_lists(x) for x in q], [as_lists(x) for x in d], 3, 6)
    rows = np.arange(2)[:, None]
    assert_close(got, full[rows, ids.numpy()], bound[rows, ids.numpy()])


def test_numpy_inputs_full_form(backend):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 3, 9)).astype(np.float32)
    d = rng.standard_normal((4, 5, 9)).astype(np.float16)
    got = maxsim(q, d, (2, 4), backend=backend)
    ref, bound = ref_full(q.astype(np.float64).tolist(), d.astype(np.float64).tolist(), 2, 4)
    assert_close(got, ref, bound)


# ------------------------------------------------------------------------------------------------
# Backend selection, logging, devices


def test_kernel_unavailable_logs_once_and_raises(monkeypatch, caplog):
    monkeypatch.setattr(scoring._kernel, "_ext", None)
    monkeypatch.setattr(scoring._kernel, "_EXT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(scoring._kernel, "_warned_unavailable", False)
    q, d = torch.randn(2, 4, 8), torch.randn(3, 6, 8)
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.scoring"):
        a = maxsim(q, d, (2, 3))
        maxsim(q, d, (2, 3))
    warnings = [r for r in caplog.records if "kernel not available" in r.getMessage()]
    assert len(warnings) == 1
    torch.testing.assert_close(a, maxsim(q, d, (2, 3), backend="torch"))
    assert not scoring.kernel_available()
    with pytest.raises(RuntimeError, match="pip install -e"):
        maxsim(q, d, (2, 3), backend="kernel")


def test_kernel_info():
    info = scoring.kernel_info()
    assert info["available"] == kernel_available()
    if kernel_available():
        assert info["isa"] in ("avx512", "avx2", "generic")
        assert info["amx"] == scoring._kernel._ext.amx_supported()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_torch_path_matches_cpu_kernel():
    g = torch.Generator().manual_seed(8)
    q = torch.randn(3, 16, 64, generator=g)
    d = torch.randn(40, 64, 64, generator=g).to(torch.bfloat16)
    cpu = maxsim(q, d, (8, 16))  # kernel when available, torch otherwise
    gpu = maxsim(q.cuda(), d.cuda(), (8, 16))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-4)
    with pytest.raises(RuntimeError, match="CPU only"):
        maxsim(q.cuda(), d.cuda(), (8, 16), backend="kernel")


@pytest.mark.parametrize("module", ["", ".residual", ".int8", ".tiered", ".repeats"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module("metaembed_rag.scoring" + module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
