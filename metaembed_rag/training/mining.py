"""Modality-aware hard-negative mining (MM-Embed).

With a first-round model, retrieve the top ``top_n`` candidates of every training query. Its
hard negatives are (a) retrieved candidates of the wrong modality (when the data is
multimodal) and (b) candidates of the right modality ranked below ``min_rank`` — skipping the
top ranks avoids false negatives (unjudged relevant documents). Known positives are never
negatives. A second round is then trained from the base weights with these negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import BudgetLike
from ..inputs import ItemLike, item_text
from ..model import MetaEmbedModel
from ..scoring import maxsim

__all__ = ["mine_hard_negatives", "select_negatives", "teacher_negatives"]

logger = logging.getLogger(__name__)


def select_negatives(
    ranked: Sequence[str],
    positives: set[str],
    *,
    min_rank: int,
    target_modality: str | None = None,
    modality: Mapping[str, str] | None = None,
) -> list[str]:
    """Hard negatives from one query's ranked list (best first).

    Args:
        ranked: candidate ids, best first.
        positives: the query's known positives (never returned).
        min_rank: right-modality candidates at 1-based rank <= ``min_rank`` are skipped.
        target_modality / modality: the modality the query wants and each candidate's; when
            given, wrong-modality candidates are negatives at any rank.

    >>> select_negatives(["a", "b", "c", "d"], {"a"}, min_rank=2)
    ['c', 'd']
    >>> select_negatives(["i1", "t1", "t2"], set(), min_rank=2, target_modality="text",
    ...                  modality={"i1": "image", "t1": "text", "t2": "text"})
    ['i1', 't2']
    """
    out: list[str] = []
    for rank, doc_id in enumerate(ranked, 1):
        if doc_id in positives:
            continue
        wrong = (
            target_modality is not None
            and modality is not None
            and modality.get(doc_id, target_modality) != target_modality
        )
        if wrong or rank > min_rank:
            out.append(doc_id)
    return out


@torch.inference_mode()
def mine_hard_negatives(
    model: MetaEmbedModel,
    queries: Mapping[str, ItemLike],
    corpus: Mapping[str, ItemLike],
    positives: Mapping[str, set[str]],
    *,
    budget: BudgetLike | None = None,
    top_n: int = 50,
    min_rank: int = 45,
    query_modality: Mapping[str, str] | None = None,
    modality: Mapping[str, str] | None = None,
    batch_size: int = 32,
    doc_vectors: torch.Tensor | None = None,
) -> dict[str, list[str]]:
    """Mine hard negatives for every query in ``positives``.

    Args:
        model: the first-round model.
        queries: query id -> input.
        corpus: document id -> input.
        positives: query id -> ids of its positives.
        budget: scoring budget for retrieval (default: the model's largest).
        top_n: documents retrieved per query.
        min_rank: right-modality negatives come from ranks ``min_rank + 1 .. top_n``.
        query_modality: target modality per query.
        modality: modality per candidate.
        doc_vectors: precomputed (len(corpus), R_c, D) vectors in ``corpus`` order.

    Returns:
        query id -> negative ids (possibly empty), best-ranked first.
    """
    if top_n <= min_rank and modality is None:
        raise ValueError(f"top_n={top_n} must exceed min_rank={min_rank}, or no negative is left")
    b = model.resolve_budget(budget)
    doc_ids = list(corpus)
    if doc_vectors is None:
        doc_vectors = model.encode_documents([corpus[d] for d in doc_ids], batch_size=batch_size)
    elif doc_vectors.shape[0] != len(doc_ids):
        raise ValueError(
            f"doc_vectors has {doc_vectors.shape[0]} rows for {len(doc_ids)} documents"
        )
    qids = [q for q in positives if q in queries]
    missing = [q for q in positives if q not in queries]
    if missing:
        raise KeyError(
            f"{len(missing)} query ids in positives have no query text, e.g. {missing[0]!r}"
        )
    q_vectors = model.encode_queries([queries[q] for q in qids], batch_size=batch_size)
    scores = maxsim(q_vectors, doc_vectors[:, : b.r_c], (b.r_q, b.r_c))
    k = min(top_n, len(doc_ids))
    top = scores.topk(k, dim=1).indices.tolist()
    out: dict[str, list[str]] = {}
    for qid, row in zip(qids, top, strict=True):
        ranked = [doc_ids[i] for i in row]
        target = query_modality.get(qid) if query_modality is not None else None
        out[qid] = select_negatives(
            ranked,
            set(positives[qid]),
            min_rank=min_rank,
            target_modality=target,
            modality=modality,
        )
    empty = sum(1 for v in out.values() if not v)
    logger.info("Mined negatives for %d queries (%d without any).", len(out), empty)
    return out


@torch.inference_mode()
def teacher_negatives(
    examples: Sequence[Any],
    encoder: Any,
    *,
    top_n: int = 30,
    min_rank: int = 3,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 256,
) -> list[Any]:
    """Give every text pair without a negative one mined by a teacher (the backbone's own
    mean-pooled cosine, :class:`~metaembed_rag.baselines.MeanPoolEncoder`; a titled document
    is read as ``"title text"`` by the teacher and kept titled as the negative): per source, the
    query's ranking of that source's positives; a random one of ranks ``min_rank + 1 ..
    top_n`` (skipping the top ranks, where unjudged duplicates and paraphrases sit), never a
    positive of the same query.

    Sources whose examples already carry negatives (their own) are kept as they are, and so
    is a source where some query finds no candidate (a batch is all-negatives or none).

    Returns:
        the examples, in order, with ``negative`` filled where mined.
    """
    import dataclasses
    import random

    if top_n <= min_rank:
        raise ValueError(f"top_n={top_n} must exceed min_rank={min_rank}")
    by_source: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_source.setdefault(ex.source, []).append(i)
    out = list(examples)
    rng = random.Random(seed)
    for source, idx in tqdm(sorted(by_source.items()), desc="Teacher negatives", unit="source"):
        exs = [examples[i] for i in idx]
        if any(ex.negative is not None for ex in exs) or not all(
            isinstance(ex.query, str) and item_text(ex.positive) is not None for ex in exs
        ):
            continue
        doc_ids = list(dict.fromkeys(ex.positive_id for ex in exs))
        item = {ex.positive_id: ex.positive for ex in exs}  # what the model reads
        text = {i: item_text(p) for i, p in item.items()}  # what the teacher reads
        own: dict[str, set[str]] = {}
        for ex in exs:
            own.setdefault(ex.query_id, set()).add(ex.positive_id)
        qids = list(own)
        qtext = {ex.query_id: ex.query for ex in exs}
        d = encoder.encode([text[i] for i in doc_ids], batch_size=batch_size,
                           max_length=max_length)  # fmt: skip
        q = encoder.encode([qtext[i] for i in qids], batch_size=batch_size, max_length=64)
        k = min(top_n, len(doc_ids))
        ranked = (q @ d.T).topk(k, dim=1).indices.tolist()
        picks: dict[str, list[str]] = {}
        for qid, row in zip(qids, ranked, strict=True):
            picks[qid] = select_negatives([doc_ids[j] for j in row], own[qid], min_rank=min_rank)
        if any(not v for v in picks.values()):
            logger.info("%s: some queries have no teacher negative; kept without", source)
            continue
        for i, ex in zip(idx, exs, strict=True):
            neg = rng.choice(picks[ex.query_id])
            out[i] = dataclasses.replace(ex, negative=item[neg])
        logger.info("%s: teacher negatives for %d pairs", source, len(exs))
    return out
