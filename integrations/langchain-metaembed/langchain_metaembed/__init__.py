"""LangChain integration for metaembed-rag: MetaEmbed multi-vector retrieval.

* :class:`MetaEmbedEmbeddings` - ``Embeddings`` (the (1,1) single vector) plus full
  multi-vectors and image embeddings;
* :class:`MetaEmbedVectorStore` - a ``VectorStore`` keeping multi-vectors, searched at any budget
  (single-vector mode with any other ``Embeddings``);
* :class:`MetaEmbedRetriever` - two-stage search as a ``BaseRetriever``;
* :class:`MetaEmbedReranker` - budgeted MaxSim reranking as a ``BaseDocumentCompressor``;
* :class:`MLLMRerankCompressor` - a generative model's P("True") reranking (MM-Embed).
"""

from __future__ import annotations

import logging
from importlib import metadata

from .embeddings import MODEL_ENV_VAR, MetaEmbedEmbeddings
from .mllm import MLLMRerankCompressor
from .rerankers import MetaEmbedReranker
from .retrievers import MetaEmbedRetriever
from .vectorstores import MetaEmbedVectorStore

try:
    __version__ = metadata.version("langchain-metaembed")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "MODEL_ENV_VAR",
    "MLLMRerankCompressor",
    "MetaEmbedEmbeddings",
    "MetaEmbedReranker",
    "MetaEmbedRetriever",
    "MetaEmbedVectorStore",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
