"""Rerankers run after the search: :class:`MLLMReranker` (a generative model's P("True"))."""

from .mllm import MLLMReranker, RerankPrompt, fuse_scores

__all__ = ["MLLMReranker", "RerankPrompt", "fuse_scores"]
