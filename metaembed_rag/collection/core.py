"""``Collection``: the facade over a collection folder's parts (see the package docstring)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..budget import BudgetLike
from ..chunking import Chunking, check_options
from ..index import Filter, IndexMismatchError, MultiVectorIndex, SearchParams
from ..index.fusion import HybridFusion
from ..retriever import TwoStageRetriever
from .folder import (
    CONFIG_FILE,
    CREATING_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_DIR,
    LOCK_FILE,
    CollectionError,
    _load_model,
    _model_reference,
    _read_json,
    _write_json,
    clear_half_created,
    creatable,
)
from .indexer import Indexer
from .report import SearchResult
from .storage import open_index

__all__ = ["Collection"]

logger = logging.getLogger("metaembed_rag.collection")


class Collection(Indexer):
    """A folder of indexed documents: model reference + :class:`MultiVectorIndex` + manifest.

    Build one with :meth:`create`, :meth:`open` or :meth:`open_or_create`, never directly.

    Attributes:
        folder: the collection folder.
        index: the :class:`MultiVectorIndex` (kept in ``folder/index``, memory-mapped).
        config: the parsed ``collection.json``.
    """

    def __init__(
        self, folder: Path, config: dict[str, Any], index: MultiVectorIndex, model: Any
    ) -> None:
        self.folder = folder
        self.config = config
        self.index = index
        self._model = model
        self._files: dict[str, dict[str, Any]] = {}
        self._touched: dict[str, list[str]] = {}  # key -> chunk ids at the last commit
        self._retriever: TwoStageRetriever | None = None
        self._device: str | None = None
        self._model_arg: Any = None
        self._generation = 0

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        model: Any = None,
        *,
        device: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        model_name: str | None = None,
        storage: dict[str, Any] | None = None,
        **index_kwargs: Any,
    ) -> Collection:
        """Create an empty collection in a new or empty folder.

        Args:
            folder: where to keep it.
            model: ``None`` (the default model, :data:`metaembed_rag.model.DEFAULT_MODEL`), a
                model name or folder, or a loaded ``MetaEmbedModel``.
            device: device for a model loaded here.
            chunk_size: default chunk length for :meth:`add_paths`, in tokens of the model's
                tokenizer (in words for a model without one). ``None``: the largest chunk the
                model reads whole (:func:`~metaembed_rag.ingest.model_chunk_limit`) minus
                :data:`~metaembed_rag.ingest.TOKEN_MARGIN` (246 tokens for the default model;
                180 words without a tokenizer).
            chunk_overlap: default tokens (or words) shared by neighbouring chunks. ``None``:
                :data:`~metaembed_rag.ingest.DEFAULT_TOKEN_OVERLAP` (30 words without a
                tokenizer), or a sixth of a small ``chunk_size``.
            model_name: what to record in ``collection.json`` when ``model`` is an object
                (otherwise :meth:`open` then needs ``model=``).
            storage: keep the index in a Qdrant collection instead of the folder
                (:func:`~metaembed_rag.collection.storage.qdrant_storage`; recorded in
                ``collection.json``).
            index_kwargs: passed to :class:`MultiVectorIndex` (``dtype=``, ``coarse_vector=``...).

        Raises:
            FileExistsError: the folder already holds a collection or other files (a folder
                half-created by an interrupted ``create``, recognised by its marker, is
                finished instead).
            ValueError: bad chunking, or a ``chunk_size`` larger than the model reads whole.
        """
        root = Path(folder).expanduser()
        _check_creatable(root)
        check_options(chunk_size, chunk_overlap)  # obvious mistakes fail before the model loads
        ref = model_name or _model_reference(model)
        loaded = _load_model(model, device)
        chunking = Chunking.for_model(loaded, chunk_size, chunk_overlap)
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / LOCK_FILE), thread_local=False):
            _check_creatable(root)  # again, under the lock: another process may have won
            if clear_half_created(root):
                logger.warning("%s was left half-created by an interrupted run: finishing it", root)
            (root / CREATING_FILE).write_text("metaembed-rag collection being created\n")
            if storage is not None:
                index = open_index(root, {"storage": storage}, loaded, create=True)
            else:
                index = MultiVectorIndex.for_model(loaded, path=root / INDEX_DIR, **index_kwargs)
            index.save()
            from .. import __version__

            config = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "model": ref,
                "model_fingerprint": loaded.fingerprint(),
                "chunk_size": chunking.size,
                "chunk_overlap": chunking.overlap,
                "chunk_unit": chunking.unit,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "metaembed_rag_version": __version__,
            }
            if storage is not None:
                config["storage"] = storage
            self = cls(root, config, index, loaded)
            self._write_files()
            _write_json(root / CONFIG_FILE, config)
            (root / CREATING_FILE).unlink(missing_ok=True)
        logger.info("created collection %s (model %s)", root, ref)
        return self

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        model: Any = None,
        device: str | None = None,
        *,
        load_model: bool = True,
        storage: dict[str, Any] | None = None,
    ) -> Collection:
        """Open an existing collection.

        Args:
            folder: the collection folder.
            model: ``None`` loads the model named in ``collection.json``; or a name, folder or
                loaded ``MetaEmbedModel`` (its fingerprint must match the index).
            device: device for a model loaded here.
            load_model: ``False`` defers loading the model until it is needed (for
                :meth:`info`); the fingerprint is then checked at that point.
            storage: where a collection created with ``storage=`` finds its Qdrant
                collection now (e.g. another server URL), overriding ``collection.json``.

        Raises:
            CollectionError: no collection there, or the model does not match the index.
        """
        root = Path(folder).expanduser()
        cfg_path = root / CONFIG_FILE
        if not cfg_path.is_file():
            raise CollectionError(
                f"No collection at {root} ({CONFIG_FILE} is missing); create one with "
                f"`metaembed-rag index PATH --index {root}` or Collection.create()."
            )
        config = _read_json(cfg_path, "collection config")
        if config.get("format") != FORMAT_NAME:
            raise CollectionError(f"{cfg_path} is not a metaembed-rag collection config.")
        if config.get("format_version") != FORMAT_VERSION:
            raise CollectionError(
                f"{cfg_path} has collection format {config.get('format_version')}; this "
                f"metaembed-rag reads {FORMAT_VERSION}. Re-index the documents."
            )
        if model is None and config.get("model") is None:
            raise CollectionError(
                f"{cfg_path} records no model name (it was created with an in-memory model); "
                "pass the model: Collection.open(folder, model=...) / --model."
            )
        if storage is not None:
            if config.get("storage") is None:
                raise CollectionError(
                    f"The collection at {root} keeps its index in the folder, not in Qdrant: "
                    "leave --qdrant / --collection out."
                )
            config["storage"] = storage
        loaded = None
        if load_model:
            loaded = _load_model(config["model"] if model is None else model, device)
        index = cls._load_index(root, config, loaded, model)
        self = cls(root, config, index, loaded)
        self._device = device
        self._model_arg = model
        self._read_files()
        return self

    @classmethod
    def open_or_create(
        cls,
        folder: str | os.PathLike[str],
        model: Any = None,
        device: str | None = None,
        **create_kwargs: Any,
    ) -> Collection:
        """:meth:`open` if ``folder`` holds a collection, else :meth:`create`."""
        if (Path(folder).expanduser() / CONFIG_FILE).is_file():
            return cls.open(folder, model, device)
        return cls.create(folder, model, device=device, **create_kwargs)

    @staticmethod
    def _load_index(root: Path, config: dict[str, Any], loaded: Any, arg: Any) -> MultiVectorIndex:
        index = open_index(root, config)
        if loaded is not None:
            _check_model(root, index, loaded, config.get("model") if arg is None else arg)
        return index

    @property
    def model(self) -> Any:
        """The encoder (loaded on first use when opened with ``load_model=False``)."""
        if self._model is None:
            arg = self._model_arg
            what = self.config.get("model") if arg is None else arg
            loaded = _load_model(what, self._device)
            _check_model(self.folder, self.index, loaded, what)
            self._model = loaded
        return self._model

    @property
    def retriever(self) -> TwoStageRetriever:
        """A :class:`TwoStageRetriever` over this collection's model and index."""
        if self._retriever is None:
            self._retriever = TwoStageRetriever(self.model, self.index)
        return self._retriever

    def search(
        self,
        query: Any,
        *,
        k: int = 5,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        filter: Filter | None = None,
        hybrid: HybridFusion | None = None,
        hybrid_weight: float | None = None,
        scorer: Any = None,
    ) -> list[SearchResult]:
        """Two-stage search; exactly ``TwoStageRetriever(model, index).search(query,
        params=SearchParams(k, fetch_k, rerank_budget=budget, filter=filter, hybrid=hybrid,
        hybrid_weight=hybrid_weight, scorer=scorer))``.

        Args:
            query: text (a ``str`` is always text), or an image (``PIL.Image``, ``Path``,
                bytes) for vision-language models.
            k: results.
            budget: rerank budget ``(r_q, r_c)`` / ``"8,16"`` (default: the largest).
            fetch_k: coarse candidates (default
                :data:`~metaembed_rag.index.params.DEFAULT_FETCH_K`).
            filter: metadata filter, e.g. ``{"type": "pdf"}`` (see
                :mod:`metaembed_rag.index.filters`).
            hybrid: ``"rrf"`` or ``"weighted"``: fuse with BM25 over the query text
                (:mod:`metaembed_rag.index.hybrid`); ``hybrid_weight``: the multi-vector
                share of the weighted fusion (default 0.5).
            scorer: the exact stage's scorer (``None``: MaxSim; ``"pooled"``, a folder saved
                by ``train-scorer`` or a :class:`~metaembed_rag.scorers.Scorer`).

        Raises:
            ValueError: the collection is empty, a budget the model was not trained with
                (the message lists the valid ones), a malformed filter.
        """
        if len(self.index) == 0:
            raise ValueError(
                f"The collection at {self.folder} holds no documents; add some first "
                f"(`metaembed-rag index PATH --index {self.folder}` or add_paths)."
            )
        params = SearchParams.of(
            k, fetch_k=fetch_k, rerank_budget=budget, filter=filter, hybrid=hybrid,
            hybrid_weight=hybrid_weight, scorer=scorer,
        )  # fmt: skip
        params.check_budgets(self.index.searchable_budgets(params))  # fails before encoding
        hits = self.retriever.search(query, params=params)
        out = []
        for h in hits:
            image = h.metadata.get("image")
            img_path = None
            if image:
                img_path = Path(image)
                if not img_path.is_absolute():
                    img_path = (self.folder / img_path).resolve()
            out.append(SearchResult(h.id, h.score, h.rank, h.text, h.metadata, img_path))
        return out

    def info(self) -> dict[str, Any]:
        """What the collection holds (no model load needed)."""
        types: dict[str, int] = {}
        for e in self._files.values():
            types[e.get("type", "?")] = types.get(e.get("type", "?"), 0) + 1
        size = _folder_bytes(self.folder)
        return {
            "folder": str(self.folder),
            "model": self.config.get("model"),
            "model_fingerprint": self.index.fingerprint,
            "documents": len(self.index),
            "files": len(self._files),
            "file_types": dict(sorted(types.items())),
            "dim": self.index.dim,
            "vectors_per_document": self.index.num_vectors,
            "budgets": [str(b) for b in self.index.budgets],
            "dtype": self.index.dtype,
            "coarse_vector": self.index.coarse_vector,
            "coarse_kind": self.index.coarse_kind,
            "bytes_on_disk": size,
            "bytes_per_document": self.index.bytes_per_document,
            "chunk_size": self.config.get("chunk_size"),
            "chunk_overlap": self.config.get("chunk_overlap"),
            "chunk_unit": self.config.get("chunk_unit", "words"),
            "created": self.config.get("created"),
        }

    def __len__(self) -> int:
        """Number of chunks in the index."""
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"Collection({str(self.folder)!r}, model={self.config.get('model')!r}, "
            f"chunks={len(self.index)}, files={len(self._files)})"
        )

    def close(self) -> None:
        """Release the index's memory maps (the object is unusable afterwards)."""
        self.index.close()
        self._retriever = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_creatable(root: Path) -> None:
    if (root / CONFIG_FILE).exists():
        raise FileExistsError(
            f"{root} already holds a collection; open it (Collection.open) or choose "
            "another folder."
        )
    if not creatable(root):
        raise FileExistsError(
            f"{root} exists and is not an empty folder; choose a new or empty folder for "
            "the collection."
        )


def _check_model(root: Path, index: MultiVectorIndex, model: Any, what: Any) -> None:
    """:meth:`MultiVectorIndex.check_compatible`, as a :class:`CollectionError` naming the
    collection and the model."""
    try:
        index.check_compatible(model)
    except IndexMismatchError as exc:
        raise CollectionError(
            f"The collection at {root} was indexed with model fingerprint "
            f"{index.fingerprint!r}, but the model {what!r} has fingerprint "
            f"{model.fingerprint()!r} (another model, or its weights changed since indexing): "
            "open it with the model it was built with, or re-index the documents into a new "
            f"folder. ({exc})"
        ) from exc


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``; a file a concurrent save removes between the
    listing and its ``stat`` is not counted (it belongs to no committed state any more)."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total
