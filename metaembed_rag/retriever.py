"""``TwoStageRetriever``: encode with a ``MetaEmbedModel``, search a ``MultiVectorIndex``.

>>> from metaembed_rag import MetaEmbedModel                       # doctest: +SKIP
>>> from metaembed_rag.retriever import TwoStageRetriever          # doctest: +SKIP
>>> model = MetaEmbedModel.from_backbone()                         # doctest: +SKIP
>>> retriever = TwoStageRetriever.create(model)                    # doctest: +SKIP
>>> retriever.add_documents(["Paris is in France.", "Cats purr."])  # doctest: +SKIP
>>> retriever.search("Where is Paris?", k=1)[0].id                 # doctest: +SKIP
'0'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Unpack, overload

import numpy as np
import torch

from .index import Hit, MultiVectorIndex
from .index.params import SearchOptions, SearchParams
from .inputs import ItemLike, item_text

__all__ = ["Hit", "TwoStageRetriever"]

logger = logging.getLogger(__name__)


class TwoStageRetriever:
    """Text or image queries in, ranked :class:`Hit` lists out.

    Args:
        model: a :class:`~metaembed_rag.MetaEmbedModel` (anything with ``encode_queries``,
            ``encode_documents``, ``fingerprint()``, ``dim`` and ``budgets``).
        index: a :class:`~metaembed_rag.index.MultiVectorIndex` built for this model.

    Raises:
        IndexMismatchError: the index was built with another model (fingerprint), dim or
            vector count; or a non-empty index has no fingerprint recorded
            (:meth:`MultiVectorIndex.check_compatible`).
    """

    def __init__(self, model: Any, index: MultiVectorIndex) -> None:
        index.check_compatible(model)
        self.model = model
        self.index = index

    @classmethod
    def create(cls, model: Any, **index_kwargs: Any) -> TwoStageRetriever:
        """A retriever with a new empty index for ``model`` (``index_kwargs`` go to
        :class:`MultiVectorIndex`, e.g. ``path=``, ``dtype=``, ``coarse_vector=``)."""
        return cls(model, MultiVectorIndex.for_model(model, **index_kwargs))

    def add_documents(
        self,
        documents: Sequence[ItemLike],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        upsert: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Encode documents with the model and add them.

        Args:
            documents: texts, images, (text, image) pairs or ``{"title", "text"}`` dicts
                (anything ``encode_documents`` takes); the text part (a title before its
                text) is stored and returned with hits.
            ids: string ids (default: consecutive numbers after the current row count).
            metadatas: optional JSON-serialisable dicts for filtering.
            upsert: replace documents whose id exists instead of raising.

        Returns:
            the ids added.
        """
        documents = list(documents)
        if ids is None:
            start = self.index.num_rows
            ids = [str(start + i) for i in range(len(documents))]
        vectors = self.model.encode_documents(
            documents, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        texts = [_text_of(d) for d in documents]
        write = self.index.upsert if upsert else self.index.add
        write(list(ids), vectors, texts, metadatas)
        return list(ids)

    @overload
    def search(
        self,
        query: ItemLike,
        k: int | None = None,
        *,
        instruction: str | None = None,
        params: SearchParams | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[Hit]: ...

    @overload
    def search(
        self,
        query: list[ItemLike],
        k: int | None = None,
        *,
        instruction: str | None = None,
        params: SearchParams | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[list[Hit]]: ...

    def search(
        self,
        query: ItemLike | list[ItemLike],
        k: int | None = None,
        *,
        instruction: str | None = None,
        params: SearchParams | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[Hit] | list[list[Hit]]:
        """Encode one query (returns ``list[Hit]``) or a list of queries (``list[list]``) and
        search: :meth:`search_vectors` on ``model.encode_queries`` output.

        ``instruction`` is put before every query text by the encoder; the search options are
        :class:`~metaembed_rag.index.params.SearchParams` (``params=`` or keywords).
        """
        single = not isinstance(query, list)
        items: list[Any] = list(query) if isinstance(query, list) else [query]
        vectors = self.model.encode_queries(items, instruction=instruction)
        texts = [_text_of(i) for i in items]
        given = None if any(t is None for t in texts) else [str(t) for t in texts]
        hits = self.search_vectors(vectors, k, params=params, texts=given, **options)
        return hits[0] if single else hits

    def search_vectors(
        self,
        vectors: torch.Tensor | np.ndarray,
        k: int | None = None,
        *,
        params: SearchParams | None = None,
        texts: Sequence[str] | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[list[Hit]]:
        """Search with query vectors already computed (``(nq, Kq, D)``, e.g. a framework's
        cached ``encode_queries`` output): one list of hits per query. ``texts`` (the queries
        as text) are needed by hybrid searches only.

        Other arguments: see :meth:`MultiVectorIndex.search`.
        """
        return self.index.search(vectors, k, params=params, texts=texts, **options)


def _text_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):  # the words the model read ("title text" when titled)
        return item_text({"text": item.get("text"), "title": item.get("title")})
    if isinstance(item, tuple) and item and isinstance(item[0], str):
        return item[0]
    return None
