"""LlamaIndex retriever over MetaEmbed's two-stage (coarse recall + exact MaxSim) search
(``pip install llama-index-retrievers-metaembed``)."""

from llama_index.retrievers.metaembed.base import DEFAULT_IMAGE_KEY, MetaEmbedRetriever, hit_to_node

__all__ = ["DEFAULT_IMAGE_KEY", "MetaEmbedRetriever", "hit_to_node"]
