"""The integration packages, for the tests that check each stands alone."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "integrations" / "llama-index-metaembed"

#: (package folder, module to import, a name it must export)
PACKAGES = [
    (
        LLAMA / "llama-index-embeddings-metaembed",
        "llama_index.embeddings.metaembed",
        "MetaEmbedEmbedding",
    ),
    (
        LLAMA / "llama-index-vector-stores-metaembed",
        "llama_index.vector_stores.metaembed",
        "MetaEmbedVectorStore",
    ),
    (
        LLAMA / "llama-index-retrievers-metaembed",
        "llama_index.retrievers.metaembed",
        "MetaEmbedRetriever",
    ),
    (
        LLAMA / "llama-index-postprocessor-metaembed-rerank",
        "llama_index.postprocessor.metaembed_rerank",
        "MetaEmbedRerank",
    ),
    (ROOT / "integrations" / "langchain-metaembed", "langchain_metaembed", "MetaEmbedVectorStore"),
]
