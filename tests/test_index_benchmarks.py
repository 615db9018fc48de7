"""Smoke tests: the index benchmark scripts run end to end on tiny inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_stage_latency_and_build_smoke(tmp_path, capsys):
    mod = _load("two_stage")
    out = tmp_path / "r.json"
    mod.main(["--parts", "latency", "build", "--n", "3000", "--dims", "32", "--queries", "3",
              "--exhaustive-queries", "2", "--build-n", "1000", "--build-dims", "32",
              "--workdir", str(tmp_path), "--json", str(out)])  # fmt: skip
    res = json.loads(out.read_text())
    assert res["latency"][0]["n"] == 3000 and res["latency"][0]["speedup_median"] > 0
    assert [r["dtype"] for r in res["build"]] == ["bfloat16", "float16", "float32", "int8"]
    assert "two-stage median" in capsys.readouterr().out


@pytest.mark.parametrize("coarse", ["flat", "ivf"])
def test_scale_smoke(tmp_path, coarse):
    mod = _load("scale")
    out = tmp_path / "s.json"
    mod.main(["--n", "12000", "--dim", "32", "--chunk", "4096", "--coarse", coarse,
              "--queries", "5", "--dir", str(tmp_path / "idx"), "--json", str(out), "--verify"])  # fmt: skip
    res = json.loads(out.read_text())
    assert res["disk_files"][next(k for k in res["disk_files"] if k.startswith("vectors"))] == (
        12000 * 64 * 32 * 2
    )
    assert res["latency_ms"]["p50"] > 0
    assert not (tmp_path / "idx").exists()


def test_compression_bytes_latency_kernel_smoke(tmp_path, capsys):
    mod = _load("compression")
    out = tmp_path / "c.json"
    mod.main(["--parts", "bytes", "kernel", "latency", "--kinds", "bfloat16", "residual2",
              "--bytes-n", "300", "--stored-vectors", "16", "--bytes-coarse", "flat", "ivf",
              "--kernel-n", "400", "--n", "2000",
              "--queries", "3", "--exhaustive-queries", "2", "--coarse", "hnsw", "--threads", "1",
              "--workdir", str(tmp_path), "--json", str(out)])  # fmt: skip
    res = json.loads(out.read_text())
    assert {(r["storage"], r["stored_vectors"]) for r in res["bytes"]} >= {
        ("bfloat16", 64),
        ("residual2", 16),
    }
    coarse = {(r["storage"], r["coarse"]): r["coarse_bytes_per_chunk"] for r in res["bytes"]}
    assert coarse[("bfloat16", "flat")] == 2 * 384  # the float16 row; no FAISS file
    assert 2 * 768 <= coarse[("bfloat16", "ivf")] < 2 * 768 + 200  # + FAISS's float16 codes
    assert [r["storage"] for r in res["kernel"]] == ["bfloat16", "residual2"]
    assert [(r["storage"], r["coarse"]) for r in res["latency"]] == [
        ("bfloat16", "hnsw"),
        ("residual2", "hnsw"),
    ]
    assert all(0.0 <= r["overlap@10"] <= 1.0 and r["two_stage_p50_ms"] > 0 for r in res["latency"])
    assert "| N | storage | coarse |" in capsys.readouterr().out


def test_compression_latency_rebuild_coarse_ivf(tmp_path):
    """--rebuild-coarse builds IVF once over the whole collection; with nprobe covering every
    list (2,000 vectors: 51 lists) it returns what the flat coarse stage returns."""
    mod = _load("compression")
    common = ["--parts", "latency", "--kinds", "bfloat16", "--n", "2000", "--queries", "4",
              "--exhaustive-queries", "4", "--threads", "1", "--workdir", str(tmp_path)]  # fmt: skip
    mod.main([*common, "--coarse", "flat", "--json", str(tmp_path / "flat.json")])
    mod.main([*common, "--coarse", "ivf", "--rebuild-coarse", "--nprobe", "64",
              "--json", str(tmp_path / "ivf.json")])  # fmt: skip
    flat = json.loads((tmp_path / "flat.json").read_text())["latency"][0]
    ivf = json.loads((tmp_path / "ivf.json").read_text())["latency"][0]
    assert (flat["coarse"], ivf["coarse"]) == ("flat", "ivf")
    assert ivf["overlap@10"] == flat["overlap@10"]


def test_compression_latency_with_index_time_truncation(tmp_path, capsys):
    """--latency-stored-vectors 16 searches at the largest budget the truncated index allows."""
    mod = _load("compression")
    mod.main(["--parts", "latency", "--kinds", "bfloat16", "--n", "1000", "--queries", "2",
              "--exhaustive-queries", "2", "--threads", "1", "--latency-stored-vectors", "16",
              "--workdir", str(tmp_path), "--json", str(tmp_path / "t.json")])  # fmt: skip
    row = json.loads((tmp_path / "t.json").read_text())["latency"][0]
    assert (row["stored_vectors"], row["budget"]) == (16, "8,16")
    assert "| bfloat16 (16 stored, 8,16) |" in capsys.readouterr().out


def test_compression_peers_smoke(tmp_path, capsys):
    """--parts peers: this project's index and PyLate's Voyager approach on the same vectors;
    on 300 seeded chunks (k_token 100) both find the exact top 10."""
    pytest.importorskip("voyager", reason="the peers part needs voyager (the dev extra has it)")
    mod = _load("compression")
    out = tmp_path / "p.json"
    mod.main(["--parts", "peers", "--kinds", "bfloat16", "--peers-n", "300", "--queries", "3",
              "--threads", "1", "--workdir", str(tmp_path), "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["peers"]
    assert [r["side"] for r in rows] == ["metaembed-rag bfloat16", "PyLate Voyager (k_token 100)"]
    assert all(r["recall@10"] == 1.0 and r["bytes_per_chunk"] > 0 for r in rows)
    assert "| PyLate Voyager (k_token 100) |" in capsys.readouterr().out


_FAKE_FAST_PLAID = '''
import os

import torch


class FastPlaid:
    """Stands in for fast-plaid's class: exact MaxSim, one file in the index folder."""

    def __init__(self, index, device=None):
        self.index = index
        os.makedirs(index, exist_ok=True)  # as fast-plaid does

    def create(self, documents_embeddings, nbits=4):
        self.docs = torch.stack(list(documents_embeddings))
        with open(f"{self.index}/codes.bin", "wb") as f:
            f.write(b"x" * nbits * len(self.docs))

    def search(self, queries_embeddings, top_k=10, n_ivf_probe=8, n_full_scores=4096,
               show_progress=True):
        s = torch.einsum("qid,njd->qnij", queries_embeddings, self.docs).amax(-1).sum(-1)
        top = torch.topk(s, top_k, dim=1)
        return [[(int(i), float(v)) for v, i in zip(tv, ti)] for tv, ti in zip(*top)]
