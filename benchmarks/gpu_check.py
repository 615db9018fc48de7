"""A short CUDA check (< 5 minutes): the encoder, the scorers, faiss-gpu and the MLLM reranker on
the GPU, each compared with the CPU on a few items and timed.

* encoder: the packaged default model (or ``--model``) on ``cuda`` encodes ``--docs`` documents
  and 64 queries; the first 4 documents are compared with a CPU encoding (max abs difference);
* scorers: MaxSim, pooled dot, bilinear (random low-rank part) and cross-attention (random block)
  on ``--n`` random unit documents (64 x 384) and 16 queries on the GPU, each checked against
  the same scorer on the CPU over the first 256 documents;
* faiss-gpu: the coarse stage of a ``MultiVectorIndex(use_gpu=True)`` against the CPU index
  (top-10 ids equal); reported as missing when faiss has no GPU support;
* MLLM reranker: a tiny random causal LM and a tiny random Idefics3 (``tests/tiny_models.py``,
  built from ``transformers`` configs: no download) score 16 candidates on the GPU, compared with
  the CPU (max abs difference of P("True")), with the time per candidate.

Usage::

    python benchmarks/gpu_check.py [--json gpu-check.json]

Without a CUDA device it prints why and exits with status 0 (nothing to check).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
#: Where the checks run (``--device cpu`` runs the same code on the CPU: a dry run of the script).
DEVICE = "cuda"


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, repeat: int = 3) -> tuple[Any, float]:
    """(result, best wall milliseconds over ``repeat`` runs, CUDA synchronised)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return out, best


