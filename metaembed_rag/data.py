"""Loading retrieval data: BEIR-layout folders and image-caption CSV files.

Every malformed line stops loading with an error naming the file and line number.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BeirDataset",
    "DataError",
    "ImageCaptions",
    "TextPair",
    "load_beir",
    "load_image_captions",
    "load_pairs",
]

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclass
class BeirDataset:
    """A BEIR-layout retrieval dataset.

    Attributes:
        corpus: doc id -> {"title": str, "text": str}
        queries: query id -> text (only the queries that appear in ``qrels``)
        qrels: query id -> {doc id: relevance grade > 0}
        folder / split: where it came from.
        full_ids: ``None`` for the whole corpus; for a sample (:meth:`sample_docs`) the
            sorted ids of the whole corpus (cached vectors of the whole corpus serve it).
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    folder: Path
    split: str
    full_ids: list[str] | None = None

    def sample_docs(
        self, limit: int, query_ids: Sequence[str] | None = None, seed: int = 0
    ) -> BeirDataset:
        """The set cut to ``limit`` documents: every document judged for ``query_ids``
        (default: all queries) plus a sample of the others drawn with ``random.Random(seed)``
        from the sorted ids; queries and qrels cut to ``query_ids``. When more documents
        are judged than ``limit``, all judged ones are kept (a warning says so); a ``limit``
        at least the corpus size returns the set unchanged (queries cut).

        Raises:
            ValueError: ``limit`` < 1.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit-docs must be a positive int, got {limit!r}")
        qids = sorted(self.qrels) if query_ids is None else list(query_ids)
        qrels = {q: self.qrels[q] for q in qids}
        queries = {q: self.queries[q] for q in qids}
        if limit >= len(self.corpus):
            return BeirDataset(
                self.corpus, queries, qrels, self.folder, self.split, self.full_ids, self.empty_docs
            )
        judged = {d for rel in qrels.values() for d in rel}
        if len(judged) > limit:
            logger.warning(
                "%s: %d documents are judged for the evaluated queries, more than --limit-docs "
                "%d: keeping all judged ones", self.folder, len(judged), limit,
            )  # fmt: skip
        others = sorted(set(self.corpus) - judged)
        drawn = random.Random(seed).sample(others, max(0, min(limit - len(judged), len(others))))
        keep = judged.union(drawn)
        corpus = {d: v for d, v in self.corpus.items() if d in keep}
        full = self.full_ids if self.full_ids is not None else sorted(self.corpus)
        return BeirDataset(corpus, queries, qrels, self.folder, self.split, full, self.empty_docs)

    #: ids of corpus documents left out because their title and text are empty.
    empty_docs: list[str] = field(default_factory=list)

    @property
    def empty_judged(self) -> int:
        """How many (query, document) judgments point at an empty (left out) document."""
        empty = set(self.empty_docs)
        return sum(d in empty for docs in self.qrels.values() for d in docs)

    def doc_text(self, doc_id: str) -> str:
        """Title and text joined with a space (the usual BEIR convention)."""
        doc = self.corpus[doc_id]
        return f"{doc.get('title', '')} {doc.get('text', '')}".strip()

    def doc_item(self, doc_id: str) -> str | dict[str, str]:
        """The document as a model reads it: ``{"title", "text"}`` when it has both (a model
        reads the same words as :meth:`doc_text`, and one with ``anchor_skip_title`` knows
        which are the title), else :meth:`doc_text`."""
        doc = self.corpus[doc_id]
        title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
        return {"title": title, "text": text} if title and text else self.doc_text(doc_id)


def _jsonl_objects(path: Path, what: str = "") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a JSONL file.

    Raises:
        DataError: a missing file, or a line that is not a JSON object (file and line named).
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found{what}")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: a JSON object expected")
            yield lineno, row


def _read_jsonl(path: Path, id_key: str = "_id") -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for lineno, row in _jsonl_objects(path):
        if id_key not in row:
            raise DataError(f"{path}:{lineno}: a JSON object with an {id_key!r} field expected")
        key = row[id_key]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise DataError(
                f"{path}:{lineno}: {id_key!r} must be a string (or integer), got "
                f"{type(key).__name__} {key!r:.60}"
            )
        key = str(key)
        for field_name in ("title", "text"):
            value = row.get(field_name)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{path}:{lineno}: {field_name!r} of {key!r} must be a string, got "
                    f"{type(value).__name__} {value!r:.60}"
                )
        if key in rows:
            raise DataError(f"{path}:{lineno}: duplicate id {key!r}")
        rows[key] = row
    if not rows:
        raise DataError(f"{path}: empty file (no records)")
    return rows


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0].lower() in ("query-id", "query_id", "qid"):
                continue  # header
            if not line.strip():
                continue
            if len(parts) == 4:  # TREC style: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise DataError(
                    f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r}"
                )
            try:
                grade = int(float(parts[2]))
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: score {parts[2]!r} is not a number") from exc
            if grade > 0:
                qrels[parts[0]][parts[1]] = grade
    if not qrels:
        raise DataError(f"{path}: no relevance judgments (empty file or all scores <= 0)")
    return dict(qrels)


def _qrels_lines(path: Path) -> dict[tuple[str, str], int]:
    """(query id, doc id) -> line number, for error messages."""
    where: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) == 3:
                where.setdefault((parts[0], parts[1]), lineno)
    return where


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Load ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder.

    Raises:
        DataError: a missing or empty file, a malformed line, or qrels naming a query or
            document id that does not exist (file and line in the message).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder (expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/)"
        )
    corpus_rows = _read_jsonl(root / "corpus.jsonl")
    corpus = {
        k: {"title": str(v.get("title") or ""), "text": str(v.get("text") or "")}
        for k, v in corpus_rows.items()
    }
    query_rows = _read_jsonl(root / "queries.jsonl")
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_path)
    lines = None
    for qid, docs in qrels.items():
        for did in docs:
            if qid not in query_rows or did not in corpus:
                lines = lines or _qrels_lines(qrels_path)
                what = f"query id {qid!r}" if qid not in query_rows else f"corpus id {did!r}"
                source = "queries.jsonl" if qid not in query_rows else "corpus.jsonl"
                raise DataError(
                    f"{qrels_path}:{lines.get((qid, did), '?')}: {what} is not in {root / source}"
                )
    empty_docs = [k for k, v in corpus.items() if not f"{v['title']} {v['text']}".strip()]
    for k in empty_docs:  # nothing to encode: left out, counted and named by every report
        del corpus[k]
    if empty_docs:
        logger.warning(
            "%s: %d empty document(s) left out: %s", root / "corpus.jsonl", len(empty_docs),
            ", ".join(empty_docs[:5]) + (" ..." if len(empty_docs) > 5 else ""),
        )  # fmt: skip
    queries = {qid: str(query_rows[qid].get("text") or "") for qid in qrels}
    empty = [qid for qid, text in queries.items() if not text.strip()]
    if empty:
        raise DataError(f"{root / 'queries.jsonl'}: query {empty[0]!r} has empty text")
    return BeirDataset(corpus, queries, qrels, root, split, empty_docs=empty_docs)


@dataclass
class ImageCaptions:
    """Images and their captions: image file name -> list of captions."""

    image_dir: Path
    captions: dict[str, list[str]] = field(default_factory=dict)


def load_image_captions(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    *,
    verify_images: bool = True,
) -> ImageCaptions:
    """Load an ``image,caption`` CSV (one caption per row, several rows per image).

    Args:
        csv_path: the CSV file (header ``image,caption``).
        image_dir: folder of the images (default: ``images/`` beside the CSV).
        verify_images: open every image once and fail on one that does not decode.

    Raises:
        DataError: empty file, missing columns, an empty caption, or an image that is missing
            or does not decode (file and line in the message).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    folder = Path(image_dir) if image_dir is not None else path.parent / "images"
    out = ImageCaptions(folder)
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file")
        if not {"image", "caption"} <= set(reader.fieldnames):
            raise DataError(
                f"{path}:1: header must have 'image' and 'caption' columns, got {reader.fieldnames}"
            )
        for row in reader:
            lineno = reader.line_num
            image, caption = (row.get("image") or "").strip(), (row.get("caption") or "").strip()
            if not image or not caption:
                raise DataError(f"{path}:{lineno}: empty image name or caption")
            out.captions.setdefault(image, []).append(caption)
            first_line.setdefault(image, lineno)
    if not out.captions:
        raise DataError(f"{path}: no rows")
    if verify_images:
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError(
                "Checking images needs Pillow: pip install 'metaembed-rag[image]'"
            ) from exc
        for name, lineno in first_line.items():
            img_path = folder / name
            if not img_path.is_file():
                raise DataError(f"{path}:{lineno}: image {str(img_path)!r} does not exist")
            try:
                with Image.open(img_path) as img:
                    img.verify()
            except Exception as exc:
                raise DataError(
                    f"{path}:{lineno}: image {str(img_path)!r} does not decode ({exc})"
                ) from exc
    return out


