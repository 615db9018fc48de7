"""Rerankers run after the search: :class:`MLLMReranker` (a generative model's P("True"))."""

from .mllm import MLLMReranker, RerankPrompt, fuse_scores, load_reranker, rerank_results

__all__ = ["MLLMReranker", "RerankPrompt", "fuse_scores", "load_reranker", "rerank_results"]
