"""The ingestion side of a collection: which files are new or changed, chunking them (the
policy is :mod:`metaembed_rag.chunking`), encoding and adding the chunks, pruning files that
are gone; plus adding texts and images directly."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..chunking import Chunking
from ..index.persist import sha256_file
from ..ingest import (
    Chunk,
    IngestError,
    count_tokens,
    discover_files,
    file_type,
    load_file,
    model_chunk_limit,
    model_tokenizer,
    special_file_kind,
)
from .folder import (
    CONFIG_FILE,
    ENCODE_BLOCK,
    PAGES_DIR,
    SAVE_EVERY_CHUNKS,
    SAVE_EVERY_SECONDS,
    _display,
    _write_json,
)
from .journal import Journal, writes
from .report import IngestReport

__all__ = ["Indexer"]

logger = logging.getLogger("metaembed_rag.collection")

#: Chunking recorded per file in the manifest, with the value meant when an entry (written by
#: an older version) lacks it.
_PARAM_DEFAULTS: dict[str, Any] = {"chunk_unit": "words", "pdf_page_images": False}


class Indexer(Journal):
    """Mixin of :class:`~metaembed_rag.collection.Collection`: adding documents."""

    #: What encodes documents instead of :attr:`model` when set: anything with the model's
    #: ``encode_documents`` (e.g. :class:`~metaembed_rag.distributed.RayEncoder`).
    encoder: Any = None

    @property
    def model(self) -> Any:  # pragma: no cover - Collection defines it
        raise NotImplementedError

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
            items = [c.model_input() for c in block]
            encoder = self.encoder if self.encoder is not None else self.model
            vectors = encoder.encode_documents(
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

    @writes
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
        saved = Chunking(
            self.config.get("chunk_unit", "words"),
            self.config["chunk_size"],
            self.config["chunk_overlap"],
        )
        run = saved.for_run(self.model, chunk_size, chunk_overlap)
        size, overlap, unit = run.size, run.overlap, run.unit
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
        special = special_file_kind(path)
        if special is not None:  # reading a FIFO or device could block forever
            report.skipped.append((display, f"{special}, not a regular file"))
            return 0
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
            empty: list[str] = []
            chunks = load_file(
                path, chunk_size=params["chunk_size"], chunk_overlap=params["chunk_overlap"],
                pdf_page_images=params["pdf_page_images"], source=display,
                image_dir=self.folder / PAGES_DIR, tokenizer=tokenizer, errors=bad_lines,
                empty=empty,
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
        report.empty_records.extend(empty)
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

    @writes
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

    @writes
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

    @writes
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
