"""Saving and opening a :class:`~metaembed_rag.index.multivector.MultiVectorIndex` folder: the
writer's commit (writer lock, next generation, compaction, the manifest header) and the
reader's open (the shared reader lock, retries on a replaced manifest, compatibility checks).

The files themselves are written by the backend (:mod:`.local`, :mod:`.saving`) and the BM25
sidecar (:mod:`.lexical`); the crash-safety rules are in :mod:`.persist`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .lexical import LexicalIndex
from .local import LocalBackend
from .lock import WriterLock
from .manifest import check_manifest, disk_generation, manifest_bytes
from .persist import IndexMismatchError, read_manifest
from .readers import reading
from .saving import expect

# The index arrives untyped (``Any``): importing MultiVectorIndex here, even for type checking
# only, would make an import cycle with multivector.py, which calls these functions.

__all__ = ["LOAD_ATTEMPTS", "load_index", "save_index"]

#: Times :func:`load_index` reads the manifest when a save replaces it mid-open.
LOAD_ATTEMPTS = 5

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- saving
def save_index(index: Any, path: Path | None) -> Path:
    """:meth:`MultiVectorIndex.save <metaembed_rag.index.multivector.MultiVectorIndex.save>`:
    commit ``index`` to ``path`` (``None``: its own folder, or its remote backend)."""
    if path is None and index.path is None and not index.backend.remote:
        raise ValueError("This index lives in RAM: pass a directory, index.save('my-index').")
    target = path if path is not None else index.path
    if target is None:  # a remote backend: it records the settings itself (no folder)
        _compact_if_due(index)
        return _write(index, Path("."), 0)
    own = index.path is not None and target.resolve() == index.path.resolve()
    lock: WriterLock
    if own:
        index._begin_write()
        assert index._lock is not None
        lock = index._lock
        generation = index._generation + 1
    else:
        lock = WriterLock(target, index.lock_timeout)
        lock.acquire()
        generation = disk_generation(target) + 1
    try:
        _compact_if_due(index)
        out = _write(index, target, generation)
    except BaseException:
        if not own:
            lock.release()
        raise  # a failed save of the own folder keeps the lock: the state is still dirty
    if own:
        index._generation = generation
    lock.release()
    return out


def _compact_if_due(index: Any) -> None:
    if index.num_rows and index.num_deleted / index.num_rows >= index.compact_ratio:
        index.compact()


def _write(index: Any, target: Path, generation: int) -> Path:
    """The manifest header (settings, generation, the sidecar's files), then the backend's
    files and the manifest itself."""
    header: dict[str, Any] = {
        "model_fingerprint": index.fingerprint,
        "dim": index.dim,
        "vectors_per_doc": index.num_vectors,
        "budgets": [b.as_tuple() for b in index.budgets],
        "dtype": index.dtype,
        "stored_vectors": index.stored_vectors,
        "coarse_vector": index.coarse_vector,
        "options": {
            "exact_subset_max": index.exact_subset_max,
            "recall_pool_factor": index.recall_pool_factor,
            "compact_ratio": index.compact_ratio,
            "lexical": index.lexical_enabled,
        },
    }
    if index._lexical is not None and not index.backend.remote:  # a remote backend: the
        # sidecar is rebuilt from the stored texts at the first hybrid search
        header["files"] = {"lexical": index._lexical.save_into(target)}
    header["generation"] = generation
    return index.backend.save(target, header)


# --------------------------------------------------------------------------------- opening
def load_index(
    cls: Any,
    folder: Path,
    *,
    mmap: bool,
    verify: bool,
    model: Any,
    fingerprint: str | None,
    dim: int | None,
    dtype: str | None,
    use_gpu: bool,
    lock_timeout: float,
) -> Any:
    """:meth:`MultiVectorIndex.load <metaembed_rag.index.multivector.MultiVectorIndex.load>`:
    one consistent generation, opened under the folder's reader lock, retried on the new
    manifest (without that lock) when a save replaced it mid-open."""
    for attempt in range(LOAD_ATTEMPTS):
        before = manifest_bytes(folder)
        try:
            with reading(folder):  # a save deletes no file while this holds it
                return _load_once(
                    cls, folder, mmap=mmap, verify=verify, model=model, fingerprint=fingerprint,
                    dim=dim, dtype=dtype, use_gpu=use_gpu, lock_timeout=lock_timeout,
                )  # fmt: skip
        except Exception:
            # Without the reader lock (see .readers), a writer may have committed and
            # removed the files of the generation this attempt read: retry on the new
            # manifest; otherwise the error stands.
            if attempt + 1 == LOAD_ATTEMPTS or manifest_bytes(folder) in (before, None):
                raise
            logger.info("%s was saved while opening it: reading the new generation", folder)
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _load_once(
    cls: Any, folder: Path, *, mmap: bool, verify: bool, model: Any,
    fingerprint: str | None, dim: int | None, dtype: str | None, use_gpu: bool,
    lock_timeout: float,
) -> Any:  # fmt: skip
    manifest = read_manifest(folder)
    check_manifest(folder, manifest)
    expect(folder, "dtype", manifest.get("dtype"), dtype,
           f"load without dtype= (the stored one is used) or rebuild the index with "
           f"dtype={dtype!r}")  # fmt: skip
    coarse = manifest["coarse_index"]
    index = cls(
        manifest["dim"], num_vectors=manifest["vectors_per_doc"],
        budgets=[tuple(b) for b in manifest["budgets"]], dtype=manifest["dtype"],
        stored_vectors=manifest.get("stored_vectors"),
        coarse_vector=manifest["coarse_vector"], coarse_index=coarse["setting"],
        fingerprint=manifest.get("model_fingerprint"), use_gpu=use_gpu,
        hnsw_m=coarse["hnsw_m"], ef_construction=coarse["ef_construction"],
        ef_search=coarse["ef_search"], ivf_nlist=coarse["ivf_nlist"], nprobe=coarse["nprobe"],
        lock_timeout=lock_timeout, **manifest.get("options", {}),
    )  # fmt: skip
    _check_saved(index, folder, model, fingerprint, dim)
    assert isinstance(index.backend, LocalBackend)
    index.backend = LocalBackend.load(folder, manifest, index.backend, mmap, verify)
    index._lexical = (  # None: built from the stored texts at the first hybrid search
        LexicalIndex.open(folder, manifest) if index.lexical_enabled else None
    )
    if mmap:
        index._generation = int(manifest.get("generation", 0))
    return index


def _check_saved(
    index: Any, folder: Path, model: Any, fingerprint: str | None, dim: int | None
) -> None:
    """``check_compatible`` before the files are read; a saved index without a fingerprint
    cannot be checked against a model."""
    if index.fingerprint is None and (model is not None or fingerprint is not None):
        expected = fingerprint or model.fingerprint()
        raise IndexMismatchError(
            f"The index at {folder} records no model fingerprint, but {expected!r} was "
            "requested: rebuild the index with MultiVectorIndex.for_model(model)."
        )
    try:
        index.check_compatible(model, fingerprint=fingerprint, dim=dim)
    except IndexMismatchError as exc:
        raise IndexMismatchError(f"{folder}: {exc}") from exc
