"""``Collection``: a folder holding a model reference, a :class:`MultiVectorIndex` and a file
manifest, so documents can be indexed incrementally and searched by name.

Folder layout::

    collection.json    format, model name or path, model fingerprint, chunking defaults
                       (``chunk_size`` / ``chunk_overlap`` in ``chunk_unit``: ``tokens`` of the
                       model's tokenizer, or ``words`` for a model without one; updated when
                       add_paths is given other chunking; written last at creation: a folder
                       without it is not a collection)
    files.json         the file manifest: per source file its sha256, size, chunk ids and the
                       chunking used; plus "pending" entries during a save (see below)
    index/             the MultiVectorIndex (its own atomic manifest and checksums)
    pages/             PDF pages rendered to PNG (only with pdf_page_images=True)

Crash safety. A save ("commit") writes ``files.json`` with the new manifest *and* a
``pending`` list of every file touched since the last commit (its chunk ids before and
after), then saves the index atomically, then rewrites ``files.json`` without ``pending``.
Whatever step an interruption hits, the next :meth:`Collection.open` finds a loadable index;
if ``pending`` is present it deletes those files' chunks (old and new ids) and drops them
from the manifest, so they are simply re-indexed by the next :meth:`Collection.add_paths`.
Files finished before the last completed commit are never re-encoded.

>>> from metaembed_rag.collection import Collection                     # doctest: +SKIP
>>> col = Collection.open_or_create("my-index")                         # doctest: +SKIP
>>> print(col.add_paths(["examples/sample_docs"]).summary())            # doctest: +SKIP
>>> col.search("What is a retrieval budget?", k=3)[0].metadata["source"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .budget import BudgetLike
from .index import Filter, IndexMismatchError, MultiVectorIndex, SearchParams
from .index.persist import atomic_writer, fsync_dir, sha256_file
from .ingest import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_OVERLAP,
    TOKEN_MARGIN,
    Chunk,
    IngestError,
    check_chunking,
    count_tokens,
    discover_files,
    file_type,
    load_file,
    model_chunk_limit,
    model_tokenizer,
)
from .retriever import TwoStageRetriever

__all__ = ["Collection", "IngestReport", "SearchResult", "CollectionError"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "metaembed-rag-collection"
FORMAT_VERSION = 1
CONFIG_FILE = "collection.json"
FILES_FILE = "files.json"
INDEX_DIR = "index"
LOCK_FILE = ".lock"
PAGES_DIR = "pages"
#: Chunks encoded per ``encode_documents`` call (bounds the float32 vectors held in RAM:
#: 4096 x 64 x 384 x 4 bytes = 400 MB for the default model).
ENCODE_BLOCK = 4096
#: During big runs, commit at the next file boundary after this many new chunks ...
SAVE_EVERY_CHUNKS = 2000
#: ... or after this many seconds.
SAVE_EVERY_SECONDS = 300.0
#: File names listed in a report summary line before "and N more".
SUMMARY_NAMES = 5
#: Chunking recorded per file in the manifest, with the value meant when an entry (written by
#: an older version) lacks it.
_PARAM_DEFAULTS: dict[str, Any] = {"chunk_unit": "words", "pdf_page_images": False}


class CollectionError(ValueError):
    """A folder is not a usable collection (missing, not a collection, wrong model)."""


@dataclass
class SearchResult:
    """One hit of :meth:`Collection.search`.

    Attributes:
        id: the chunk id.
        score: MaxSim score at the search budget (a sum over query vectors).
        rank: 0-based position (as :class:`~metaembed_rag.index.Hit`).
        text: the chunk text, or ``None`` for an image chunk.
        metadata: the chunk metadata (``source``, ``type``, ``page``, ``chunk``, ``title``...).
        image: the image file of an image chunk (absolute path), else ``None``.
    """

    id: str
    score: float
    rank: int
    text: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    image: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``image`` as a string or ``None``)."""
        return {
            "id": self.id, "score": self.score, "rank": self.rank, "text": self.text,
            "metadata": self.metadata, "image": None if self.image is None else str(self.image),
        }  # fmt: skip


