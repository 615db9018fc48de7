"""LlamaIndex pipeline on MetaEmbed, offline end to end.

1. ``VectorStoreIndex`` over a ``MetaEmbedVectorStore`` (multi-vectors, two-stage MaxSim);
2. retrieval at several budgets, with a metadata filter;
3. a ``RetrieverQueryEngine`` (``MetaEmbedRetriever`` + ``MetaEmbedRerank`` as node
   postprocessor) answering with llama-index-core's ``MockLLM`` (no API key, no network);
4. persist -> reload -> the same results (checked: the script exits with an error otherwise).

Install (from the repository root; the four LlamaIndex packages live in
``integrations/llama-index-metaembed/``)::

    pip install -e ".[faiss,default-model]"
    pip install -e integrations/llama-index-metaembed/llama-index-embeddings-metaembed \
        -e integrations/llama-index-metaembed/llama-index-vector-stores-metaembed \
        -e integrations/llama-index-metaembed/llama-index-retrievers-metaembed \
        -e integrations/llama-index-metaembed/llama-index-postprocessor-metaembed-rerank

Run: ``python examples/llamaindex_pipeline.py [--scifact N]`` (``--scifact`` indexes the first
N SciFact abstracts from ../shared/data/scifact instead of the built-in passages).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from llama_index.core import (
    Document,
    StorageContext,
    VectorStoreIndex,
    get_response_synthesizer,
    load_index_from_storage,
)
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from llama_index.embeddings.metaembed import MetaEmbedEmbedding
from llama_index.postprocessor.metaembed_rerank import MetaEmbedRerank
from llama_index.retrievers.metaembed import MetaEmbedRetriever
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

PASSAGES = [
    ("Insulin resistance in muscle and liver is a major cause of type 2 diabetes.", "health"),
    ("Metformin lowers blood glucose by reducing hepatic glucose production.", "health"),
    ("The Moon is Earth's only natural satellite and orbits it every 27.3 days.", "space"),
    ("Mars has two small moons, Phobos and Deimos.", "space"),
    ("Late interaction sums, over query vectors, the best match among document vectors.", "ir"),
    ("A retrieval budget chooses how many query and document vectors are compared.", "ir"),
]
QUESTION = "What causes type 2 diabetes?"


def load_documents(scifact: int | None) -> list[Document]:
    if not scifact:
        return [
            Document(text=text, metadata={"topic": topic}, id_=f"p{i}")
            for i, (text, topic) in enumerate(PASSAGES)
        ]
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"
    if not path.is_file():
        raise SystemExit(f"SciFact corpus not found at {path}; run without --scifact.")
    docs = []
    with path.open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(scifact), strict=False):
            row = json.loads(line)
            text = f"{row.get('title', '')} {row.get('text', '')}".strip()
            docs.append(Document(text=text, metadata={"topic": "scifact"}, id_=str(row["_id"])))
    return docs


def check(ok: bool, what: str) -> None:
    """Stop with an error (exit status 1) when a property the example shows does not hold."""
    if not ok:
        raise SystemExit(f"check failed: {what}")


def show(title: str, nodes: list[NodeWithScore]) -> None:
    print(f"\n{title}")
    for n in nodes:
        print(
            f"  {n.score:7.3f}  {n.node.ref_doc_id or n.node.node_id}: {n.node.get_content()[:70]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=int, default=None, help="index N SciFact abstracts")
    args = parser.parse_args()

    embed = MetaEmbedEmbedding()  # the default model, packaged, offline
    store = MetaEmbedVectorStore(embed)
    index = VectorStoreIndex.from_documents(
        load_documents(args.scifact),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,  # nodes are encoded once; the store keeps their 64 vectors
    )
    print(f"indexed {store.num_nodes} nodes: {store.client}")

    for budget in [(1, 1), (8, 16), (16, 64)]:
        retriever = index.as_retriever(similarity_top_k=2, vector_store_kwargs={"budget": budget})
        show(f"VectorStoreIndex retriever, budget {budget}:", retriever.retrieve(QUESTION))

    if not args.scifact:
        space = MetadataFilters(filters=[MetadataFilter(key="topic", value="space")])
        filtered = index.as_retriever(filters=space).retrieve("moons")
        show("filtered to topic=space:", filtered)
        check(
            bool(filtered) and all(n.node.metadata["topic"] == "space" for n in filtered),
            "the topic=space filter returns only space passages",
        )

    retriever = MetaEmbedRetriever.from_vector_store(
        store, similarity_top_k=4, recall_budget=(1, 1), rerank_budget=(8, 16)
    )
    engine = RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=get_response_synthesizer(llm=MockLLM(max_tokens=16)),
        node_postprocessors=[MetaEmbedRerank(embed, top_n=2, budget=(16, 64))],
    )
    response = engine.query(QUESTION)
    show("query engine sources (reranked at (16,64)):", response.source_nodes)
    print(f"  MockLLM answer: {response.response!r}")
    check(len(response.source_nodes) == 2, "the reranker keeps top_n=2 sources")
    if not args.scifact:
        check(response.source_nodes[0].node.ref_doc_id == "p0", "the diabetes passage is first")

    with tempfile.TemporaryDirectory() as tmp:
        index.storage_context.persist(persist_dir=tmp)
        loaded = MetaEmbedVectorStore.from_persist_dir(tmp, embed_model=embed)
        ctx = StorageContext.from_defaults(persist_dir=tmp, vector_store=loaded)
        index2 = load_index_from_storage(ctx, embed_model=embed)
        before = [
            (n.node.node_id, n.score)
            for n in index.as_retriever(similarity_top_k=4).retrieve(QUESTION)
        ]
        after = [
            (n.node.node_id, n.score)
            for n in index2.as_retriever(similarity_top_k=4).retrieve(QUESTION)
        ]
        check(
            bool(before) and after == before,
            f"persist -> reload -> same results ({after} vs {before})",
        )
        print(f"\npersist -> reload -> same results: {len(after)} nodes, same ids and scores")


if __name__ == "__main__":
    main()
