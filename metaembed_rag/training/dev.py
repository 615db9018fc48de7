"""Recipe selection on held-out training pairs: nDCG@10 per source and budget on a dev split,
beside the backbone's own mean-pooled cosine on the same split.

Each source's dev queries retrieve among that source's dev positives (exact MaxSim at every
trained budget). The figures choose between recipes; quality is reported on the zero-shot
suite (``metaembed-rag eval``), never on this split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..evaluation import top_rankings
from ..metrics import evaluate
from ..model import MetaEmbedModel
from ..scoring import maxsim
from .trainer import TrainExample

__all__ = ["evaluate_dev"]


def evaluate_dev(
    model: MetaEmbedModel,
    dev: Sequence[TrainExample],
    *,
    batch_size: int = 32,
    mean_pool: bool = True,
) -> dict[str, Any]:
    """nDCG@10 of ``model`` on a dev split, per source and macro-averaged over sources.

    Returns:
        ``{"sources": {name: {"budgets": {"r_q,r_c": ndcg}, "mean-pool": ndcg, "queries": n,
        "docs": n}}, "macro": {"budgets": {...}, "mean-pool": ndcg}}`` (``mean-pool`` only with
        ``mean_pool``: the backbone alone, see :class:`metaembed_rag.baselines.MeanPoolEncoder`).
    """
    encoder = None
    if mean_pool:
        from ..baselines import MeanPoolEncoder

        encoder = MeanPoolEncoder.from_backbone(
            model.config.backbone, device=model.device, trust_remote_code=False
        )
    by_source: dict[str, list[TrainExample]] = {}
    for ex in dev:
        by_source.setdefault(ex.source, []).append(ex)
    sources: dict[str, Any] = {}
    for name, exs in sorted(by_source.items()):
        queries: dict[str, str] = {}
        docs: dict[str, str] = {}
        qrels: dict[str, dict[str, int]] = {}
        for ex in exs:
            if not isinstance(ex.query, str) or not isinstance(ex.positive, str):
                continue  # text pairs only
            queries.setdefault(ex.query_id, ex.query)
            docs.setdefault(ex.positive_id, ex.positive)
            qrels.setdefault(ex.query_id, {})[ex.positive_id] = 1
        if len(docs) < 2:
            continue
        qids, doc_ids = sorted(queries), sorted(docs)
        q = model.encode_queries([queries[i] for i in qids], batch_size=batch_size)
        d = model.encode_documents([docs[i] for i in doc_ids], batch_size=batch_size)
        row: dict[str, Any] = {"budgets": {}, "queries": len(qids), "docs": len(doc_ids)}
        for budget in model.budgets:
            ranked = top_rankings(maxsim(q, d, budget), qids, doc_ids, k=10)
            row["budgets"][str(budget)] = evaluate(ranked, qrels, ks=(10,))["ndcg@10"]
        if encoder is not None:
            length = model.config.max_length
            qv = encoder.encode([queries[i] for i in qids], batch_size=batch_size)
            dv = encoder.encode(
                [docs[i] for i in doc_ids], batch_size=batch_size, max_length=length
            )
            row["mean-pool"] = evaluate(
                top_rankings(qv @ dv.T, qids, doc_ids, k=10), qrels, ks=(10,)
            )["ndcg@10"]
        sources[name] = row
    if not sources:
        raise ValueError("the dev split holds no text source with two or more documents")
    macro: dict[str, Any] = {
        "budgets": {
            str(b): sum(r["budgets"][str(b)] for r in sources.values()) / len(sources)
            for b in model.budgets
        }
    }
    if encoder is not None:
        macro["mean-pool"] = sum(r["mean-pool"] for r in sources.values()) / len(sources)
    return {"sources": sources, "macro": macro}
