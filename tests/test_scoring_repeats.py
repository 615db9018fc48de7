"""Repeated query vectors (metaembed_rag.scoring.repeats): every scorer computes the (1, r_c)
score once and multiplies it by r_q when each query's first r_q vectors are equal. Checked
against a float64 reference of the full formula (sum over all r_q vectors), that the fast path
is really taken, and that it is not taken where it would be wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaembed_rag.scoring as scoring
from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.scoring import kernel_available, maxsim, maxsim_ids, maxsim_pairwise
from metaembed_rag.scoring.repeats import collapse_repeated

D, K = 24, 8
BACKENDS = ["torch", pytest.param("kernel", marks=pytest.mark.skipif(
    not kernel_available(), reason="compiled MaxSim kernel not built"))]  # fmt: skip


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def _repeated(nq: int, kq: int, seed: int) -> torch.Tensor:
    """(nq, kq, D): each query's one vector, kq times (the anchored default's query side)."""
    return _unit(nq, 1, D, seed=seed).expand(nq, kq, D).contiguous()


def _ref(q: torch.Tensor, d: torch.Tensor, r_q: int, r_c: int) -> np.ndarray:
    """float64 sum over the first r_q query vectors of the max over the first r_c ones."""
    qd, dd = q[:, :r_q].double(), d[:, :r_c].double()
    return torch.einsum("qad,nbd->qnab", qd, dd).amax(-1).sum(-1).numpy()


def test_collapse_rule():
    q = _repeated(3, 5, seed=0)
    q1, r_q, times = collapse_repeated(q, 4)
    assert (tuple(q1.shape), r_q, times) == ((3, 1, D), 1, 4)
    # only the budget's prefix has to repeat
    q[:, 4] = _unit(3, D, seed=1)
    assert collapse_repeated(q, 4)[1:] == (1, 4)
    assert collapse_repeated(q, 5)[1:] == (5, 1)
    # one query of the batch that differs keeps the whole batch on the full path
    q = _repeated(3, 5, seed=0)
    q[1, 2] += 1e-7
    assert collapse_repeated(q, 5)[1:] == (5, 1)
    assert collapse_repeated(_repeated(2, 5, seed=0), 1)[1:] == (1, 1)
    # queries needing gradients (distinct parameters that happen to be equal) never collapse
    assert collapse_repeated(_repeated(2, 5, seed=0).requires_grad_(), 5)[1:] == (5, 1)
    assert collapse_repeated(torch.zeros(0, 5, D), 5)[1:] == (5, 1)


@pytest.fixture
def kernel_calls(monkeypatch):
    """The r_q of every call into the compiled MaxSim kernel."""
    seen: list[int] = []
    real = scoring._kernel_call

    def spy(q, r_q, *args, **kwargs):
        seen.append(r_q)
        return real(q, r_q, *args, **kwargs)

    monkeypatch.setattr(scoring, "_kernel_call", spy)
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("budget", [(16, 64), (4, 8), (16, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_repeated_queries_match_reference(backend, budget, dtype, kernel_calls):
    q = _repeated(3, 16, seed=2)
    d = _unit(40, 64, D, seed=3).to(dtype)
    r_q, r_c = budget
    ref = _ref(q, d.float(), r_q, r_c)
    got = maxsim(q, d, budget, backend=backend)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([[5, 0, 39], [1, 1, 2], [7, 8, 9]])
    got = maxsim_ids(q, d, ids, budget, backend=backend)
    np.testing.assert_allclose(got.numpy(), np.take_along_axis(ref, ids.numpy(), 1), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    cand = d[ids]  # (3, 3, 64, D): each query's own candidates
    got = maxsim_pairwise(q, cand, budget, backend=backend)
    np.testing.assert_allclose(got.numpy(), np.take_along_axis(ref, ids.numpy(), 1), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    if backend == "kernel":
        assert kernel_calls == [1, 1, 1]  # one query vector scored, not r_q


@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_or_ragged_queries_take_the_full_path(backend, kernel_calls):
    d = _unit(30, 16, D, seed=4)
    q = _repeated(2, 8, seed=5)
    q[1, 3] = _unit(D, seed=6)  # one query with a vector of its own
    np.testing.assert_allclose(
        maxsim(q, d, (8, 16), backend=backend).numpy(), _ref(q, d, 8, 16), rtol=1e-5, atol=1e-5
    )
    # ragged queries are padded with zero vectors (which add 0): no repeat, same scores
    ragged = [_repeated(1, 8, seed=7)[0], _repeated(1, 3, seed=8)[0]]
    got = maxsim(ragged, d, (8, 16), backend=backend)
    ref = [_ref(r[None], d, len(r), 16)[0] for r in ragged]
    np.testing.assert_allclose(got.numpy(), np.stack(ref), rtol=1e-5, atol=1e-5)
    if backend == "kernel":
        assert kernel_calls == [8, 8]


def test_gradients_reach_every_query_vector():
    q = _repeated(2, 4, seed=9).requires_grad_()
    d = _unit(5, 6, D, seed=10)
    maxsim(q, d, (4, 6), backend="torch").sum().backward()
    assert q.grad is not None
    assert bool((q.grad.abs().sum(-1) > 0).all())  # each of the 4 vectors got its own gradient


@pytest.mark.parametrize("kind", ["bfloat16", "int8", "residual2", "tiered"])
def test_index_exact_stage_on_every_storage(kind):
    """The index's exact stage (in place, int8, residual and tiered kernels): repeated queries
    score as the sum over all r_q vectors of the decoded rows."""
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((6, D)).astype(np.float32)
    x = topics[rng.integers(0, 6, (300, K))] + 0.4 * rng.standard_normal((300, K, D))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    index = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (4, 8)], storage=kind,
                             num_centroids=16)  # fmt: skip
    index.add([f"d{i}" for i in range(300)], x.astype(np.float32))
    decoded = torch.from_numpy(np.stack([index.get(f"d{i}")["vectors"].numpy()
                                         for i in range(300)]))  # fmt: skip
    q = _repeated(3, 4, seed=11)
    scores, rows = index.search_rows(q, k=10, mode="exhaustive", rerank_budget=(4, 8))
    ref = _ref(q, decoded, 4, 8)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, rows, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rows, np.argsort(-ref, axis=1, kind="stable")[:, :10])
