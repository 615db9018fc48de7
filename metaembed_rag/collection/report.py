"""What :class:`~metaembed_rag.collection.Collection` returns: search results and the
report of an indexing run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .folder import SUMMARY_NAMES

__all__ = ["IngestReport", "SearchResult"]


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
        empty_records: ``"<id> (<file>:<line>)"`` of every empty JSONL record left out.
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
    empty_records: list[str] = field(default_factory=list)

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
        if self.empty_records:
            lines.append(
                f"Skipped {len(self.empty_records)} empty record(s): {_names(self.empty_records)}."
            )
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