def _tiny_models():
    spec = importlib.util.spec_from_file_location(
        "gpu_check_tiny_models", REPO / "tests" / "tiny_models.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def check_encoder(model_name: str | None, n_docs: int) -> dict[str, Any]:
    from metaembed_rag.hub import load_model

    gpu = load_model(model_name, DEVICE)
    cpu = load_model(model_name, "cpu")
    docs = [
        f"Document {i} about topic {i % 17}: retrieval with meta tokens and budgets."
        for i in range(n_docs)
    ]
    vecs, doc_ms = _timed(lambda: gpu.encode_documents(docs, batch_size=64), repeat=2)
    _, q_ms = _timed(lambda: gpu.encode_queries(docs[:64], batch_size=64), repeat=2)
    ref = cpu.encode_documents(docs[:4])
    diff = float((vecs[:4].float().cpu() - ref.float()).abs().max())
    return {"docs_per_s": n_docs / (doc_ms / 1000), "queries_per_s": 64 / (q_ms / 1000),
            "max_abs_diff_vs_cpu": diff, "ok": diff < 5e-2}  # fmt: skip


def check_scorers(n: int) -> dict[str, Any]:
    from metaembed_rag.scorers import (
        BilinearScorer,
        CrossAttentionScorer,
        MaxSimScorer,
        PooledDotScorer,
    )

    g = torch.Generator().manual_seed(0)
    docs = torch.nn.functional.normalize(torch.randn(n, 64, 384, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(16, 16, 384, generator=g), dim=-1)
    bil = BilinearScorer(384, rank=32)
    with torch.no_grad():
        bil.u.normal_(std=0.05)
    cross = CrossAttentionScorer(384, hidden=64)
    torch.nn.init.normal_(cross.mlp[2].weight, std=0.1)
    out: dict[str, Any] = {}
    d_gpu, q_gpu = docs.to(DEVICE, torch.bfloat16), q.to(DEVICE)
    for scorer in (MaxSimScorer(), PooledDotScorer(), bil):
        on_gpu = scorer.to(DEVICE) if isinstance(scorer, torch.nn.Module) else scorer
        s, ms = _timed(lambda s=on_gpu: s.score(q_gpu, d_gpu, (16, 64)))
        ref_s = scorer.to("cpu") if isinstance(scorer, torch.nn.Module) else scorer
        ref = ref_s.score(q, docs[:256].bfloat16().float(), (16, 64))
        diff = float((s[:, :256].float().cpu() - ref).abs().max())
        out[scorer.name] = {
            "ms_16_queries": ms,
            "docs": n,
            "max_abs_diff_vs_cpu": diff,
            "ok": diff < 1e-2,
        }
    cand = torch.nn.functional.normalize(torch.randn(16, 100, 64, 384, generator=g), dim=-1)
    gpu_cross = cross.to(DEVICE)
    s, ms = _timed(lambda: gpu_cross.score_pairwise(q_gpu, cand.to(DEVICE), (16, 64)))
    cpu_cross = CrossAttentionScorer(384, hidden=64)
    cpu_cross.load_state_dict({k: v.cpu() for k, v in gpu_cross.state_dict().items()})
    ref = cpu_cross.score_pairwise(q[:2], cand[:2], (16, 64))
    diff = float((s[:2].cpu() - ref).abs().max())
    out["cross-attention"] = {"ms_16x100_pairs": ms, "max_abs_diff_vs_cpu": diff, "ok": diff < 1e-2}
    return out


def check_faiss() -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {
            "available": False,
            "why": "faiss not installed (pip install 'metaembed-rag[faiss]')",
        }
    if not hasattr(faiss, "StandardGpuResources"):
        return {"available": False, "why": "faiss has no GPU support (install faiss-gpu)"}
    from metaembed_rag.index import MultiVectorIndex

    g = torch.Generator().manual_seed(1)
    docs = torch.nn.functional.normalize(torch.randn(20000, 8, 128, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(64, 4, 128, generator=g), dim=-1)
    ids = [str(i) for i in range(len(docs))]
    res = {}
    for gpu in (False, True):
        idx = MultiVectorIndex(
            128, num_vectors=8, budgets=[(1, 1), (4, 8)], use_gpu=gpu, dtype="float32"
        )
        idx.add(ids, docs, None, None)
        _sync()
        t0 = time.perf_counter()
        _, rows = idx.search_rows(q, 10, fetch_k=100)
        res[gpu] = (rows, (time.perf_counter() - t0) * 1000)
    same = float((res[True][0] == res[False][0]).mean())
    return {"available": True, "top10_equal_fraction": same, "gpu_ms_64_queries": res[True][1],
            "cpu_ms_64_queries": res[False][1], "ok": same > 0.99}  # fmt: skip


def check_mllm() -> dict[str, Any]:
    from PIL import Image

    from metaembed_rag.rerank import MLLMReranker

    tiny = _tiny_models()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lm = tiny.build_tiny_causal_lm(Path(tmp) / "lm")
        idefics = tiny.build_tiny_idefics3(Path(tmp) / "idefics3")
        img = Image.new("RGB", (48, 40), (120, 30, 200))
        for name, path, cands in (
            ("causal-lm", lm, [f"candidate passage number {i}" for i in range(16)]),
            ("idefics3", idefics, [img if i % 2 else ("a caption", img) for i in range(16)]),
        ):
            gpu = MLLMReranker.from_pretrained(path, device=DEVICE, dtype="float32", batch_size=8)
            cpu = MLLMReranker.from_pretrained(path, device="cpu", batch_size=8)
            s, ms = _timed(lambda r=gpu, c=cands: r.score("a query", c), repeat=2)
            diff = max(abs(a - b) for a, b in zip(s, cpu.score("a query", cands), strict=True))
            out[name] = {
                "ms_per_candidate": ms / len(cands),
                "max_abs_diff_vs_cpu": diff,
                "ok": diff < 1e-3,
            }
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=None, help="MetaEmbed model for the encoder check")
    p.add_argument("--docs", type=int, default=512, help="documents encoded")
    p.add_argument("--n", type=int, default=50000, help="random documents scored")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument(
        "--device", default="cuda", help="cuda (default) or cpu: a dry run of the script"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")  # fmt: skip
        return 0
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu (dry run)"
    result: dict[str, Any] = {"device": name, "torch": torch.__version__}
    for name, fn in (("encoder", lambda: check_encoder(args.model, args.docs)),
                     ("scorers", lambda: check_scorers(args.n)), ("faiss_gpu", check_faiss),
                     ("mllm_reranker", check_mllm)):  # fmt: skip
        t = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # report every part, then fail at the end
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
        print(f"{name}: {json.dumps(result[name])} ({time.perf_counter() - t:.1f} s)", flush=True)
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    failed = [k for k, v in result.items() if isinstance(v, dict) and _failed(v)]
    print(
        f"gpu_check: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'} in {result['seconds']:.0f} s"
    )
    return 1 if failed else 0


def _failed(part: dict[str, Any]) -> bool:
    if part.get("ok") is False:
        return True
    return any(isinstance(v, dict) and v.get("ok") is False for v in part.values())


if __name__ == "__main__":
    sys.exit(main())
