"""Finding the multi-vectors behind LlamaIndex's single-vector plumbing (see the
:mod:`~llama_index.vector_stores.metaembed.base` docstring): the nodes' and the query's, from
the ``MetaEmbedEmbedding``'s cache, encoding only what is not there."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery

from metaembed_rag.frameworks.llama_index import MetaEmbedEmbedding
from metaembed_rag.frameworks.llama_index.inputs import node_input

__all__ = ["document_multi_vectors", "query_multi_vector"]

logger = logging.getLogger("llama_index.vector_stores.metaembed.base")

#: Largest difference between a re-encoded first vector and a given embedding still taken as
#: "the same vector" (unit vectors; batch composition moves float32 results by ~1e-6).
_SAME_VECTOR_ATOL = 1e-4


def _same_vector(a: torch.Tensor, b: Sequence[float]) -> bool:
    other = torch.as_tensor(list(b), dtype=torch.float32)
    return other.shape == a.shape and bool(torch.allclose(a, other, atol=_SAME_VECTOR_ATOL))


def document_multi_vectors(
    embed_model: MetaEmbedEmbedding, nodes: Sequence[BaseNode]
) -> torch.Tensor:
    """``(n, R_c, D)`` multi-vectors: the embedding's cached ones, encoding the rest."""
    out: list[torch.Tensor | None] = []
    for node in nodes:
        vec = None
        if node.embedding is not None:
            vec = embed_model.lookup_multi_vector("document", node.embedding, pop=True)
        out.append(vec)
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        fresh = embed_model.get_document_multi_vectors(
            [node_input(nodes[i], timeout=embed_model.url_timeout) for i in missing]
        )
        foreign, evicted = [], 0
        for j, i in enumerate(missing):
            out[i] = fresh[j]
            # the fresh multi-vector was remembered too: take it back out of the cache
            embed_model.lookup_multi_vector("document", fresh[j, 0], pop=True)
            given = nodes[i].embedding
            if given is None:
                continue
            if _same_vector(fresh[j, 0], given):
                evicted += 1
            else:
                foreign.append(nodes[i].node_id)
        if foreign:
            logger.warning(
                "%d of %d nodes (e.g. %r) carry an embedding that this store's "
                "MetaEmbedEmbedding did not make (another embed model?); it is ignored and "
                "the store encoded the nodes itself. Pass the store's MetaEmbedEmbedding as "
                "the index's embed_model so nodes are encoded once.",
                len(foreign),
                len(nodes),
                foreign[0],
            )
        if evicted:
            logger.warning(
                "%d of %d nodes were encoded twice: their multi-vectors had left the "
                "embedding's cache (vector_cache_mb=%s) before the store added them. Raise "
                "vector_cache_mb or lower the index's insert_batch_size.",
                evicted,
                len(nodes),
                embed_model.vector_cache_mb,
            )
        logger.debug("encoded %d of %d nodes in the store", len(missing), len(nodes))
    return torch.stack([v for v in out if v is not None])


def query_multi_vector(embed_model: MetaEmbedEmbedding, query: VectorStoreQuery) -> torch.Tensor:
    """``(R_q, D)`` multi-vector of the query (see the module docstring)."""
    text = query.query_str if query.query_str and query.query_str.strip() else None
    if query.query_embedding is None:
        if text is None:
            raise ValueError(
                "MetaEmbedVectorStore needs the query itself to build its multi-vector: a "
                "VectorStoreQuery with query_str, or a query_embedding made by the "
                "MetaEmbedEmbedding this store uses. Got neither."
            )
        return embed_model.get_query_multi_vectors([text])[0]
    vec = embed_model.lookup_multi_vector("query", query.query_embedding)
    if vec is not None:
        return vec
    if text is not None:
        fresh = embed_model.get_query_multi_vectors([text])[0]
        if _same_vector(fresh[0], query.query_embedding):
            logger.debug("query multi-vector not cached; re-encoded query_str (same vector)")
            return fresh
    raise ValueError(
        "MetaEmbedVectorStore needs the multi-vector of the query, but query_embedding "
        f"({len(query.query_embedding)} floats) was not made by this store's "
        f"MetaEmbedEmbedding for query_str {query.query_str!r}. Causes: the index's "
        "embed_model (or image_embed_model) is another model or another MetaEmbedEmbedding "
        "instance - pass the store's embedding; or an image / multi-string (HyDE) query "
        "embedding left the embedding's cache before the search (query_cache_mb="
        f"{embed_model.query_cache_mb}) - raise query_cache_mb."
    )
