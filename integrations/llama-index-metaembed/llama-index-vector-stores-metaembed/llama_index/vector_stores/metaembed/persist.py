"""Persisting a LlamaIndex ``MetaEmbedVectorStore``: the core's
:class:`~metaembed_rag.index.settings.StoreSettings` at ``persist_path`` (LlamaIndex names it
``<persist_dir>/default__vector_store.json``) and the index directory beside it, plus the
migration of the file this package wrote before that format existed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fsspec

from metaembed_rag.frameworks.llama_index import MetaEmbedEmbedding
from metaembed_rag.index import MultiVectorIndex, SearchParams
from metaembed_rag.index.settings import StoreSettings

__all__ = ["KIND", "index_dir_of", "read_store", "write_store"]

logger = logging.getLogger("llama_index.vector_stores.metaembed.base")

#: ``StoreSettings.kind`` of a persisted store.
KIND = "MetaEmbedVectorStore/llama-index"
_OLD_FORMAT = "metaembed-vector-store"  # before metaembed-rag/settings (migrated on load)


def index_dir_of(persist_path: Path) -> Path:
    """The index directory beside ``persist_path``: ``<name>.metaembed/``."""
    return persist_path.with_name(persist_path.stem + ".metaembed")


def write_store(store: Any, path: Path, fs: fsspec.AbstractFileSystem | None) -> None:
    """:meth:`MetaEmbedVectorStore.persist` on the local filesystem: index, then settings."""
    if fs is not None and "file" not in (
        fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    ):
        raise NotImplementedError(
            f"MetaEmbedVectorStore persists to the local filesystem only, got fs "
            f"protocol {fs.protocol!r}; persist locally and copy the folder."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    index_dir = index_dir_of(path)
    with store._lock:
        store._index.save(index_dir)
        model = store._embed_model.model_name
        StoreSettings(
            kind=KIND,
            model=None if model is None else str(model),
            fingerprint=store._index.fingerprint,
            dim=store._index.dim,
            num_vectors=store._index.num_vectors,
            search=SearchParams(
                fetch_k=store.fetch_k,
                recall_budget=store.recall_budget,
                rerank_budget=store.rerank_budget,
                mode=store.mode,
            ).settings(),
            extra={
                "index_dir": index_dir.name,
                "is_embedding_query": store.is_embedding_query,
                "flat_metadata": store.flat_metadata,
            },
        ).write(path)


def read_store(
    path: Path, embed_model: MetaEmbedEmbedding
) -> tuple[MultiVectorIndex, dict[str, Any]]:
    """:meth:`MetaEmbedVectorStore.from_persist_path`: ``(index, saved settings)``."""
    settings = StoreSettings.read(path, KIND, migrate=_migrate)
    settings.check_fingerprint(
        embed_model.model.fingerprint(), str(path), "the MetaEmbedEmbedding of that model"
    )
    index_dir = path.parent / settings.extra.get("index_dir", index_dir_of(path).name)
    index = MultiVectorIndex.load(index_dir, model=embed_model.model)
    extra = {k: v for k, v in settings.extra.items() if k != "index_dir"}
    return index, {**extra, **settings.search_defaults()}


def _migrate(old: dict[str, Any]) -> dict[str, Any]:
    """``StoreSettings`` fields from a ``metaembed-vector-store`` version 1 or 2 file."""
    version = old.get("version")
    if old.get("format") != _OLD_FORMAT or version not in (1, 2):
        raise ValueError(
            f"is not a MetaEmbedVectorStore file (format {old.get('format')!r}, version "
            f"{version!r}); a newer llama-index-vector-stores-metaembed may have written it"
        )
    if version == 1:
        logger.warning(
            "format version 1 has no list-element index: 'contains' / 'any' / 'all' filters "
            "match no node added before version 2; re-add those nodes."
        )
    saved = old.get("settings", {})
    return {
        "fingerprint": old.get("fingerprint"),
        "search": {k: saved.get(k) for k in ("fetch_k", "recall_budget", "rerank_budget", "mode")},
        "extra": {
            "index_dir": old["index_dir"],
            "is_embedding_query": saved.get("is_embedding_query", True),
            "flat_metadata": saved.get("flat_metadata", False),
        },
    }
