"""LlamaIndex's RetrieverEvaluator gives the numbers ``metaembed-rag eval`` gives.

The fixed SciFact subset (documented in docs/llamaindex.md) is written as a BEIR folder:

* queries: the first 50 SciFact test queries by sorted id (what ``--limit-queries 50`` picks
  from the full set), every one of them, whatever its number of relevant documents;
* corpus: the relevant documents of those queries plus the first ``n_others`` other documents
  by sorted id; qrels: those queries' judgments.

One side is the real command line, ``metaembed_rag.cli.main(["eval", ...])`` (exhaustive MaxSim
per budget, ``metaembed_rag.metrics``), writing its JSON. The other is a ``VectorStoreIndex`` over
a ``MetaEmbedVectorStore`` (float32, ``fetch_k`` >= corpus size, so the two-stage search is
exact) evaluated by ``RetrieverEvaluator`` (``evaluate``, and ``aevaluate`` for the
retriever) with ``HitRate`` and ``MRR`` at
``similarity_top_k=10``, through both ``index.as_retriever`` and ``MetaEmbedRetriever``.

``HitRate(use_granular_hit_rate=True)`` is the fraction of a query's relevant documents in the
top 10, i.e. Recall@10 (no need to restrict to single-relevant-document queries), and
LlamaIndex's ``MRR`` is 1 / rank of the first relevant hit, i.e. MRR@10 at top-k 10. Both must
equal the CLI's figures at each budget, to 1e-12.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.evaluation.retrieval.metrics import MRR, HitRate
from llama_index.core.schema import TextNode
from llama_index.embeddings.metaembed import MetaEmbedEmbedding
from llama_index.retrievers.metaembed import MetaEmbedRetriever
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

from metaembed_rag.cli import main as cli_main
from metaembed_rag.data import BeirDataset, load_beir

NUM_QUERIES = 50
BUDGETS = [(1, 1), (16, 64)]


def _scifact() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / "scifact"
        if (candidate / "corpus.jsonl").is_file():
            return candidate
    pytest.skip("SciFact not found in any ../shared/data/scifact above the tests")


def write_subset(folder: Path, n_others: int) -> BeirDataset:
    """Write the fixed subset (module docstring) as a BEIR folder and load it back."""
    full = load_beir(_scifact(), "test")
    qids = sorted(full.qrels)[:NUM_QUERIES]
    relevant = {d for q in qids for d in full.qrels[q]}
    others = [d for d in sorted(full.corpus) if d not in relevant][:n_others]
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in sorted(relevant | set(others)):
            # a LlamaIndex node has one text: the title is joined into it here, so the CLI
            # (which reads a separate title as the input's title) reads the same string
            row = {"_id": d, "title": "", "text": full.doc_text(d)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in qids:
            fh.write(json.dumps({"_id": q, "text": full.queries[q]}, ensure_ascii=False) + "\n")
    (folder / "qrels").mkdir()
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, grade in sorted(full.qrels[q].items()):
                fh.write(f"{q}\t{d}\t{grade}\n")
    return load_beir(folder, "test")


def _evaluate(retriever: BaseRetriever, sub: BeirDataset, use_async: bool) -> dict[str, float]:
    """Mean hit rate and MRR over the subset's queries (``aevaluate`` when ``use_async``)."""
    evaluator = RetrieverEvaluator(
        metrics=[HitRate(use_granular_hit_rate=True), MRR()], retriever=retriever
    )
    qids = sorted(sub.qrels)

    async def run_async() -> list:
        return [
            await evaluator.aevaluate(query=sub.queries[q], expected_ids=sorted(sub.qrels[q]))
            for q in qids
        ]

    if use_async:
        results = asyncio.run(run_async())
    else:
        results = [
            evaluator.evaluate(query=sub.queries[q], expected_ids=sorted(sub.qrels[q]))
            for q in qids
        ]
    assert len(results) == NUM_QUERIES
    return {
        name: sum(r.metric_vals_dict[name] for r in results) / len(results)
        for name in ("hit_rate", "mrr")
    }


def _compare(model, tmp_path: Path, n_others: int, max_length: int | None) -> None:
    sub = write_subset(tmp_path / "scifact-subset", n_others)
    assert len(sub.qrels) == NUM_QUERIES
    assert any(len(rel) > 1 for rel in sub.qrels.values())  # not only single-relevant queries
    out = tmp_path / "cli.json"
    args = ["eval", "--data", str(sub.folder), "--limit-queries", str(NUM_QUERIES)]
    args += ["--budgets", " ".join(f"{a},{b}" for a, b in BUDGETS), "--json", str(out)]
    if max_length is not None:
        args += ["--max-length", str(max_length)]
    assert cli_main(args) == 0
    cli = json.loads(out.read_text())
    assert cli["num_queries"] == NUM_QUERIES and cli["num_docs"] == len(sub.corpus)

    # the CLI encodes documents in sorted-id batches of 32 with --max-length: do the same
    embed = MetaEmbedEmbedding(model=model, max_length=max_length, embed_batch_size=32)
    store = MetaEmbedVectorStore(embed, dtype="float32", fetch_k=len(sub.corpus))
    nodes = [TextNode(id_=d, text=sub.doc_text(d)) for d in sorted(sub.corpus)]
    index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    for r_q, r_c in BUDGETS:
        row = cli["budgets"][f"{r_q},{r_c}"]
        retrievers = {
            "VectorStoreIndex": index.as_retriever(
                similarity_top_k=10, vector_store_kwargs={"budget": (r_q, r_c)}
            ),
            "MetaEmbedRetriever": MetaEmbedRetriever.from_vector_store(
                store, similarity_top_k=10, rerank_budget=(r_q, r_c)
            ),
        }
        for name, retriever in retrievers.items():
            got = _evaluate(retriever, sub, use_async=name == "MetaEmbedRetriever")
            where = f"{name} at ({r_q},{r_c}): {got} vs CLI {row}"
            assert got["hit_rate"] == pytest.approx(row["recall@10"], abs=1e-12), where
            assert got["mrr"] == pytest.approx(row["mrr@10"], abs=1e-12), where
    assert 0 < cli["budgets"]["16,64"]["recall@10"] < 1  # a real ranking, not all-or-nothing


def test_retriever_evaluator_matches_cli_eval_small(model, tmp_path: Path) -> None:
    """Default run: 50 queries over their relevant documents + 30 others, 96 tokens."""
    _compare(model, tmp_path, n_others=30, max_length=96)


@pytest.mark.slow
def test_retriever_evaluator_matches_cli_eval(model, tmp_path: Path) -> None:
    """50 queries over their relevant documents + 300 others, the eval's default length."""
    _compare(model, tmp_path, n_others=300, max_length=None)