'''


def test_compression_peers_plaid_runs_in_its_own_interpreter(tmp_path, monkeypatch):
    """--plaid-python: the vectors go to benchmarks/plaid_peer.py in another interpreter (here
    this one, with a stand-in ``fast_plaid`` on its path) and come back as one row per
    --plaid-nbits, scored against the same exhaustive top 10."""
    pytest.importorskip("voyager", reason="the peers part needs voyager (the dev extra has it)")
    pkg = tmp_path / "fake" / "fast_plaid" / "search"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(_FAKE_FAST_PLAID)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    mod = _load("compression")
    out = tmp_path / "p.json"
    mod.main(["--parts", "peers", "--kinds", "bfloat16", "--peers-n", "200", "--queries", "3",
              "--threads", "1", "--workdir", str(tmp_path), "--json", str(out),
              "--plaid-python", sys.executable, "--plaid-nbits", "2", "4"])  # fmt: skip
    rows = {r["side"]: r for r in json.loads(out.read_text())["peers"]}
    plaid = [rows[f"PyLate PLAID (fast-plaid, nbits {b})"] for b in (2, 4)]
    assert [r["recall@10"] for r in plaid] == [1.0, 1.0]
    assert [r["bytes_per_chunk"] for r in plaid] == [2.0, 4.0]  # the index folder's bytes / N
    assert all(r["queries"] == 3 for r in plaid)


def test_quantiser_study_transform_coder_spends_its_bits():
    """The study's transform coder: deterministic, and more bits per vector reconstruct
    anchored vectors (a chunk centre + a slot offset + a small residual) more closely; with
    8 bits on every axis it is close to exact."""
    import torch

    mod = _load("quantiser_study")
    gen = torch.Generator().manual_seed(0)
    n, k, d = 400, 8, 32
    centre = torch.randn(n, 1, d, generator=gen)
    offset = 0.5 * torch.randn(1, k, d, generator=gen)
    x = torch.nn.functional.normalize(
        centre + offset + 0.2 * torch.randn(n, k, d, generator=gen), dim=-1
    )
    errors = []
    for bits in (32, 64, 128, 8 * d):
        dec = mod.transform_code(x, [(0, k, bits)])
        assert torch.equal(dec, mod.transform_code(x, [(0, k, bits)]))
        errors.append(float((dec - x).pow(2).sum(-1).mean()))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-3 < errors[0]
    # slot groups: each group's error follows its own rate; unit=True gives unit vectors
    tiered = mod.transform_code(x, [(0, 2, 8 * d), (2, k, 32)], unit=True)
    err = (tiered - x).pow(2).sum(-1).mean(0)
    assert float(err[:2].max()) < 1e-2 < float(err[2:].min()), err
    torch.testing.assert_close(tiered.norm(dim=-1), torch.ones(n, k))
    # outlier shrinking: chunks with residuals far longer than the rest are no longer clipped
    wide = x.clone()
    wide[:8] = torch.nn.functional.normalize(
        centre[:8] + offset + 3.0 * torch.randn(8, k, d, generator=gen), dim=-1
    )
    plain = (mod.transform_code(wide, [(0, k, 8 * d)]) - wide)[:8].pow(2).sum(-1).mean()
    shrunk = mod.transform_code(wide, [(0, k, 8 * d)], outlier=0.9)
    assert float((shrunk - wide)[:8].pow(2).sum(-1).mean()) < 0.5 * float(plain)
