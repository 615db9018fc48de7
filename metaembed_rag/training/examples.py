"""Training examples from the data at hand: BEIR qrels, caption groups, self-supervised pairs."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence

from ..data import BeirDataset, ImageCaptions, TextPair
from ..inputs import ItemLike
from .trainer import TrainExample

__all__ = [
    "beir_pairs",
    "caption_pairs",
    "title_pairs",
    "group_pairs",
    "ict_pairs",
    "with_negatives",
    "pair_examples",
    "split_dev",
]


def beir_pairs(ds: BeirDataset, source: str = "beir") -> list[TrainExample]:
    """One example per (query, relevant document) judgment of the dataset's split; the
    document as the evaluation reads it (:meth:`~metaembed_rag.data.BeirDataset.doc_item`:
    titled when it has a title and a text)."""
    out: list[TrainExample] = []
    for qid, docs in sorted(ds.qrels.items()):
        for did in sorted(docs):
            out.append(
                TrainExample(
                    ds.queries[qid], ds.doc_item(did), source=source, query_id=qid, positive_id=did
                )
            )
    return out


def group_pairs(groups: Sequence[Sequence[str]], source: str, seed: int = 0) -> list[TrainExample]:
    """Paraphrase pairs from groups of texts describing the same thing: every text is paired
    with another of its group (a batch never holds two examples of one group)."""
    rng = random.Random(seed)
    out: list[TrainExample] = []
    for g, texts in enumerate(groups):
        texts = [t for t in texts if t.strip()]
        for i, text in enumerate(texts):
            others = [k for k in range(len(texts)) if k != i]
            if not others:
                continue
            j = rng.choice(others)
            key = f"{source}:{g}"
            out.append(TrainExample(text, texts[j], source=source, query_id=key, positive_id=key))
    return out


def caption_pairs(
    captions: ImageCaptions, source: str = "captions", seed: int = 0
) -> list[TrainExample]:
    """Caption-to-caption paraphrase pairs (text only) from an image-caption set."""
    return group_pairs([captions.captions[k] for k in sorted(captions.captions)], source, seed)


def title_pairs(
    ds: BeirDataset, source: str = "titles", exclude: set[str] | None = None
) -> list[TrainExample]:
    """Self-supervised pairs: a document's title as the query, its body as the positive."""
    out: list[TrainExample] = []
    for did in sorted(ds.corpus):
        if exclude and did in exclude:
            continue
        doc = ds.corpus[did]
        title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
        if title and text:
            out.append(TrainExample(title, text, source=source, query_id=did, positive_id=did))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def ict_pairs(
    ds: BeirDataset,
    per_document: int = 1,
    keep_probability: float = 0.0,
    min_words: int = 6,
    min_sentences: int = 3,
    seed: int = 0,
    source: str = "ict",
    exclude: set[str] | None = None,
) -> list[TrainExample]:
    """Self-supervised Inverse Cloze Task pairs (Lee et al., 2019) from a corpus: a sentence of a
    document is the query, the document (title + the other sentences) is the positive.

    Args:
        ds: the dataset whose corpus is used (no relevance judgments are read).
        per_document: pairs drawn per document, each from its own source
            (``"<source>0"``, ``"<source>1"``, ...), so a batch never holds one document twice.
        keep_probability: chance that the sentence is left in the positive (the rest of the
            time it is removed, so the pair cannot be matched on the sentence's words alone).
        min_words: sentences shorter than this are never queries.
        min_sentences: documents with fewer sentences are skipped.
        seed: seed of the sentence choice.
        exclude: document ids to leave out.
    """
    if per_document < 1:
        raise ValueError(f"per_document must be >= 1, got {per_document}")
    if not 0.0 <= keep_probability <= 1.0:
        raise ValueError(f"keep_probability must be in [0, 1], got {keep_probability}")
    rng = random.Random(seed)
    out: list[TrainExample] = []
    for did in sorted(ds.corpus):
        if exclude and did in exclude:
            continue
        doc = ds.corpus[did]
        sentences = [s for s in _SENTENCE_END.split(doc.get("text", "").strip()) if s]
        choices = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
        if len(sentences) < min_sentences or not choices:
            continue
        title = doc.get("title", "").strip()
        for k in range(per_document):
            i = rng.choice(choices)
            keep = rng.random() < keep_probability
            body = sentences if keep else sentences[:i] + sentences[i + 1 :]
            positive = f"{title} {' '.join(body)}".strip()
            out.append(
                TrainExample(
                    sentences[i], positive, source=f"{source}{k}", query_id=did, positive_id=did
                )  # fmt: skip
            )
    return out


def with_negatives(
    examples: Sequence[TrainExample],
    negatives: Mapping[str, Sequence[str]],
    doc_text: Mapping[str, ItemLike],
    seed: int = 0,
) -> list[TrainExample]:
    """Attach one mined negative per example (by ``query_id``); examples whose query has no
    mined negative are dropped, so every batch of that source has negatives."""
    rng = random.Random(seed)
    out: list[TrainExample] = []
    for ex in examples:
        cands = [n for n in negatives.get(ex.query_id, []) if n != ex.positive_id]
        if not cands:
            continue
        neg = rng.choice(cands)
        out.append(
            TrainExample(
                ex.query, ex.positive, doc_text[neg], ex.source, ex.query_id, ex.positive_id
            )
        )
    return out


def pair_examples(
    pairs: Sequence[TextPair], source: str, limit: int | None = None, seed: int = 0
) -> list[TrainExample]:
    """Examples from text pairs (``pairs.jsonl``), keeping a pair's own negative if it has one.

    Pairs are keyed by their text, so a batch never holds one query or one positive twice (a
    source with few distinct questions, such as a FAQ, would otherwise give in-batch false
    negatives). Sources where only some pairs have a negative keep it on none (a batch is all
    or nothing). ``limit`` keeps a seeded random sample of that many pairs.
    """
    rows = list(pairs)
    if limit is not None and len(rows) > limit:
        rows = random.Random(f"{seed}:{source}").sample(rows, limit)
    all_negatives = all(p.negative is not None for p in rows)
    return [
        TrainExample(
            p.query,
            p.positive,
            p.negative if all_negatives else None,
            source=source,
            query_id=p.query.strip().lower(),
            positive_id=p.positive.strip().lower(),
        )
        for p in rows
    ]


def split_dev(
    examples: Sequence[TrainExample], fraction: float, seed: int = 0
) -> tuple[list[TrainExample], list[TrainExample]]:
    """Hold out about ``fraction`` of the queries (by a hash of the query) as a dev split.
    Training pairs whose positive is also a dev positive are dropped, so no query and no
    positive is on both sides. Returns (train, dev)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")

    def held(ex: TrainExample) -> bool:
        digest = hashlib.sha256(f"{seed}|{ex.source}|{ex.query_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    dev = [ex for ex in examples if held(ex)]
    dev_positives = {(ex.source, ex.positive_id) for ex in dev}
    train = [
        ex for ex in examples if not held(ex) and (ex.source, ex.positive_id) not in dev_positives
    ]
    return train, dev
