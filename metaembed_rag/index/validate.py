"""Checking what goes into a :class:`~metaembed_rag.index.MultiVectorIndex`: a batch of
documents to write and the query vectors of a search."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["DocumentBatch", "as_float_array", "check_batch", "prepare_queries"]


@dataclass(frozen=True)
class DocumentBatch:
    """Documents to store: ids, float32 ``(n, K, D)`` vectors, texts and metadata dicts."""

    ids: list[str]
    vectors: np.ndarray
    texts: list[str | None]
    metadatas: list[dict[str, Any]]


def as_float_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def check_batch(
    num_vectors: int,
    dim: int,
    ids: Sequence[str],
    vectors: Any,
    texts: Sequence[str | None] | None,
    metadatas: Sequence[dict[str, Any] | None] | None,
) -> DocumentBatch:
    """The checked batch of a write (float32 ``(n, K, D)`` vectors, metadata dicts).

    Raises:
        TypeError / ValueError: what is wrong with the batch, and what to pass instead.
    """
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of strings, not one string; wrap it: [id].")
    ids = [str(i) if not isinstance(i, str) else i for i in ids]
    arr = as_float_array(vectors)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (num_vectors, dim):
        raise ValueError(
            f"vectors must have shape (n, {num_vectors}, {dim}) for this index "
            f"(num_vectors={num_vectors}, dim={dim}); got {tuple(arr.shape)}. "
            "Encode documents with the model this index was built for."
        )
    if arr.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but {arr.shape[0]} vector sets were given.")
    if not np.isfinite(arr).all():
        raise ValueError("vectors contain NaN or infinite values.")
    seen: set[str] = set()
    dups = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"Duplicate ids within one call: {sorted(set(dups))[:5]}.")
    n = len(ids)
    texts_l: list[str | None] = [None] * n if texts is None else list(texts)
    metas_l: list[Any] = [None] * n if metadatas is None else list(metadatas)
    if len(texts_l) != n or len(metas_l) != n:
        raise ValueError(
            f"{n} ids but {len(texts_l)} texts and {len(metas_l)} metadatas were given."
        )
    clean_metas: list[dict[str, Any]] = []
    for i, m in zip(ids, metas_l, strict=True):
        if m is None:
            m = {}
        if not isinstance(m, dict):
            raise TypeError(f"metadata of {i!r} must be a dict, got {type(m).__name__}.")
        try:
            json.dumps(m)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata of {i!r} is not JSON-serialisable: {exc}") from exc
        clean_metas.append(m)
    return DocumentBatch(ids, arr, texts_l, clean_metas)


def prepare_queries(queries: Any, dim: int) -> torch.Tensor:
    """float32 CPU ``(nq, Kq, D)`` queries (one ``(Kq, D)`` query gets a batch axis)."""
    if isinstance(queries, np.ndarray):
        queries = torch.from_numpy(queries)
    if not isinstance(queries, torch.Tensor):
        raise TypeError(
            f"queries must be a (nq, Kq, D) tensor (MetaEmbedModel.encode_queries output), "
            f"got {type(queries).__name__}; use TwoStageRetriever for text or images."
        )
    q = queries.detach().to("cpu", torch.float32)
    if q.dim() == 2:
        q = q.unsqueeze(0)
    if q.dim() != 3 or q.shape[-1] != dim:
        raise ValueError(
            f"queries must have shape (nq, Kq, {dim}) for this index (dim={dim}); "
            f"got {tuple(queries.shape)}."
        )
    return q.contiguous()
