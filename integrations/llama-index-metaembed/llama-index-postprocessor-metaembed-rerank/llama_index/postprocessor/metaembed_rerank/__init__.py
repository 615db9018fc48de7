"""LlamaIndex node postprocessors: reranking with budgeted MetaEmbed MaxSim (``MetaEmbedRerank``)
and with a generative model's P("True") (``MLLMRerank``)
(``pip install llama-index-postprocessor-metaembed-rerank``)."""

from llama_index.postprocessor.metaembed_rerank.base import RETRIEVAL_SCORE_KEY, MetaEmbedRerank
from llama_index.postprocessor.metaembed_rerank.mllm import MLLMRerank

__all__ = ["MLLMRerank", "MetaEmbedRerank", "RETRIEVAL_SCORE_KEY"]
