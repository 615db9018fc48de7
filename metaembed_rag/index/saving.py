"""Saving and loading a :class:`~metaembed_rag.index.MultiVectorIndex` (see its docstrings).

Layout and crash-safety rules: ``docs/index-and-search.md`` and :mod:`.persist`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .persist import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IndexCorruptedError,
    IndexMismatchError,
    atomic_writer,
    block_hashes,
    fsync_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from .storage import RowStore

if TYPE_CHECKING:  # pragma: no cover
    from .multivector import MultiVectorIndex

__all__ = ["save_index", "load_index", "manifest_files", "new_tag"]

logger = logging.getLogger(__name__)

_OWN_FILE = re.compile(r"^(vectors|scales|coarse|docs|faiss)-[0-9a-f]{12}\.(bin|jsonl|faiss)(\.tmp)?$")
_COPY_ROWS_BYTES = 64 * 1024 * 1024


def new_tag() -> str:
    """A fresh 12-hex-digit file tag."""
    return uuid.uuid4().hex[:12]


def manifest_files(folder: Path) -> set[str]:
    """Names of the files the manifest in ``folder`` references (empty if none/unreadable)."""
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError):
        return set()
    return {f["name"] for f in manifest.get("files", {}).values()}


def write_docs(index: MultiVectorIndex, path: Path) -> str:
    """Write the JSONL sidecar atomically; returns its sha256."""
    h = hashlib.sha256()
    with atomic_writer(path) as f:
        buf: list[bytes] = []
        for i, t, m in zip(index._ids, index._texts, index._metas, strict=True):
            row = None if i is None else {"id": i, "text": t, "metadata": m or {}}
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            buf.append(line)
            if len(buf) >= 4096:
                data = b"".join(buf)
                h.update(data)
                f.write(data)
                buf = []
        data = b"".join(buf)
        h.update(data)
        f.write(data)
    return h.hexdigest()


def copy_store(store: RowStore, dest: Path) -> None:
    """Copy the stored rows into ``dest`` atomically, in 64 MiB pieces."""
    step = max(1, _COPY_ROWS_BYTES // max(store.row_bytes, 1))
    with atomic_writer(dest) as f:
        for s in range(0, store.count, step):
            f.write(np.ascontiguousarray(store.array[s : s + step]).tobytes())


def save_index(index: MultiVectorIndex, path: str | os.PathLike[str] | None) -> Path:
    """Implementation of :meth:`MultiVectorIndex.save`."""
    if path is None:
        if index.path is None:
            raise ValueError(
                "This index lives in RAM: pass a directory, index.save('my-index')."
            )
        target = index.path
    else:
        target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    if index.num_rows and index.num_deleted / index.num_rows >= index.compact_ratio:
        index.compact()
    in_place = index.path is not None and target.resolve() == index.path.resolve()
    tag = new_tag()
    files: dict[str, dict[str, Any]] = {}
    for kind, store in index._stores():
        if in_place:
            assert store.path is not None
            store.trim()
            store.flush()
            name = store.path.name
            known = index._hash_cache.get(name)
        else:
            name = f"{kind}-{tag}.bin"
            copy_store(store, target / name)
            known = None
        blocks = block_hashes(target / name, store.row_bytes, store.count, known)
        if in_place:
            index._hash_cache[name] = blocks
        files[kind] = {
            "name": name, "bytes": store.nbytes, "rows": store.count,
            "row_shape": list(store.row_shape), "np_dtype": store.dtype.str,
            "sha256_blocks": blocks,
        }  # fmt: skip
    docs_name = f"docs-{tag}.jsonl"
    docs_sha = write_docs(index, target / docs_name)
    files["docs"] = {"name": docs_name, "bytes": (target / docs_name).stat().st_size, "sha256": docs_sha}
    faiss_name = f"faiss-{tag}.faiss"
    tmp = target / (faiss_name + ".tmp")
    try:
        index._coarse.write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target / faiss_name)
    finally:
        tmp.unlink(missing_ok=True)
    files["faiss"] = {
        "name": faiss_name, "bytes": (target / faiss_name).stat().st_size,
        "sha256": sha256_file(target / faiss_name),
    }  # fmt: skip
    fsync_dir(target)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_fingerprint": index.fingerprint,
        "dim": index.dim,
        "vectors_per_doc": index.num_vectors,
        "budgets": [b.as_tuple() for b in index.budgets],
        "dtype": index.dtype,
        "coarse_vector": index.coarse_vector,
        "coarse_index": {
            "setting": index._coarse.setting, "kind": index._coarse.kind,
            "stale": index._coarse.stale, "hnsw_m": index._coarse.hnsw_m,
            "ef_construction": index._coarse.ef_construction,
            "ef_search": index._coarse.ef_search, "ivf_nlist": index._coarse.ivf_nlist,
            "nprobe": index._coarse.nprobe,
        },  # fmt: skip
        "options": {
            "exact_subset_max": index.exact_subset_max,
            "recall_pool_factor": index.recall_pool_factor,
            "compact_ratio": index.compact_ratio,
        },
        "counts": {"rows": index.num_rows, "documents": len(index), "deleted": index.num_deleted},
        "files": files,
    }
    write_manifest(target, manifest)
    keep = {f["name"] for f in files.values()}
    keep |= {s.path.name for _, s in index._stores() if s.path is not None and s.path.parent.resolve() == target.resolve()}
    for p in target.iterdir():
        if _OWN_FILE.match(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
    logger.info("saved %r to %s", index, target)
    return target



def load_index(
    cls: type[MultiVectorIndex],
    path: str | os.PathLike[str],
    *,
    mmap: bool,
    verify: bool,
    model: Any,
    fingerprint: str | None,
    dim: int | None,
    dtype: str | None,
    use_gpu: bool,
) -> MultiVectorIndex:
    """Implementation of :meth:`MultiVectorIndex.load`."""
    folder = Path(path)
    manifest = read_manifest(folder)
    if model is not None:
        fingerprint = fingerprint or model.fingerprint()
        dim = dim or model.dim
    _expect(folder, "model fingerprint", manifest.get("model_fingerprint"), fingerprint,
            "encode with the model the index was built with, or rebuild the index with "
            "this model")  # fmt: skip
    _expect(folder, "dim", manifest.get("dim"), dim,
            "use the model the index was built with, or rebuild the index")  # fmt: skip
    _expect(folder, "dtype", manifest.get("dtype"), dtype,
            f"load without dtype= (the stored one is used) or rebuild the index with "
            f"dtype={dtype!r}")  # fmt: skip
    files = manifest.get("files", {})
    for kind in ("vectors", "coarse", "docs", "faiss"):
        if kind not in files:
            raise IndexCorruptedError(f"{folder}/manifest.json lists no {kind} file.")
    for kind, info in files.items():
        fpath = folder / info["name"]
        if not fpath.exists():
            raise IndexCorruptedError(
                f"{fpath} is missing: the index at {folder} is incomplete. Restore the "
                "directory from a backup or rebuild the index."
            )
        size = fpath.stat().st_size
        if size < info["bytes"] or (kind in ("docs", "faiss") and size != info["bytes"]):
            raise IndexCorruptedError(
                f"{fpath} has {size} bytes, the manifest says {info['bytes']}: the file is "
                "truncated or was modified. Restore it or rebuild the index."
            )
        if verify:
            if "sha256_blocks" in info:
                for b in info["sha256_blocks"]:
                    rb = info["bytes"] // max(info["rows"], 1)
                    if sha256_file(fpath, b["start"] * rb, b["end"] * rb) != b["sha256"]:
                        raise IndexCorruptedError(
                            f"{fpath}: checksum mismatch in rows {b['start']}..{b['end']}; "
                            "the file is corrupt. Restore it or rebuild the index."
                        )
            elif sha256_file(fpath) != info["sha256"]:
                raise IndexCorruptedError(
                    f"{fpath}: checksum mismatch; the file is corrupt. Restore it or rebuild "
                    "the index."
                )
    coarse = manifest["coarse_index"]
    options = manifest.get("options", {})
    self = cls.__new__(cls)  # __init__ is called explicitly: no path (the files exist)
    cls.__init__(
        self, manifest["dim"], num_vectors=manifest["vectors_per_doc"],
        budgets=[tuple(b) for b in manifest["budgets"]], dtype=manifest["dtype"],
        coarse_vector=manifest["coarse_vector"], coarse_index=coarse["setting"], path=None,
        fingerprint=manifest.get("model_fingerprint"), use_gpu=use_gpu,
        hnsw_m=coarse["hnsw_m"], ef_construction=coarse["ef_construction"],
        ef_search=coarse["ef_search"], ivf_nlist=coarse["ivf_nlist"], nprobe=coarse["nprobe"],
        **options,
    )  # fmt: skip
    rows = int(files["vectors"]["rows"])
    stores = {"vectors": self._vectors, "coarse": self._coarse_vecs}
    if self._scales is not None:
        stores["scales"] = self._scales
    for kind, store in stores.items():
        info = files.get(kind)
        if info is None or info["rows"] != rows:
            raise IndexCorruptedError(f"{folder}: {kind} file missing or has the wrong row count.")
        fpath = folder / info["name"]
        if mmap:
            new = RowStore(store.row_shape, store.dtype, fpath, rows, writable=False)
        else:
            new = RowStore(store.row_shape, store.dtype, None, 0)
            data = np.fromfile(fpath, dtype=store.dtype, count=rows * int(np.prod(store.row_shape)))
            new.append(data.reshape(rows, *store.row_shape))
        if kind == "vectors":
            self._vectors = new
        elif kind == "coarse":
            self._coarse_vecs = new
        else:
            self._scales = new
        if mmap:
            self._hash_cache[info["name"]] = info["sha256_blocks"]
    if mmap:
        self.path = folder
    read_docs(self, folder / files["docs"]["name"], rows)
    self._coarse.read(str(folder / files["faiss"]["name"]), coarse["kind"], coarse.get("stale", 0))
    return self


def read_docs(self: MultiVectorIndex, path: Path, rows: int) -> None:
    """Fill ids, texts, metadata and the alive mask from the JSONL sidecar."""
    ids: list[str | None] = []
    texts: list[str | None] = []
    metas: list[dict[str, Any] | None] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if row is None:
                    ids.append(None)
                    texts.append(None)
                    metas.append(None)
                else:
                    ids.append(row["id"])
                    texts.append(row.get("text"))
                    metas.append(row.get("metadata") or {})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise IndexCorruptedError(f"{path} is not a valid document sidecar: {exc}") from exc
    if len(ids) != rows:
        raise IndexCorruptedError(f"{path} has {len(ids)} rows, the vectors have {rows}.")
    self._ids, self._texts, self._metas = ids, texts, metas
    self._alive = np.array([i is not None for i in ids], dtype=bool)
    self._slot_of = {i: s for s, i in enumerate(ids) if i is not None}


def _expect(folder: Path, what: str, stored: Any, expected: Any, fix: str) -> None:
    if expected is None or stored == expected:
        return
    raise IndexMismatchError(
        f"The index at {folder} was built with {what} {stored!r}, but {expected!r} was "
        f"requested: {fix}."
    )




