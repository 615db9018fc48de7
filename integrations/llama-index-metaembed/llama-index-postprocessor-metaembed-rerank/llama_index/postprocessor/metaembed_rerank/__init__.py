"""LlamaIndex node postprocessor reranking with budgeted MetaEmbed MaxSim
(``pip install llama-index-postprocessor-metaembed-rerank``)."""

from llama_index.postprocessor.metaembed_rerank.base import RETRIEVAL_SCORE_KEY, MetaEmbedRerank

__all__ = ["MetaEmbedRerank", "RETRIEVAL_SCORE_KEY"]