def _names(names: Sequence[str], limit: int = SUMMARY_NAMES) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class IngestReport:
    """What :meth:`Collection.add_paths` did.

    Attributes:
        files_added / files_updated / files_unchanged: file counts (updated = content or
            chunking changed, old chunks deleted and the file re-indexed).
        chunks_added / chunks_deleted: chunk counts.
        skipped: ``(file, reason)`` for every file that could not be indexed.
        seconds: wall time of the call.
        files_ignored: files of unsupported types found inside folders (not indexed).
        files_removed: indexed files gone from a folder being indexed, whose chunks were
            deleted (``prune=True``).
        ignored: the names of the ``files_ignored`` files.
        removed: the names of the ``files_removed`` files.
        bad_records: ``("<file>:<line>", reason)`` for every malformed JSONL record skipped
            (the file's other records are indexed).
        chunks_truncated: chunks longer than the model reads (``max_tokens``), truncated when
            encoded (JSONL records are never split; a chunked text only for a single huge word).
        truncated_files: the files holding those chunks.
        max_tokens: the most tokens of a chunk the model encodes (``None``: no tokenizer).
    """

    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    chunks_added: int = 0
    chunks_deleted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    files_ignored: int = 0
    files_removed: int = 0
    ignored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bad_records: list[tuple[str, str]] = field(default_factory=list)
    chunks_truncated: int = 0
    truncated_files: list[str] = field(default_factory=list)
    max_tokens: int | None = None

    @property
    def ok(self) -> bool:
        """True when no file was skipped."""
        return not self.skipped

    @property
    def files_indexed(self) -> int:
        """Files now in the collection from this run: added, updated or already unchanged."""
        return self.files_added + self.files_updated + self.files_unchanged

    def summary(self) -> str:
        """A few short lines for people: counts first, then what needs attention."""
        lines = [
            f"Indexed {_plural(self.files_added, 'new file')}, {self.files_updated} changed, "
            f"{self.files_unchanged} unchanged, {self.files_removed} removed: "
            f"{self.chunks_added} chunks added, {self.chunks_deleted} deleted, "
            f"in {self.seconds:.1f} s."
        ]
        if self.skipped:
            names = _names([name for name, _ in self.skipped])
            lines.append(f"Skipped {len(self.skipped)} unreadable file(s): {names}.")
        if self.bad_records:
            where = _names([w for w, _ in self.bad_records])
            lines.append(f"Skipped {len(self.bad_records)} malformed JSONL record(s): {where}.")
        if self.files_ignored:
            lines.append(
                f"Ignored {self.files_ignored} file(s) of unsupported types: "
                f"{_names(self.ignored)}."
            )
        if self.chunks_truncated:
            lines.append(
                f"Truncated {self.chunks_truncated} chunk(s) longer than the {self.max_tokens} "
                f"tokens the model reads, in {_names(self.truncated_files)} (JSONL records "
                "are never split: split long records into several)."
            )
        return "\n".join(lines)


