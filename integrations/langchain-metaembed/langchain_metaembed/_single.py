"""The single-vector mode of the LangChain ``MetaEmbedVectorStore``: any LangChain
``Embeddings`` (one vector per text), stored as one-vector documents, scored at budget (1,1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from langchain_core.embeddings import Embeddings
from metaembed_rag.index import MultiVectorIndex

__all__ = ["check_width", "document_vectors", "new_index", "owner", "query_vectors"]


def owner(emb: Embeddings) -> str:
    """Whose budgets a single-vector store has, for error messages."""
    return (
        f"a single-vector store ({type(emb).__name__} embeddings: one vector per document, so "
        "only (1,1); multi-vector budgets need MetaEmbedEmbeddings)"
    )


def new_index(dim: int, index_kwargs: dict[str, Any]) -> MultiVectorIndex:
    """An index of one float32 vector per document (exact dot products)."""
    kwargs = {"dtype": "float32", "coarse_vector": "first", **index_kwargs}
    return MultiVectorIndex(dim, num_vectors=1, budgets=[(1, 1)], **kwargs)


def check_width(emb: Embeddings, width: int, method: str, held: int | None) -> None:
    """``width`` (floats per vector from ``emb.method``) must be the stored ``held`` width,
    or the embeddings are not the ones the store was built with."""
    if held is not None and width != held:
        raise ValueError(
            f"{type(emb).__name__}.{method} returned {width}-float vectors but this store holds "
            f"{held}-float vectors: these are not the embeddings the store was built with. Use "
            "those (same model and size), or build a new store for these embeddings."
        )


def document_vectors(emb: Embeddings, texts: list[str], held: int | None) -> np.ndarray:
    """``(n, 1, D)`` float32 from ``embed_documents``."""
    vectors = np.asarray(emb.embed_documents(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"{type(emb).__name__}.embed_documents returned shape {vectors.shape} for "
            f"{len(texts)} texts; expected (n, dim)."
        )
    check_width(emb, vectors.shape[-1], "embed_documents", held)
    return vectors[:, None, :]


def query_vectors(emb: Embeddings, query: str, held: int | None) -> torch.Tensor:
    """``(1, 1, D)`` float32 from ``embed_query``."""
    vec = torch.tensor(emb.embed_query(query), dtype=torch.float32)
    if vec.dim() != 1:
        raise ValueError(
            f"{type(emb).__name__}.embed_query returned shape {tuple(vec.shape)}; expected one "
            "list of floats."
        )
    check_width(emb, vec.shape[0], "embed_query", held)
    return vec.view(1, 1, -1)
