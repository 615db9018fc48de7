"""LlamaIndex embedding for MetaEmbed multi-vector models
(``pip install llama-index-embeddings-metaembed``)."""

from llama_index.embeddings.metaembed.base import MetaEmbedEmbedding

__all__ = ["MetaEmbedEmbedding"]