@dataclass(frozen=True)
class TextPair:
    """One training pair from a ``pairs.jsonl`` file (``negative`` where the source has one)."""

    query: str
    positive: str
    negative: str | None = None


def load_pairs(path: str | Path) -> list[TextPair]:
    """Read a pairs file: one JSON object a line with string ``query`` and ``positive`` fields
    and an optional string ``negative`` (other fields are ignored). ``path`` is the file or a
    folder holding ``pairs.jsonl``.

    Raises:
        DataError: a missing or empty file, a line that is not a JSON object, or a ``query`` /
            ``positive`` / ``negative`` that is missing, not a string or blank (file and line
            in the message).
    """
    file = Path(path)
    if file.is_dir():
        file = file / "pairs.jsonl"
    pairs: list[TextPair] = []
    for lineno, row in _jsonl_objects(file, " (a pairs.jsonl file or a folder holding one)"):
        fields: dict[str, str | None] = {}
        for key in ("query", "positive", "negative"):
            value = row.get(key)
            if value is None and key == "negative":
                fields[key] = None
                continue
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"{file}:{lineno}: {key!r} must be a non-empty string, got {value!r:.60}"
                )
            fields[key] = value
        pairs.append(TextPair(fields["query"], fields["positive"], fields["negative"]))  # type: ignore[arg-type]
    if not pairs:
        raise DataError(f"{file}: empty file (no pairs)")
    return pairs
