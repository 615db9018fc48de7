"""The zero-shot suite with the default model's cached vectors, for the benchmarks that rank
each whole corpus by exact MaxSim over coded document vectors (``compression.py --parts
quality`` and ``quantiser_study.py``): one loader, so both read the same queries and vectors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("suite")


@dataclass
class SuiteSet:
    """One set: its first queries (sorted ids), their judgments, the corpus vectors."""

    name: str
    qids: list[str]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]
    docs: torch.Tensor  # (N, K, D) float32, the default model's cached document vectors
    queries: torch.Tensor  # (len(qids), R_q, D)

    def ndcg(self, scores: torch.Tensor) -> float:
        """nDCG@10 of ranking the whole corpus by ``scores`` ``(len(qids), N)``."""
        from metaembed_rag.evaluation import ranking_metrics, top_rankings

        return ranking_metrics(top_rankings(scores, self.qids, self.doc_ids), self.qrels)["ndcg@10"]


def suite_sets(
    suite: Path, max_queries: int, cache_dir: Path | None
) -> tuple[list[Any], Iterator[SuiteSet]]:
    """The default model's budgets and the suite's sets, one at a time (vectors from the eval
    cache; a set not cached yet is encoded and cached, with a warning)."""
    from metaembed_rag.data import load_beir
    from metaembed_rag.evaluation import encode_corpus
    from metaembed_rag.hub import load_model
    from metaembed_rag.suite import dataset_names, read_suite_file
    from metaembed_rag.vector_cache import cached_vectors, default_cache_dir

    folders = read_suite_file(suite)
    model = load_model(None, "cpu")
    cache = Path(cache_dir or default_cache_dir())

    def sets() -> Iterator[SuiteSet]:
        for name, folder in zip(dataset_names(folders), folders, strict=True):
            ds = load_beir(folder, "test")
            qids = sorted(ds.qrels)[:max_queries]
            doc_ids, docs, seconds = encode_corpus(model, ds, cache_dir=cache)
            if seconds:
                logger.warning("%s: document vectors were not cached (encoded in %.0f s)",
                               name, seconds)  # fmt: skip
            key = f"{model.fingerprint()}|{folder.resolve()}|{','.join(qids)}"
            queries, _, _ = cached_vectors(
                cache, "bench-queries", key,
                lambda ds=ds, qids=qids: model.encode_queries([ds.queries[q] for q in qids]),
            )  # fmt: skip
            yield SuiteSet(name, qids, {q: ds.qrels[q] for q in qids}, doc_ids, docs, queries)

    return list(model.budgets), sets()


def decoded(kind: str, docs: torch.Tensor, step: int = 512) -> torch.Tensor:
    """``docs`` stored as ``kind`` (encoded as an index encodes them) and decoded, float32."""
    from metaembed_rag.index.storage import VectorCodec

    x = docs.numpy()
    codec = VectorCodec(kind, x.shape[-1], num_vectors=x.shape[1])
    if codec.codebook is not None:  # trained on a sample of the corpus, as at index build
        codec.codebook.train(x.reshape(-1, x.shape[-1]))
    if codec.tiered is not None:
        codec.tiered.train(x)
    out = torch.empty(docs.shape, dtype=torch.float32)
    for s in range(0, x.shape[0], step):
        stored, side = codec.encode(x[s : s + step])
        centres = codec.centres(x[s : s + step]) if codec.tiered is not None else None
        out[s : s + step] = codec.decode(stored, side, centres)
    return out


def dev_sets(
    recipe_path: Path, distractors: int, max_queries: int, cache_dir: Path | None
) -> tuple[list[Any], Iterator[SuiteSet]]:
    """The default model's budgets and, per source, the *hard* dev split of a training recipe
    (``metaembed_rag.training.dev``): the source's held-out dev queries among its dev
    positives plus ``distractors`` of its training positives. For choosing between coders
    without reading the zero-shot suite (vectors cached like the suite's)."""
    from metaembed_rag.hub import load_model
    from metaembed_rag.training.dev import read_recipe, recipe_dev_splits, source_collections
    from metaembed_rag.vector_cache import cached_vectors, default_cache_dir

    recipe = read_recipe(recipe_path)
    dev, extra = recipe_dev_splits(recipe, Path(recipe_path).resolve().parents[1], distractors)
    model = load_model(None, "cpu")
    cache = Path(cache_dir or default_cache_dir())

    def sets() -> Iterator[SuiteSet]:
        for name, (queries, docs, qrels) in source_collections(dev, extra).items():
            if not queries:
                continue
            qids, doc_ids = sorted(queries)[:max_queries], sorted(docs)
            base = f"{model.fingerprint()}|dev:{recipe_path.name}:{name}:{distractors}"
            d, _, _ = cached_vectors(
                cache, "dev-docs", f"{base}|{','.join(doc_ids)}",
                lambda doc_ids=doc_ids, docs=docs: model.encode_documents(
                    [docs[i] for i in doc_ids]),
            )  # fmt: skip
            q, _, _ = cached_vectors(
                cache, "dev-queries", f"{base}|{','.join(qids)}",
                lambda qids=qids, queries=queries: model.encode_queries(
                    [queries[i] for i in qids]),
            )  # fmt: skip
            yield SuiteSet(f"dev:{name}", qids, {i: qrels[i] for i in qids}, doc_ids, d, q)

    return list(model.budgets), sets()
