"""``MetaEmbedEmbedding`` lives in the core (:mod:`metaembed_rag.frameworks.llama_index.embedding`),
so the vector store, retriever and reranker packages need no sibling package; this module keeps
the package's import path."""

from metaembed_rag.frameworks.llama_index.embedding import MetaEmbedEmbedding

__all__ = ["MetaEmbedEmbedding"]