def _display(path: Path) -> str:
    """The name a file gets in chunk ids: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_writer(path) as f:
        f.write((json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    fsync_dir(path.parent)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CollectionError(f"{path}: cannot read the {what} ({exc}).") from exc
    if not isinstance(data, dict):
        raise CollectionError(f"{path}: the {what} is not a JSON object.")
    return data


def _model_reference(model: Any) -> str | None:
    """What ``collection.json`` records for a model argument (a name or an absolute path)."""
    if model is None:
        from .model import DEFAULT_MODEL

        return DEFAULT_MODEL
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else str(model)
    return None


def _load_model(model: Any, device: str | None) -> Any:
    """A loaded model as is; a name, folder or ``None`` (the default) through the process-wide
    cache of :func:`metaembed_rag.hub.load_model`."""
    if model is None or isinstance(model, (str, os.PathLike)):
        from .hub import load_model

        return load_model(model, device)
    return model


def _check_token_limit(size: int, limit: int | None, model: Any) -> None:
    if limit is not None and size > limit:
        max_length = int(model.config.max_length)
        raise ValueError(
            f"chunk_size {size} is more tokens than the model reads ({limit}: its max_length "
            f"{max_length} minus {max_length - limit} it adds around a document); use "
            f"--chunk-size / chunk_size <= {limit}."
        )


def _default_chunking(
    model: Any, chunk_size: int | None, chunk_overlap: int | None
) -> tuple[str, int, int]:
    """``(unit, size, overlap)`` for a new collection on ``model`` (see :meth:`Collection.create`)."""
    limit = model_chunk_limit(model)
    if limit is None:
        unit, default_size, default_overlap = "words", DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP
    else:
        unit, default_size = "tokens", max(1, limit - TOKEN_MARGIN)
        default_overlap = DEFAULT_TOKEN_OVERLAP
    size = default_size if chunk_size is None else chunk_size
    overlap = chunk_overlap
    if overlap is None:  # the default overlap, if it fits the chunk size
        overlap = default_overlap if size > 4 * default_overlap else size // 6
    check_chunking(size, overlap)
    if unit == "tokens":
        _check_token_limit(size, limit, model)
    return unit, int(size), int(overlap)


def _writes(method: Any) -> Any:
    """Run a method that changes the collection under its writer lock."""

    @functools.wraps(method)
    def wrapper(self: Collection, *args: Any, **kwargs: Any) -> Any:
        with self._write_lock():
            return method(self, *args, **kwargs)

    return wrapper


class Collection:
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

    # ------------------------------------------------------------------ construction
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
            index_kwargs: passed to :class:`MultiVectorIndex` (``dtype=``, ``coarse_vector=``...).

        Raises:
            FileExistsError: the folder already holds a collection or other files.
            ValueError: bad chunking, or a ``chunk_size`` larger than the model reads whole.
        """
        root = Path(folder).expanduser()
        if (root / CONFIG_FILE).exists():
            raise FileExistsError(
                f"{root} already holds a collection; open it (Collection.open) or choose "
                "another folder."
            )
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(
                f"{root} exists and is not an empty folder; choose a new or empty folder for "
                "the collection."
            )
        if chunk_size is not None:  # obvious mistakes fail before the model loads
            check_chunking(chunk_size, 0 if chunk_overlap is None else chunk_overlap)
        ref = model_name or _model_reference(model)
        loaded = _load_model(model, device)
        unit, size, overlap = _default_chunking(loaded, chunk_size, chunk_overlap)
        root.mkdir(parents=True, exist_ok=True)
        index = MultiVectorIndex.for_model(loaded, path=root / INDEX_DIR, **index_kwargs)
        index.save()
        from . import __version__

        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": ref,
            "model_fingerprint": loaded.fingerprint(),
            "chunk_size": size,
            "chunk_overlap": overlap,
            "chunk_unit": unit,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "metaembed_rag_version": __version__,
        }
        self = cls(root, config, index, loaded)
        self._write_files()
        _write_json(root / CONFIG_FILE, config)
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
    ) -> Collection:
        """Open an existing collection.

        Args:
            folder: the collection folder.
            model: ``None`` loads the model named in ``collection.json``; or a name, folder or
                loaded ``MetaEmbedModel`` (its fingerprint must match the index).
            device: device for a model loaded here.
            load_model: ``False`` defers loading the model until it is needed (for
                :meth:`info`); the fingerprint is then checked at that point.

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
        try:
            return MultiVectorIndex.load(root / INDEX_DIR, model=loaded)
        except IndexMismatchError as exc:
            what = config.get("model") if arg is None else arg
            fp = loaded.fingerprint() if loaded is not None else "?"
            raise CollectionError(
                f"The collection at {root} was indexed with model fingerprint "
                f"{config.get('model_fingerprint')!r}, but the model {what!r} has fingerprint "
                f"{fp!r} (another model, or its weights changed since indexing): open it with "
                "the model it was built with, or re-index the documents into a new folder."
            ) from exc

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> Any:
        """The encoder (loaded on first use when opened with ``load_model=False``)."""
        if self._model is None:
            arg = self._model_arg
            loaded = _load_model(self.config.get("model") if arg is None else arg, self._device)
            if loaded.fingerprint() != self.index.fingerprint:
                raise CollectionError(
                    f"The collection at {self.folder} was indexed with model fingerprint "
                    f"{self.index.fingerprint!r}, but the model has {loaded.fingerprint()!r}: "
                    "open it with the model it was built with, or re-index into a new folder."
                )
            self._model = loaded
        return self._model

    @property
    def retriever(self) -> TwoStageRetriever:
        """A :class:`TwoStageRetriever` over this collection's model and index."""
        if self._retriever is None:
            self._retriever = TwoStageRetriever(self.model, self.index)
        return self._retriever

    # ------------------------------------------------------------------ manifest
    def _write_files(self, pending: dict[str, dict[str, list[str]]] | None = None) -> None:
        data = {"format": "metaembed-rag-files", "format_version": 1, "files": self._files,
                "pending": pending or {}, "generation": self._generation}  # fmt: skip
        _write_json(self.folder / FILES_FILE, data)

    def _disk_generation(self) -> int:
        path = self.folder / FILES_FILE
        data = _read_json(path, "file manifest") if path.exists() else {}
        return int(data.get("generation", 0))

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the collection's writer lock (``.lock``, POSIX ``flock``; waits for another
        writer). If another process committed since this object loaded its state, the state
        is reloaded first, so no commit is lost."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("waiting for another process writing to %s", self.folder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if self._disk_generation() != self._generation:
                self._reload()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _reload(self) -> None:
        logger.info("%s changed on disk: reloading", self.folder)
        self.index.close()
        self.index = MultiVectorIndex.load(self.folder / INDEX_DIR, model=self._model)
        self._retriever = None
        self._touched.clear()
        self._read_files(repair=False)

    def _try_lock(self) -> int | None:
        """The writer lock if free right now (a file descriptor to close), else ``None``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            return -1
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _read_files(self, repair: bool = True) -> None:
        path = self.folder / FILES_FILE
        data = _read_json(path, "file manifest") if path.exists() else {}
        self._files = dict(data.get("files") or {})
        self._generation = int(data.get("generation", 0))
        pending = data.get("pending") or {}
        if not pending or not repair:
            return
        try:
            fd = self._try_lock()
        except OSError:  # read-only folder
            fd = -1
        if fd is None:  # another process is saving right now: its pending entries are live
            return
        try:
            self._repair(pending)
        finally:
            if fd >= 0:
                os.close(fd)

    def _repair(self, pending: dict[str, Any]) -> None:
        logger.warning(
            "%s: the last save of %d file(s) was interrupted; their chunks are removed and "
            "they will be re-indexed by the next add_paths / `metaembed-rag index`.",
            self.folder, len(pending),
        )  # fmt: skip
        for key, ids in pending.items():
            stale = set(ids.get("old", [])) | set(ids.get("new", []))
            self.index.delete(sorted(stale), missing_ok=True)
            self._touched.setdefault(key, list(ids.get("old", [])))
            self._files.pop(key, None)
        try:
            self.commit()
        except OSError as exc:  # read-only folder: keep the repaired state in memory
            logger.warning("could not save the repaired collection %s: %s", self.folder, exc)

    def commit(self) -> None:
        """Save the index and the manifest (crash-safe; see the module docstring)."""
        self._generation += 1
        pending = {
            key: {"old": old, "new": list(self._files.get(key, {}).get("chunks", []))}
            for key, old in self._touched.items()
        }
        if pending:
            self._write_files(pending)
        self.index.save()
        self._write_files()
        self._touched.clear()

    def _touch(self, key: str) -> None:
        if key not in self._touched:
            self._touched[key] = list(self._files.get(key, {}).get("chunks", []))

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """The manifest: absolute path -> ``{"source", "sha256", "size", "type", "chunks", ...}``."""
        return {k: dict(v) for k, v in self._files.items()}

    # ------------------------------------------------------------------ adding
    def _encode_add(self, chunks: Sequence[Chunk], batch_size: int, bar: Any | None = None) -> None:
        """Encode chunks and add them to the index, at most ~:data:`ENCODE_BLOCK` per call.

        The vectors are bitwise those of one ``encode_documents(all chunks)`` call: a file that
        needs several blocks is first put in the order ``encode_documents`` batches in (text
        before images, longest text first; stable), and blocks are whole batches, so every
        batch holds the same inputs (hence the same padding) as in the single call. Rows are
        then added in that order instead of document order (it only matters for exact ties).
        """
        block_size = max(1, -(-ENCODE_BLOCK // batch_size)) * batch_size
        if len(chunks) > block_size:
            chunks = sorted(chunks, key=lambda c: (c.image is not None, -len(c.text or "")))
        for start in range(0, len(chunks), block_size):
            block = chunks[start : start + block_size]
            items: list[Any] = []
            for c in block:
                if c.image is not None and c.text is not None:
                    items.append((c.text, c.image))
                elif c.image is not None:
                    items.append(c.image)
                else:
                    items.append(c.text)
            vectors = self.model.encode_documents(
                items, batch_size=batch_size, show_progress_bar=False
            )
            self.index.add(
                [c.id for c in block],
                vectors,
                [c.text for c in block],
                [self._stored_meta(c) for c in block],
            )
            if bar is not None:
                bar.update(len(block))

    def _stored_meta(self, chunk: Chunk) -> dict[str, Any]:
        meta = dict(chunk.metadata)
        image = meta.get("image")
        if image:  # images inside the collection folder are stored relative to it
            with contextlib.suppress(ValueError):
                meta["image"] = Path(image).resolve().relative_to(self.folder.resolve()).as_posix()
        return meta

    @_writes
    def add_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        pdf_page_images: bool = False,
        progress: bool = True,
        batch_size: int = 32,
        prune: bool = True,
    ) -> IngestReport:
        """Index files and folders; only new or changed files are (re-)encoded.

        Files are tracked by absolute path and sha256; a changed file (or one indexed with
        other chunking) has its old chunks deleted and is indexed again. A file that cannot be
        read or encoded is skipped and listed in the report, never aborting the run. The
        collection is saved at the end, every :data:`SAVE_EVERY_CHUNKS` chunks /
        :data:`SAVE_EVERY_SECONDS` seconds at file boundaries, and on ``KeyboardInterrupt``
        (finished files are kept, then the interrupt is re-raised).

        Args:
            paths: files and folders (folders recursively; hidden and unsupported files in
                them are left out, and so is the collection's own folder).
            chunk_size: tokens per chunk (``config["chunk_unit"]``: words for a model
                without a tokenizer; default: the collection's). A value other than the
                collection's is saved as its new default, and files indexed with other
                chunking are re-indexed.
            chunk_overlap: tokens (or words) shared by neighbouring chunks (default: the
                collection's; saved likewise).
            pdf_page_images: also index each PDF page as an image (vision-language models).
            progress: show progress bars (stderr).
            batch_size: encoding batch size.
            prune: delete the chunks of indexed files that are gone from the folders in
                ``paths`` (deleted or renamed; counted in ``files_removed``). Files indexed
                from other folders are never touched.

        Raises:
            FileNotFoundError: a path does not exist (checked before anything is indexed).
            ValueError: bad chunking (or a ``chunk_size`` larger than the model reads whole),
                or ``pdf_page_images`` with a text-only model.
        """
        t0 = time.perf_counter()
        size = self.config["chunk_size"] if chunk_size is None else chunk_size
        overlap = self.config["chunk_overlap"] if chunk_overlap is None else chunk_overlap
        if chunk_overlap is None and isinstance(size, int) and overlap >= size:
            overlap = size // 6  # the default overlap does not fit a small chunk_size
        check_chunking(size, overlap)
        unit = self.config.get("chunk_unit", "words")
        if unit == "tokens" and chunk_size is not None:
            _check_token_limit(size, model_chunk_limit(self.model), self.model)
        if pdf_page_images and not self.model.supports_images:
            raise ValueError(
                "pdf_page_images / --pdf-images needs a vision-language model (Qwen2-VL, "
                f"Idefics3, ...); this collection's model ({self.config.get('model')}) reads "
                "text only."
            )
        args = list(paths)
        files, ignored = discover_files(args, exclude=self.folder)  # raises for missing paths
        report = IngestReport(files_ignored=len(ignored), ignored=[_display(p) for p in ignored])
        if (size, overlap) != (self.config["chunk_size"], self.config["chunk_overlap"]):
            # the next run without chunking options keeps these (and does not re-chunk back)
            self.config.update(chunk_size=size, chunk_overlap=overlap)
            _write_json(self.folder / CONFIG_FILE, self.config)
        params = {"chunk_size": size, "chunk_overlap": overlap, "chunk_unit": unit,
                  "pdf_page_images": pdf_page_images}  # fmt: skip
        if prune:
            self._prune(args, report)
        since_save, last_save = 0, time.monotonic()
        owner = {cid: key for key, e in self._files.items() for cid in e.get("chunks", [])}
        bar = tqdm(files, desc="Indexing", unit="file", disable=not progress)
        try:
            for path in bar:
                key = str(path.resolve())
                display = _display(path)
                bar.set_postfix_str(display[-40:], refresh=False)
                added = self._add_file(path, key, display, params, owner, report, batch_size,
                                       progress)  # fmt: skip
                since_save += added
                if since_save >= SAVE_EVERY_CHUNKS or (
                    since_save and time.monotonic() - last_save >= SAVE_EVERY_SECONDS
                ):
                    self.commit()
                    since_save, last_save = 0, time.monotonic()
        except KeyboardInterrupt:
            bar.close()
            if self._touched:
                logger.warning("interrupted: saving the files finished so far")
                self.commit()
            raise
        bar.close()
        if self._touched:  # nothing changed: leave the files on disk alone
            self.commit()
        report.seconds = time.perf_counter() - t0
        return report

    @property
    def _tokenizer(self) -> Any | None:
        """The model's tokenizer, to chunk by (``None`` when it has none)."""
        return model_tokenizer(self.model)

    @functools.cached_property
    def _max_tokens(self) -> int | None:
        return model_chunk_limit(self.model)

    def _count_truncated(self, chunks: list[Chunk], display: str, report: IngestReport) -> None:
        """Count the text chunks longer than the model reads (it truncates them)."""
        tokenizer, limit = self._tokenizer, self._max_tokens
        if tokenizer is None or limit is None:
            return
        report.max_tokens = limit
        texts = [c.text for c in chunks if c.text and c.image is None]
        over = sum(n > limit for n in count_tokens(texts, tokenizer))
        if over:
            report.chunks_truncated += over
            report.truncated_files.append(display)

    def _prune(self, args: Sequence[str | os.PathLike[str]], report: IngestReport) -> None:
        """Drop manifest entries (and chunks) of files gone from the folders in ``args``."""
        folders = [Path(a).expanduser().resolve() for a in args if Path(a).expanduser().is_dir()]
        gone = [
            key
            for key in self._files
            if any(Path(key).is_relative_to(f) for f in folders) and not Path(key).exists()
        ]
        for key in sorted(gone):
            self._touch(key)  # an interrupted save then drops them as well: never half-done
            entry = self._files.pop(key)
            chunks = entry.get("chunks", [])
            report.chunks_deleted += self.index.delete(chunks, missing_ok=True)
            report.files_removed += 1
            report.removed.append(str(entry.get("source", key)))
            logger.info("%s is gone: its %d chunk(s) were removed", key, len(chunks))

    def _add_file(
        self,
        path: Path,
        key: str,
        display: str,
        params: dict[str, Any],
        owner: dict[str, str],
        report: IngestReport,
        batch_size: int,
        progress: bool,
    ) -> int:
        """Index one file; returns the number of chunks added (0 if unchanged or skipped)."""
        if key not in self._files:
            self._adopt_moved(key, display, owner)
        prev = self._files.get(key)
        try:
            digest = sha256_file(path)
            stat = path.stat()
        except OSError as exc:
            report.skipped.append((display, f"cannot read the file ({exc.strerror or exc})"))
            return 0
        if (
            prev
            and prev.get("sha256") == digest
            and all(prev.get(k, _PARAM_DEFAULTS.get(k)) == v for k, v in params.items())
        ):
            report.files_unchanged += 1
            return 0
        try:
            kind = file_type(path)
            if kind == "image" and not self.model.supports_images:
                raise IngestError(
                    f"{display}: image files need a vision-language model; this collection's "
                    f"model ({self.config.get('model')}) reads text only"
                )
            tokenizer = self._tokenizer if params["chunk_unit"] == "tokens" else None
            bad_lines: list[str] = []
            chunks = load_file(
                path, chunk_size=params["chunk_size"], chunk_overlap=params["chunk_overlap"],
                pdf_page_images=params["pdf_page_images"], source=display,
                image_dir=self.folder / PAGES_DIR, tokenizer=tokenizer, errors=bad_lines,
            )  # fmt: skip
        except (IngestError, ImportError, OSError) as exc:
            reason = str(exc)
            for prefix in (f"{path}: ", f"{display}: "):  # the report already names the file
                reason = reason.removeprefix(prefix)
            report.skipped.append((display, reason))
            return 0
        for line in bad_lines:  # "<path>:<line>: reason" -> ("<display>:<line>", reason)
            where, _, reason = line.removeprefix(f"{path}:").partition(": ")
            report.bad_records.append((f"{display}:{where}", reason))
        self._count_truncated(chunks, display, report)
        old_ids = set(prev.get("chunks", [])) if prev else set()
        taken = [c.id for c in chunks if owner.get(c.id, key) != key]
        if taken:
            other = self._files.get(owner[taken[0]], {}).get("source", owner[taken[0]])
            report.skipped.append((display, f"{len(taken)} chunk id(s) such as {taken[0]!r} are "
                                   f"already used by {other}; give the records unique ids"))  # fmt: skip
            return 0
        self._touch(key)
        if old_ids:
            report.chunks_deleted += self.index.delete(sorted(old_ids), missing_ok=True)
            for cid in old_ids:
                owner.pop(cid, None)
        self._files.pop(key, None)
        inner = None
        if progress and len(chunks) > 4 * batch_size:
            inner = tqdm(total=len(chunks), desc=f"  {display[-30:]}", unit="chunk", leave=False)
        try:
            self._encode_add(chunks, batch_size, inner)
        except (ValueError, TypeError, OSError, ImportError) as exc:
            self.index.delete([c.id for c in chunks], missing_ok=True)
            dropped = " (its previously indexed version was removed)" if prev else ""
            report.skipped.append((display, f"encoding failed: {exc}{dropped}"))
            return 0
        except KeyboardInterrupt:
            self.index.delete([c.id for c in chunks], missing_ok=True)
            raise
        finally:
            if inner is not None:
                inner.close()
        ids = [c.id for c in chunks]
        self._files[key] = {
            "source": display, "sha256": digest, "size": stat.st_size, "type": kind,
            "chunks": ids, "indexed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **params,
        }  # fmt: skip
        for cid in ids:
            owner[cid] = key
        if prev:
            report.files_updated += 1
        else:
            report.files_added += 1
        report.chunks_added += len(ids)
        return len(ids)

    def _adopt_moved(self, key: str, display: str, owner: dict[str, str]) -> None:
        """Re-key the manifest entry indexed under the same source name from another path.

        Chunk ids derive from the source name (the path relative to the working directory),
        so a checkout moved or cloned elsewhere, indexed from its own root, names the same
        chunks. The old entry is taken over by the new path; its chunks stay if the content
        is unchanged and are replaced otherwise (the caller compares sha256 as usual).
        """
        old_key = next((k for k, e in self._files.items() if e.get("source") == display), None)
        if old_key is None:
            return
        if Path(old_key).exists():
            logger.warning("%s was indexed from %s; it is now tracked from %s instead",
                           display, old_key, key)  # fmt: skip
        else:
            logger.info("%s moved from %s to %s", display, old_key, key)
        self._touch(old_key)  # an interrupted save then drops these chunks (re-indexed later)
        entry = self._files.pop(old_key)
        self._files[key] = entry
        self._touch(key)
        for cid in entry.get("chunks", []):
            owner[cid] = key

    @_writes
    def add_texts(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        batch_size: int = 32,
    ) -> list[str]:
        """Encode and add texts as they are (no chunking), then save.

        Args:
            texts: the passages.
            ids: unique ids (default ``"text:<row number>"``); existing ids raise ``ValueError``.
            metadatas: optional JSON-serialisable dicts (for filters).

        Returns:
            the ids added.
        """
        if isinstance(texts, str):  # list("abc") would index one character per document
            raise TypeError(
                "add_texts takes a list of strings, not one string; wrap a single text: "
                "add_texts([text])."
            )
        texts = list(texts)
        ids = self._default_ids("text", len(texts)) if ids is None else [str(i) for i in ids]
        metas = [dict(m or {}) for m in (metadatas or [None] * len(texts))]
        for m in metas:
            m.setdefault("type", "text")
        chunks = [Chunk(i, t, None, m) for i, t, m in zip(ids, texts, metas, strict=True)]
        self._encode_add(chunks, batch_size)
        self.commit()
        return ids

    @_writes
    def add_images(
        self,
        paths: Sequence[str | os.PathLike[str]],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        texts: Sequence[str | None] | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """Encode and add image files (vision-language models only), then save.

        Args:
            paths: image files; stored by absolute path (returned as ``SearchResult.image``).
            ids: unique ids (default ``"image:<row number>"``).
            metadatas: optional dicts (``image`` and ``type`` are filled in).
            texts: optional text paired with each image (encoded together, e.g. a caption).

        Returns:
            the ids added.
        """
        if not self.model.supports_images:
            raise ValueError(
                f"add_images needs a vision-language model; this collection's model "
                f"({self.config.get('model')}) reads text only."
            )
        files = [Path(p).expanduser().resolve() for p in paths]
        for p in files:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such image file.")
        ids = self._default_ids("image", len(files)) if ids is None else [str(i) for i in ids]
        metas = [dict(m or {}) for m in (metadatas or [None] * len(files))]
        texts_l = list(texts) if texts is not None else [None] * len(files)
        chunks = []
        for i, p, m, t in zip(ids, files, metas, texts_l, strict=True):
            m.setdefault("type", "image")
            m["image"] = str(p)
            chunks.append(Chunk(i, t, p, m))
        self._encode_add(chunks, batch_size)
        self.commit()
        return ids

    def _default_ids(self, prefix: str, n: int) -> list[str]:
        start = self.index.num_rows
        return [f"{prefix}:{start + i}" for i in range(n)]

    # ------------------------------------------------------------------ removing
    @_writes
    def delete_source(self, path: str | os.PathLike[str]) -> int:
        """Delete every chunk of one indexed file (by path, or by its ``source`` name) and
        save. Returns the number of chunks deleted.

        Raises:
            KeyError: the file is not in the collection.
        """
        key = str(Path(path).expanduser().resolve())
        if key not in self._files:
            matches = [k for k, e in self._files.items() if e.get("source") == str(path)]
            if not matches:
                raise KeyError(f"{path} is not indexed in the collection at {self.folder}.")
            key = matches[0]
        self._touch(key)
        entry = self._files.pop(key)
        n = self.index.delete(entry.get("chunks", []), missing_ok=True)
        self.commit()
        return n

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: Any,
        *,
        k: int = 5,
        budget: BudgetLike | None = None,
        fetch_k: int | None = None,
        filter: Filter | None = None,
    ) -> list[SearchResult]:
        """Two-stage search; exactly ``TwoStageRetriever(model, index).search(query,
        params=SearchParams(k, fetch_k, rerank_budget=budget, filter=filter))``.

        Args:
            query: text (a ``str`` is always text), or an image (``PIL.Image``, ``Path``,
                bytes) for vision-language models.
            k: results.
            budget: rerank budget ``(r_q, r_c)`` / ``"8,16"`` (default: the largest).
            fetch_k: coarse candidates (default
                :data:`~metaembed_rag.index.params.DEFAULT_FETCH_K`).
            filter: metadata filter, e.g. ``{"type": "pdf"}`` (see
                :mod:`metaembed_rag.index.filters`).

        Raises:
            ValueError: the collection is empty, a budget the model was not trained with
                (the message lists the valid ones), a malformed filter.
        """
        if len(self.index) == 0:
            raise ValueError(
                f"The collection at {self.folder} holds no documents; add some first "
                f"(`metaembed-rag index PATH --index {self.folder}` or add_paths)."
            )
        params = SearchParams.of(k, fetch_k=fetch_k, rerank_budget=budget, filter=filter)
        params.check_budgets(self.index.budgets)  # a wrong budget fails before encoding
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

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        """What the collection holds (no model load needed)."""
        types: dict[str, int] = {}
        for e in self._files.values():
            types[e.get("type", "?")] = types.get(e.get("type", "?"), 0) + 1
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
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
