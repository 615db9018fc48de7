"""LlamaIndex vector store keeping MetaEmbed multi-vectors, two-stage MaxSim search
(``pip install llama-index-vector-stores-metaembed``)."""

from llama_index.vector_stores.metaembed.base import NODE_ID_KEY, MetaEmbedVectorStore

from metaembed_rag.frameworks.llama_index.filters import ELEMENTS_KEY, to_core_filter

__all__ = ["ELEMENTS_KEY", "MetaEmbedVectorStore", "NODE_ID_KEY", "to_core_filter"]
