"""One persisted-settings format for everything saved beside an index.

The framework stores (LangChain, LlamaIndex) keep a small JSON file next to their saved
:class:`~metaembed_rag.index.MultiVectorIndex`: which model built it (reference and
fingerprint), the vector width, the search defaults and the chunking, plus a few
framework-specific ``extra`` values. This module owns that format: one writer (atomic, fsynced,
via :func:`~metaembed_rag.index.persist.atomic_writer`), one reader with a format-version check,
and a hook for each framework to migrate the file format it wrote before this one existed.

File (``"format": "metaembed-rag/settings"``, ``"format_version": 1``)::

    {"format", "format_version", "kind", "model", "fingerprint", "dim", "num_vectors",
     "search": {"fetch_k", "recall_budget", "rerank_budget", "mode"},
     "chunking": {...} | null, "extra": {...}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .params import SearchParams
from .persist import IndexMismatchError, read_json_object, write_json_object

__all__ = ["SETTINGS_FORMAT", "SETTINGS_VERSION", "StoreSettings"]

logger = logging.getLogger(__name__)

SETTINGS_FORMAT = "metaembed-rag/settings"
SETTINGS_VERSION = 1

#: A framework's reader of its pre-``metaembed-rag/settings`` file: old JSON -> new fields.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class StoreSettings:
    """What a saved store records beside its index.

    Attributes:
        kind: who wrote it (``"langchain-vectorstore"``, ``"llamaindex-vectorstore"``...).
        model: the model reference (a built-in name or a folder), ``None`` if unknown.
        fingerprint: ``MetaEmbedModel.fingerprint()`` of that model (``None``: not MetaEmbed).
        dim: vector width, ``None`` for an empty store that has no index yet.
        num_vectors: vectors per document.
        search: the search defaults (:meth:`SearchParams.settings`).
        chunking: chunking defaults, when the writer chunks.
        extra: framework-specific values (JSON-ready).
    """

    kind: str
    model: str | None = None
    fingerprint: str | None = None
    dim: int | None = None
    num_vectors: int | None = None
    search: dict[str, Any] = field(default_factory=dict)
    chunking: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def search_params(self, **overrides: Any) -> SearchParams:
        """The saved search defaults as :class:`SearchParams`, ``overrides`` applied."""
        return SearchParams().replace(**{**self.search, **overrides})

    def search_defaults(self, rerank_key: str = "rerank_budget") -> dict[str, Any]:
        """The saved search defaults as a store's constructor keywords (budgets parsed; the
        rerank budget under ``rerank_key``)."""
        p = self.search_params()
        return {
            "fetch_k": p.fetch_k,
            "recall_budget": p.recall_budget,
            rerank_key: p.rerank_budget,
            "mode": p.mode,
        }

    def write(self, path: str | Path) -> Path:
        """Write atomically (temporary file, fsync, rename)."""
        path = Path(path)
        data = {"format": SETTINGS_FORMAT, "format_version": SETTINGS_VERSION, **asdict(self)}
        write_json_object(path, data)
        return path

    @classmethod
    def read(
        cls,
        path: str | Path,
        kind: str,
        migrate: Migration | None = None,
        fix: str = "restore it from a backup, or save the store again",
    ) -> StoreSettings:
        """Read ``path``; a file in the writer's older format goes through ``migrate`` (it is
        rewritten in this format by the next save).

        Args:
            path: the settings file.
            kind: the kind of store expected.
            migrate: the reader of the writer's pre-``metaembed-rag/settings`` format.
            fix: what to do about a damaged file, for the error messages.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: not JSON, another kind of store, or a newer format version (the
                message names the file and ``fix``).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {path.parent} holds no saved {kind} (write one with the "
                "store's save / persist method)."
            )
        data = read_json_object(path, fix)
        if data.get("format") != SETTINGS_FORMAT:
            if migrate is None:
                raise ValueError(f"{path} is not a {kind} settings file; {fix}.")
            logger.info("%s: migrating an older settings file (the next save rewrites it)", path)
            try:
                return cls(kind=kind, **migrate(data))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} {exc}; {fix}.") from exc
        version = data.get("format_version")
        if version != SETTINGS_VERSION:
            raise ValueError(
                f"{path} has settings format version {version!r}; this metaembed-rag reads "
                f"{SETTINGS_VERSION}: upgrade metaembed-rag."
            )
        if data.get("kind") != kind:
            raise ValueError(
                f"{path} holds the settings of a {data.get('kind')!r}, not a {kind!r}; {fix}."
            )
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def check_fingerprint(self, fingerprint: str, where: str, hint: str) -> None:
        """A saved multi-vector store opens only with the model it was built with.

        Raises:
            IndexMismatchError: another fingerprint (the message names the saved model and
                ``hint``, how to build the right one).
        """
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            raise IndexMismatchError(
                f"The store at {where} was built with MetaEmbed model {self.model!r} (model "
                f"fingerprint {self.fingerprint}), but the model given has fingerprint "
                f"{fingerprint}: its vectors are not comparable with this model's. Open it "
                f"with {hint}, or rebuild the store with this model."
            )
