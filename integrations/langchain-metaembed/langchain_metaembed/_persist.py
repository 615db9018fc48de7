"""Saving and opening a LangChain ``MetaEmbedVectorStore``: the core's
:class:`~metaembed_rag.index.settings.StoreSettings` beside a saved ``MultiVectorIndex``, and
the migration of the settings file langchain-metaembed wrote before that format existed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from metaembed_rag.index import DEFAULT_FETCH_K, MultiVectorIndex, SearchParams
from metaembed_rag.index.settings import StoreSettings

from . import _single as single
from .embeddings import MetaEmbedEmbeddings

__all__ = ["CONFIG_NAME", "INDEX_DIR", "KIND", "read_store", "save_store"]

#: The store's settings file inside a saved folder (the index itself is in ``INDEX_DIR``).
CONFIG_NAME = "langchain_metaembed.json"
INDEX_DIR = "index"
#: ``StoreSettings.kind`` of a saved store.
KIND = "MetaEmbedVectorStore/langchain"
_OLD_FORMAT = "langchain-metaembed/vectorstore"  # before metaembed-rag/settings (migrated)


def save_store(store: Any, folder: str | os.PathLike[str]) -> Path:
    """:meth:`MetaEmbedVectorStore.save`: the index, then the settings (last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with store._lock:
        if store._index is not None:
            store._index.save(folder / INDEX_DIR)
        defaults = SearchParams(
            fetch_k=store.fetch_k,
            recall_budget=store.recall_budget,
            rerank_budget=store.budget,
            mode=store.mode,
        )
        StoreSettings(
            kind=KIND,
            model=_model_name(store._embedding),
            fingerprint=store._meta.fingerprint() if store.is_multivector else None,
            dim=None if store._index is None else store._index.dim,
            num_vectors=None if store._index is None else store._index.num_vectors,
            search=defaults.settings(),
            extra={
                "vectors": "multi" if store.is_multivector else "single",
                "embedding_class": _class_name(store._embedding),
                "has_index": store._index is not None,
                "title_key": store.title_key,
            },
        ).write(folder / CONFIG_NAME)
    return folder


def read_store(
    folder: str | os.PathLike[str],
    embedding: Embeddings,
    mmap: bool,
    verify: bool,
    allow_other_embeddings: bool,
) -> tuple[MultiVectorIndex | None, dict[str, Any]]:
    """:meth:`MetaEmbedVectorStore.load`: checks, then ``(index, saved search defaults)``."""
    folder = Path(folder)
    fix = (
        "it is written last and atomically by store.save(folder), so it was changed or damaged "
        "after saving: restore it from a backup, or reopen the index it describes with "
        f"MetaEmbedVectorStore(embeddings, index=MultiVectorIndex.load({str(folder / INDEX_DIR)!r}))"
        " and save that store again"
    )
    settings = StoreSettings.read(folder / CONFIG_NAME, KIND, migrate=_migrate, fix=fix)
    vectors = settings.extra.get("vectors")
    multi = isinstance(embedding, MetaEmbedEmbeddings)
    if (vectors == "multi") != multi:
        raise ValueError(
            f"{folder} holds a {vectors}-vector store but {type(embedding).__name__} was "
            "given; open it with "
            + (
                f"{_open_hint(settings.model)}, the model it was built with."
                if vectors == "multi"
                else f"the embeddings it was built with ({settings.extra.get('embedding_class')})."
            )
        )
    if multi:
        settings.check_fingerprint(embedding.fingerprint(), str(folder), _open_hint(settings.model))  # type: ignore[attr-defined]
    else:
        _check_saved_embeddings(folder, settings, embedding, allow_other_embeddings)
    index = None
    if settings.extra.get("has_index"):
        index = MultiVectorIndex.load(
            folder / INDEX_DIR,
            mmap=mmap,
            verify=verify,
            model=embedding.client if multi else None,  # type: ignore[attr-defined]
            dim=settings.dim,
        )
    defaults = settings.search_defaults(rerank_key="budget")
    if settings.extra.get("title_key"):
        defaults["title_key"] = settings.extra["title_key"]
    return index, defaults


def _migrate(old: dict[str, Any]) -> dict[str, Any]:
    """``StoreSettings`` fields from a ``langchain-metaembed/vectorstore`` v1 file."""
    if old.get("format") != _OLD_FORMAT or old.get("format_version") != 1:
        raise ValueError(
            f"is not a {_OLD_FORMAT} v1 file (format={old.get('format')!r}, "
            f"version={old.get('format_version')!r}) nor a {KIND} settings file"
        )
    if old.get("mode") not in ("multi", "single"):
        raise ValueError(f"has mode={old.get('mode')!r}, not 'multi' or 'single'")
    search = old.get("search", {})
    return {
        "model": old.get("model_name"),
        "fingerprint": old.get("fingerprint"),
        "dim": old.get("dim"),
        "num_vectors": old.get("num_vectors"),
        "search": {
            "fetch_k": search.get("fetch_k", DEFAULT_FETCH_K),
            "recall_budget": search.get("recall_budget"),
            "rerank_budget": search.get("budget"),
            "mode": search.get("mode", "two_stage"),
        },
        "extra": {
            "vectors": old.get("mode"),
            "embedding_class": old.get("embedding_class"),
            "has_index": old.get("has_index"),
        },
    }


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _model_name(embedding: Embeddings) -> str | None:
    """The embeddings' model name when they expose one as a string (``model_name`` or
    ``model``, as most LangChain embeddings do), else ``None``."""
    for attr in ("model_name", "model"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str):
            return value
    return None


def _open_hint(model_name: str | None) -> str:
    """How to build the embeddings of a saved model name, for error messages."""
    if model_name is None or model_name.startswith("in-memory:"):
        return "MetaEmbedEmbeddings(client=<the MetaEmbedModel it was built with>)"
    return f"MetaEmbedEmbeddings(model={model_name!r})"


def _check_saved_embeddings(
    folder: Path, settings: StoreSettings, emb: Embeddings, allow_other: bool
) -> None:
    """A single-vector store opens with the embeddings it was built with: same class and model
    name (unless ``allow_other``) and always the same vector width (one probe call)."""
    saved_cls, given_cls = settings.extra.get("embedding_class"), _class_name(emb)
    saved_model, given_model = settings.model, _model_name(emb)
    if not allow_other and (saved_cls != given_cls or saved_model != given_model):
        raise ValueError(
            f"The store at {folder} was built with {saved_cls} (model {saved_model!r}), but "
            f"{given_cls} (model {given_model!r}) was given: vectors of different embeddings "
            "are not comparable. Open it with the embeddings it was built with; if these "
            "produce the same vectors (e.g. a caching wrapper around the same model), pass "
            "allow_other_embeddings=True."
        )
    width = settings.dim
    if width is None:  # an empty store: nothing to compare yet
        return
    single.check_width(emb, len(emb.embed_query("width check")), "embed_query", width)
