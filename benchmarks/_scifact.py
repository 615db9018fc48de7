"""SciFact (BEIR layout) loading and cached encoding for the two-stage benchmark.

Encoded vectors are cached as ``.npy`` files under ``--cache-dir`` (default
``/tmp/metaembed-rag-cache``), keyed by the model fingerprint, so a second run skips the
several-minute encoding on a 2-core CPU.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"
DEFAULT_CACHE = Path("/tmp/metaembed-rag-cache")


def load_beir(
    folder: Path, split: str = "test"
) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """Read a BEIR folder.

    Returns:
        doc_ids, doc_texts ("title text"), query_ids, query_texts (only queries with qrels in
        ``split``), qrels {query_id: {doc_id: gain}}.
    """
    folder = Path(folder)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            doc_ids.append(str(row["_id"]))
            doc_texts.append(f"{row.get('title', '')} {row.get('text', '')}".strip())
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels[qid][did] = int(score)
    query_ids: list[str] = []
    query_texts: list[str] = []
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                query_ids.append(str(row["_id"]))
                query_texts.append(row["text"])
    return doc_ids, doc_texts, query_ids, query_texts, dict(qrels)


def encode_cached(
    model, texts: list[str], side: str, cache_dir: Path, name: str, batch_size: int = 32
) -> torch.Tensor:
    """Encode ``texts`` (side "query" or "document") or load them from the cache.

    Returns:
        (n, R, D) float32 tensor.
    """
    folder = Path(cache_dir) / f"{name}-{model.fingerprint()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{side}s.npy"
    if path.exists():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == len(texts):
            logger.info("loaded cached %s vectors %s from %s", side, arr.shape, path)
            return torch.from_numpy(np.ascontiguousarray(arr))
    t0 = time.perf_counter()
    if side == "query":
        out = model.encode_queries(texts, batch_size=batch_size, show_progress_bar=True)
    else:
        out = model.encode_documents(texts, batch_size=batch_size, show_progress_bar=True)
    logger.info("encoded %d %ss in %.1f s", len(texts), side, time.perf_counter() - t0)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out.numpy())
    tmp.replace(path)
    return out
