"""Retrieval evaluation of a model on a BEIR dataset, per budget, with timings."""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .budget import BudgetLike
from .data import BeirDataset
from .metrics import evaluate
from .model import MetaEmbedModel
from .scoring import maxsim
from .vector_cache import cache_path, cached_vectors, file_identity

__all__ = [
    "QUALITY_METRICS",
    "cached_corpus_vectors",
    "evaluate_beir",
    "encode_corpus",
    "plot_budgets",
    "ranking_metrics",
    "top_rankings",
]

logger = logging.getLogger(__name__)


QUALITY_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")
"""The quality figures of a budget row (and of a baseline row)."""


def cached_corpus_vectors(
    ds: BeirDataset,
    doc_ids: Sequence[str],
    cache_dir: str | Path | None,
    prefix: str,
    encoder_key: str,
    encode: Callable[[list[Any]], torch.Tensor],
    *,
    titled: bool = False,
) -> tuple[torch.Tensor, float]:
    """The documents ``doc_ids`` of ``ds`` (title + text) encoded by ``encode``, through the
    vector cache: the key is ``encoder_key`` (the encoder's identity and max length) and the
    corpus file's content digest. For a sample of the corpus
    (:meth:`BeirDataset.sample_docs`) the rows come from the whole corpus's cached vectors
    when those exist, else the sample is encoded and cached under a key that adds its ids.
    ``titled``: ``encode`` receives :meth:`BeirDataset.doc_item` s (the title marked; a model
    encoder), else :meth:`BeirDataset.doc_text` strings (the same words).
    Returns (vectors, seconds spent encoding: 0.0 on a cache hit)."""
    key = f"{encoder_key}|{file_identity(ds.folder / 'corpus.jsonl')}"
    if ds.full_ids is not None:  # a sample: rows of the whole corpus's cached vectors if any
        full = cache_path(cache_dir, prefix, key) if cache_dir is not None else None
        if full is not None and full.is_file():
            logger.info("Cache hit: the sampled documents' rows of %s", full)
            position = {d: i for i, d in enumerate(ds.full_ids)}
            rows = torch.tensor([position[d] for d in doc_ids])
            return load_file(str(full))["vectors"][rows], 0.0
        digest = hashlib.sha256("\n".join(doc_ids).encode()).hexdigest()[:16]
        key += f"|docs:{digest}"
    read = ds.doc_item if titled else ds.doc_text
    vectors, seconds, _ = cached_vectors(
        cache_dir, prefix, key, lambda: encode([read(d) for d in doc_ids])
    )
    return vectors, seconds


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
        ``cache_dir``). The cache key covers the model fingerprint, the corpus file's content
        digest and the max length.
    """
    doc_ids = sorted(ds.corpus)
    length = model.config.max_length if max_length is None else max_length
    vectors, seconds = cached_corpus_vectors(
        ds,
        doc_ids,
        cache_dir,
        "docs",
        f"{model.fingerprint()}|{length}",
        lambda docs: model.encode_documents(
            docs, batch_size=batch_size, max_length=max_length, show_progress_bar=True
        ),
        titled=True,
    )
    return doc_ids, vectors, seconds


def top_rankings(
    scores: torch.Tensor, query_ids: Sequence[str], doc_ids: Sequence[str], k: int = 1000
) -> dict[str, list[str]]:
    """``{query id: the top-k doc ids, best first}`` from a (Q, N) score matrix."""
    top = scores.topk(min(k, len(doc_ids)), dim=1).indices.tolist()
    return {q: [doc_ids[i] for i in row] for q, row in zip(query_ids, top, strict=True)}


def ranking_metrics(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100, MRR@10 on the top 100 and MAP on the whole ranking
    (the top 1,000): the figures of a budget row, for the model and the baselines alike."""
    m = evaluate({q: r[:100] for q, r in rankings.items()}, qrels, ks=(10, 100))
    full = evaluate(rankings, qrels, ks=(10,))
    return {
        "ndcg@10": m["ndcg@10"],
        "recall@10": m["recall@10"],
        "recall@100": m["recall@100"],
        "mrr@10": m["mrr@10"],
        "map": full["map"],
    }


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
    qrels = {q: ds.qrels[q] for q in qids}
    for b in bs:
        scores = maxsim(queries, docs, b)
        row: dict[str, Any] = ranking_metrics(top_rankings(scores, qids, doc_ids), qrels)
        score_times = []
        for i in range(len(sample)):
            t0 = time.perf_counter()
            maxsim(queries[i : i + 1], docs, b)
            score_times.append((time.perf_counter() - t0) * 1000)
        out["budgets"][str(b)] = {
            **row,
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
