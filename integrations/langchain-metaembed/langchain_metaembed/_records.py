"""The document side of the LangChain ``MetaEmbedVectorStore``: adding, deleting and reading
stored documents and their vectors (the search side is in :mod:`.vectorstores`)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from langchain_core.documents import Document
from metaembed_rag.index import MultiVectorIndex

from . import _single as single

__all__ = ["StoreRecords", "document", "reject_kwargs"]

logger = logging.getLogger(__name__)


class StoreRecords:
    """Mixin of :class:`~langchain_metaembed.MetaEmbedVectorStore`: its documents."""

    _lock: threading.RLock
    _index: MultiVectorIndex | None
    _index_kwargs: dict[str, Any]

    def _document_vectors(
        self, texts: list[str], batch_size: int | None, metas: list[dict[str, Any]], ids: list[str]
    ) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - the store implements it

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode texts and add them; an id already in the store is replaced (upsert).

        Args:
            texts: the texts.
            metadatas: one JSON-serialisable dict per text (or ``None``).
            ids: one id per text; ``None`` entries (or ``ids=None``) get a new UUID4.
            batch_size: encoding batch size (default: the embeddings' own).

        Returns:
            the ids, in the order of ``texts``.

        Raises:
            ValueError: lengths differ, duplicate ids within the call, an embedding of the
                wrong width. TypeError: metadata that is not a JSON-serialisable dict.
        """
        reject_kwargs(kwargs, "add_texts")
        texts = list(texts)
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{n} texts but {len(metadatas)} metadatas were given.")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{n} texts but {len(ids)} ids were given.")
        out_ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        if n == 0:
            return []
        metas: list[dict[str, Any]] = []
        for doc_id, m in zip(out_ids, metadatas or [{}] * n, strict=True):
            if m is not None and not isinstance(m, dict):
                raise TypeError(f"metadata of {doc_id!r} must be a dict, got {type(m).__name__}.")
            metas.append(dict(m or {}))  # a copy: the caller's dict is never stored or changed
        vectors = self._document_vectors(texts, batch_size, metas, out_ids)
        with self._lock:
            if self._index is None:
                self._index = single.new_index(vectors.shape[-1], self._index_kwargs)
            self._index.upsert(out_ids, vectors, texts, metas)
        return out_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id; unknown ids are ignored. ``ids=None`` deletes **every**
        document (LangChain's ``VectorStore.delete`` contract); ``ids=[]`` deletes none.

        On a store opened with ``load(mmap=True)`` the saved folder changes only at the next
        :meth:`save`.

        Returns:
            ``True``.
        """
        reject_kwargs(kwargs, "delete")
        if isinstance(ids, str):
            raise TypeError(f"ids must be a list of ids, not one string; wrap it: [{ids!r}].")
        with self._lock:
            if self._index is None:
                return True
            if ids is None:
                everything = self._index.ids
                self._index.delete(everything)
                logger.info("deleted all %d documents (delete() with ids=None)", len(everything))
            else:
                self._index.delete([str(i) for i in ids], missing_ok=True)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents with these ids, in the order given; unknown ids are skipped."""
        out: list[Document] = []
        with self._lock:
            if self._index is None:
                return out
            for doc_id in ids:
                if doc_id in self._index:
                    rec = self._index.get(doc_id)
                    out.append(document(doc_id, rec["text"], rec["metadata"]))
        return out

    def get_vectors(self, doc_id: str) -> torch.Tensor:
        """The stored vectors of one document: float32 ``(R_c, D)`` (``(1, D)`` in
        single-vector mode), decoded from the index's storage dtype.

        Raises:
            KeyError: the id is not in the store.
        """
        with self._lock:
            if self._index is None:
                raise KeyError(f"Document id {doc_id!r} is not in the store (it is empty).")
            return self._index.get(doc_id)["vectors"]

    def stored_vectors(self, documents: Sequence[Document]) -> list[torch.Tensor | None]:
        """For each document, its stored vectors (float32 ``(R_c, D)``, decoded from the
        storage dtype) when the store holds a document with the same ``id`` **and** the same
        text, else ``None`` (no id, unknown id, or the text changed since it was stored).

        Used by :class:`~langchain_metaembed.MetaEmbedReranker` to skip re-encoding.
        """
        out: list[torch.Tensor | None] = []
        with self._lock:
            for doc in documents:
                rec = None
                if self._index is not None and doc.id is not None and doc.id in self._index:
                    rec = self._index.get(doc.id)
                same = rec is not None and (rec["text"] or "") == doc.page_content
                out.append(rec["vectors"] if same and rec is not None else None)
        return out


def document(doc_id: str, text: str | None, metadata: dict[str, Any]) -> Document:
    return Document(id=doc_id, page_content=text or "", metadata=dict(metadata))


def reject_kwargs(kwargs: dict[str, Any], where: str) -> None:
    if kwargs:
        raise TypeError(
            f"MetaEmbedVectorStore.{where} got unexpected argument(s) {sorted(kwargs)}; see "
            "its docstring for the supported ones."
        )
