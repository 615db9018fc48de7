"""Retrieval evaluation of a model on a BEIR dataset, per budget, with timings."""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .budget import BudgetLike
from .data import BeirDataset
from .metrics import evaluate
from .model import MetaEmbedModel
from .scoring import maxsim

__all__ = ["evaluate_beir", "encode_corpus", "plot_budgets"]

logger = logging.getLogger(__name__)


def encode_corpus(
    model: MetaEmbedModel,
    ds: BeirDataset,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[list[str], torch.Tensor, float]:
    """Encode every corpus document (title + text).

    Returns:
        (doc ids, (N, R_c, D) float32 vectors, seconds spent encoding — 0.0 when loaded from
        ``cache_dir``). The cache key covers the model fingerprint, corpus file and max length.
    """
    doc_ids = sorted(ds.corpus)
    cache_file = None
    if cache_dir is not None:
        corpus_file = ds.folder / "corpus.jsonl"
        stat = corpus_file.stat()
        key = f"{model.fingerprint()}|{corpus_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_length}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        cache_file = Path(cache_dir) / f"docs-{digest}.safetensors"
        if cache_file.is_file():
            logger.info("Loading cached document vectors from %s", cache_file)
            return doc_ids, load_file(str(cache_file))["vectors"], 0.0
    start = time.perf_counter()
    vectors = model.encode_documents(
        [ds.doc_text(d) for d in doc_ids],
        batch_size=batch_size,
        max_length=max_length,
        show_progress_bar=True,
    )
    seconds = time.perf_counter() - start
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        save_file({"vectors": vectors.contiguous()}, str(tmp))
        tmp.replace(cache_file)
    return doc_ids, vectors, seconds


def evaluate_beir(
    model: MetaEmbedModel,
    ds: BeirDataset,
    budgets: Sequence[BudgetLike],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    latency_queries: int = 50,
    cache_dir: str | Path | None = None,
    query_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Exhaustive (exact MaxSim over the whole corpus) evaluation at each budget.

    Returns ``{"budgets": {"r_q,r_c": {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map",
    "query_ms", "score_ms"}}, "doc_encode_s", "docs_per_s", "num_docs", "num_queries"}``:
    ``query_ms`` is the median time to encode one query alone, ``score_ms`` the median time to
    score one query against the whole corpus at that budget (both over ``latency_queries``
    queries); ``map`` is MAP over the top 1,000.
    """
    bs = [model.resolve_budget(b) for b in budgets]
    qids = sorted(ds.qrels) if query_ids is None else list(query_ids)
    doc_ids, docs, doc_seconds = encode_corpus(
        model, ds, batch_size=batch_size, max_length=max_length, cache_dir=cache_dir
    )
    queries = model.encode_queries([ds.queries[q] for q in qids], batch_size=batch_size)
    sample = qids[: max(1, min(latency_queries, len(qids)))]
    query_times = []
    for q in sample:
        t0 = time.perf_counter()
        model.encode_queries([ds.queries[q]])
        query_times.append((time.perf_counter() - t0) * 1000)
    query_ms = statistics.median(query_times)
    out: dict[str, Any] = {"budgets": {}}
    k_rank = min(1000, len(doc_ids))
    qrels = {q: ds.qrels[q] for q in qids}
    for b in bs:
        scores = maxsim(queries, docs, b)
        top = scores.topk(k_rank, dim=1).indices.tolist()
        rankings = {q: [doc_ids[i] for i in row] for q, row in zip(qids, top, strict=True)}
        m10 = evaluate({q: r[:100] for q, r in rankings.items()}, qrels, ks=(10, 100))
        full = evaluate(rankings, qrels, ks=(10,))
        score_times = []
        for i in range(len(sample)):
            t0 = time.perf_counter()
            maxsim(queries[i : i + 1], docs, b)
            score_times.append((time.perf_counter() - t0) * 1000)
        out["budgets"][str(b)] = {
            "ndcg@10": m10["ndcg@10"],
            "recall@10": m10["recall@10"],
            "recall@100": m10["recall@100"],
            "mrr@10": m10["mrr@10"],
            "map": full["map"],
            "query_ms": query_ms,
            "score_ms": statistics.median(score_times),
        }
    out["doc_encode_s"] = doc_seconds
    out["docs_per_s"] = len(doc_ids) / doc_seconds if doc_seconds else None
    out["num_docs"] = len(doc_ids)
    out["num_queries"] = len(qids)
    return out


def plot_budgets(results: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """PNG of nDCG@10 / Recall@100 and scoring latency against budget."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'metaembed-rag[plot]'") from exc
    names = list(results["budgets"])
    rows = [results["budgets"][n] for n in names]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    x = range(len(names))
    ax1.plot(x, [r["ndcg@10"] for r in rows], "o-", label="nDCG@10")
    ax1.plot(x, [r["recall@100"] for r in rows], "s-", label="Recall@100")
    ax1.set_xticks(list(x), [f"({n})" for n in names])
    ax1.set_xlabel("budget (r_q, r_c)")
    ax1.set_ylabel("quality")
    ax2 = ax1.twinx()
    ax2.bar(list(x), [r["score_ms"] for r in rows], alpha=0.25, color="gray", label="score ms")
    ax2.set_ylabel("scoring latency per query (ms)")
    lines = ax1.get_legend_handles_labels()
    bars = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + bars[0], lines[1] + bars[1], loc="lower right")
    ax1.set_title(title or "Quality and latency by budget")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
