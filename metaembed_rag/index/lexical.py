"""The lexical (BM25) side of hybrid search: a sidecar kept beside a multi-vector index.

:class:`LexicalIndex` holds each live document's tokens (ids into its own vocabulary), keyed by
document id, so it works over any storage backend. ``add`` tokenizes new texts, ``delete``
drops documents; the BM25 scoring matrix (the ``bm25s`` library) is rebuilt from the stored
tokens on the first search after a change (tokens are never re-derived from the texts).

Saved as one ``lexical-<tag>.safetensors`` file in the index folder (token ids, per-document
offsets, the ids and the vocabulary as UTF-8 JSON bytes; no pickle), written atomically and
named by the index manifest, which is written last (:meth:`MultiVectorIndex.save`).

BM25 settings (:data:`BM25_SETTINGS`) are those of the evaluation's BM25 baseline
(:mod:`metaembed_rag.baselines`): the sidecar scores a corpus exactly as the baseline does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import require
from .persist import IndexCorruptedError, atomic_writer, sha256_file
from .rowset import new_tag

__all__ = ["BM25_SETTINGS", "LexicalIndex", "import_bm25s", "tokenize"]

logger = logging.getLogger(__name__)

#: How BM25 runs, for hybrid search and the evaluation baseline alike (recorded in the
#: evaluation's JSON and in the sidecar file).
BM25_SETTINGS: dict[str, Any] = {
    "library": "bm25s",
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "stopwords": "en",
    "stemmer": None,
    "token_pattern": r"(?u)\b\w\w+\b",
    "lower": True,
}


def import_bm25s() -> Any:
    """The ``bm25s`` module.

    Raises:
        ImportError: not installed (a core dependency: the message says how to restore it).
    """
    return require(
        "bm25s", "pip install 'bm25s>=0.2,<1' (a dependency of metaembed-rag)",
        "BM25 (hybrid search, the bm25 baseline)",
    )  # fmt: skip


def tokenize(texts: Sequence[str | None]) -> list[list[str]]:
    """Tokens of each text under :data:`BM25_SETTINGS` (``None`` -> no tokens)."""
    bm25s = import_bm25s()
    s = BM25_SETTINGS
    given = [t or "" for t in texts]
    if not given:
        return []
    return bm25s.tokenize(
        given, lower=s["lower"], token_pattern=s["token_pattern"], stopwords=s["stopwords"],
        stemmer=s["stemmer"], return_ids=False, show_progress=False,
    )  # fmt: skip


class LexicalIndex:
    """Per-document BM25 tokens keyed by document id, with lazy BM25 scoring.

    Attributes:
        vocab: token -> id (ids ``0..V-1``; tokens of deleted documents stay).
        version: bumped on every change (callers cache row maps against it).
    """

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self._tokens: dict[str, np.ndarray] = {}  # id -> int32 token ids (insertion order)
        self._bm25: Any = None
        self._order: list[str] = []
        self.version = 0
        self.saved: tuple[Path, dict[str, Any]] | None = None  # (file, manifest entry)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._tokens

    @property
    def ids(self) -> list[str]:
        """Document ids, in the order :meth:`scores` columns follow."""
        return list(self._tokens)

    def _changed(self) -> None:
        self._bm25 = None
        self.saved = None
        self.version += 1

    # ------------------------------------------------------------------ writing
    def add(self, ids: Sequence[str], texts: Sequence[str | None]) -> None:
        """Tokenize and add documents (an existing id is replaced)."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        for doc_id, toks in zip(ids, tokenize(texts), strict=True):
            ids_ = [self.vocab.setdefault(t, len(self.vocab)) for t in toks]
            self._tokens.pop(doc_id, None)
            self._tokens[doc_id] = np.asarray(ids_, dtype=np.int32)
        if ids:
            self._changed()

    def delete(self, ids: Sequence[str]) -> None:
        """Drop documents (unknown ids are ignored)."""
        gone = [self._tokens.pop(i, None) is not None for i in ids]
        if any(gone):
            self._changed()

    # ------------------------------------------------------------------ scoring
    def _model(self) -> Any:
        if self._bm25 is None:
            bm25s = import_bm25s()
            s = BM25_SETTINGS
            self._order = list(self._tokens)
            model = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
            corpus = [t.tolist() for t in self._tokens.values()]
            model.index((corpus, dict(self.vocab)), show_progress=False)
            self._bm25 = model
        return self._bm25

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every document (columns in :attr:`ids` order) for each query text:
        ``(nq, len(self))`` float32; 0 for a document sharing no term with the query.

        Raises:
            ValueError: the index is empty.
        """
        if not self._tokens:
            raise ValueError("the lexical index is empty: add documents before searching.")
        model = self._model()
        out = np.zeros((len(queries), len(self._order)), dtype=np.float32)
        for i, toks in enumerate(tokenize(list(queries))):
            known = [self.vocab[t] for t in toks if t in self.vocab]
            if known:
                out[i] = model.get_scores_from_ids(known)
        return out

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> LexicalIndex:
        """A sidecar built from stored documents (objects with ``id`` and ``text``: a
        backend's records), for an index saved without one."""
        logger.info("building the BM25 sidecar from %d stored texts", len(records))
        out = cls()
        out.add([r.id for r in records], [r.text for r in records])
        return out

    # ------------------------------------------------------------------ persistence
    def save_into(self, folder: Path) -> dict[str, Any]:
        """The manifest entry of the sidecar in ``folder``: the file saved last if it is there
        and nothing changed since, else a new ``lexical-<tag>.safetensors`` (atomic)."""
        if self.saved is not None:
            path, entry = self.saved
            if path.parent.resolve() == Path(folder).resolve() and path.is_file():
                return entry
        Path(folder).mkdir(parents=True, exist_ok=True)
        return self.write(Path(folder) / f"lexical-{new_tag()}.safetensors")

    @classmethod
    def open(cls, folder: Path, manifest: dict[str, Any]) -> LexicalIndex | None:
        """The sidecar a loaded manifest names (its file already checked against the
        manifest's size and checksum), or ``None`` when it names none."""
        entry = manifest.get("files", {}).get("lexical")
        if entry is None:
            return None
        path = Path(folder) / entry["name"]
        out = cls.read(path, manifest["counts"]["documents"])
        out.saved = (path, entry)
        return out

    def write(self, path: Path) -> dict[str, Any]:
        """Write the sidecar atomically to ``path``; returns its manifest entry
        (``name``, ``bytes``, ``sha256``)."""
        from safetensors.numpy import save

        lengths = [t.size for t in self._tokens.values()]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = (
            np.concatenate(list(self._tokens.values())).astype(np.int32)
            if self._tokens
            else np.zeros(0, dtype=np.int32)
        )

        def text(obj: Any) -> np.ndarray:
            return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), np.uint8)

        vocab = sorted(self.vocab, key=self.vocab.__getitem__)
        data = save(
            {"tokens": flat, "offsets": offsets, "ids": text(self.ids), "vocab": text(vocab)},
            metadata={"bm25": json.dumps(BM25_SETTINGS), "documents": str(len(self))},
        )
        with atomic_writer(path) as f:
            f.write(data)
        entry = {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        self.saved = (path, entry)
        return entry

    @classmethod
    def read(cls, path: Path, documents: int) -> LexicalIndex:
        """Open a sidecar written by :meth:`write`; ``documents`` is the live count the
        manifest records.

        Raises:
            IndexCorruptedError: unreadable, other BM25 settings, or a document count that
                differs from the manifest's.
        """
        from safetensors.numpy import load

        fix = "restore the index folder from a backup or rebuild the index"
        try:
            raw = path.read_bytes()
            arrays = load(raw)
            ids = json.loads(arrays["ids"].tobytes().decode("utf-8"))
            vocab = json.loads(arrays["vocab"].tobytes().decode("utf-8"))
            offsets, flat = arrays["offsets"], arrays["tokens"]
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as exc:
            raise IndexCorruptedError(
                f"{path}: unreadable lexical sidecar ({exc}); {fix}."
            ) from exc
        if len(ids) != documents or offsets.size != len(ids) + 1:
            raise IndexCorruptedError(
                f"{path} holds {len(ids)} documents but the manifest records {documents}; {fix}."
            )
        out = cls()
        out.vocab = {t: i for i, t in enumerate(vocab)}
        for j, doc_id in enumerate(ids):
            out._tokens[doc_id] = flat[offsets[j] : offsets[j + 1]].astype(np.int32)
        return out
