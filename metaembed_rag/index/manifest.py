"""Validating a saved index's ``manifest.json`` before anything it names is opened.

Every field is checked for its type and range, and against the other fields (row shapes
against ``dim`` / ``vectors_per_doc``, byte counts against rows, counts against each other);
every file name must be one of the index's own names (``<kind>-<12 hex>.<ext>``) inside its
folder, and every file must carry checksums (an empty checksum list for rows that exist is
corruption, not "skip the check"). An error names the field that is wrong, so an edited or
damaged manifest never reaches the code that opens, maps or appends to files.

>>> expected_name("vectors")
'vectors-<12 hex digits>.bin'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .persist import MANIFEST, IndexCorruptedError, read_manifest
from .rowset import COARSE_DTYPE
from .storage import STORAGE_KINDS, VectorCodec

__all__ = [
    "OPTION_FIELDS",
    "check_manifest",
    "disk_generation",
    "expected_name",
    "file_name_pattern",
    "manifest_bytes",
]

_EXT = {
    "vectors": "bin",
    "scales": "bin",
    "coarse": "bin",
    "docs": "jsonl",
    "faiss": "faiss",
    "codes": "bin",  # residual kinds: the centroid id of every stored vector
    "codebook": "safetensors",  # residual kinds: centroids and bucket values
    "lexical": "safetensors",  # the optional BM25 sidecar (index/lexical.py)
}
#: Files an index may have but need not (an index saved without a BM25 sidecar has none).
_OPTIONAL = {"lexical"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The index options a manifest may carry (passed back to the constructor on load).
OPTION_FIELDS = {
    "exact_subset_max": int,
    "recall_pool_factor": int,
    "compact_ratio": float,
    "lexical": bool,
}
_COARSE_INTS = ("hnsw_m", "ef_construction", "ef_search", "nprobe")
#: The coarse rows' dtype in indexes of format version 1.
_LEGACY_COARSE = np.dtype(np.float32)


def file_name_pattern(kind: str) -> re.Pattern[str]:
    """The only names a file of ``kind`` may have (no separators, no absolute paths)."""
    return re.compile(rf"^{kind}-[0-9a-f]{{12}}\.{_EXT[kind]}$")


def expected_name(kind: str) -> str:
    """Human-readable form of :func:`file_name_pattern`."""
    return f"{kind}-<12 hex digits>.{_EXT[kind]}"


class _Checker:
    def __init__(self, folder: Path) -> None:
        self.where = Path(folder) / "manifest.json"

    def fail(self, field: str, problem: str) -> IndexCorruptedError:
        return IndexCorruptedError(
            f"{self.where}: field {field!r} {problem}; the index is damaged or was edited. "
            "Restore it from a backup or rebuild it."
        )

    def get(self, obj: dict[str, Any], key: str, prefix: str = "") -> Any:
        field = f"{prefix}{key}"
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(field, "is missing")
        return obj[key]

    def integer(self, obj: dict[str, Any], key: str, prefix: str = "", low: int = 0) -> int:
        value = self.get(obj, key, prefix)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(f"{prefix}{key}", f"must be an integer >= {low}, got {value!r}")
        return value


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Check every field of ``manifest`` (read from ``folder``) as the module docstring says.

    Raises:
        IndexCorruptedError: naming the first field that is missing, of the wrong type, out of
            range, or inconsistent with another field.
    """
    c = _Checker(folder)
    dim = c.integer(manifest, "dim", low=1)
    k = c.integer(manifest, "vectors_per_doc", low=1)
    fp = manifest.get("model_fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise c.fail("model_fingerprint", f"must be a string or null, got {fp!r}")
    dtype = c.get(manifest, "dtype")
    if dtype not in STORAGE_KINDS:
        raise c.fail("dtype", f"must be one of {list(STORAGE_KINDS)}, got {dtype!r}")
    stored = manifest.get("stored_vectors", k)  # index-time truncation (default: all K)
    if isinstance(stored, bool) or not isinstance(stored, int) or not 1 <= stored <= k:
        raise c.fail("stored_vectors", f"must be an integer in [1, {k}], got {stored!r}")
    if c.get(manifest, "coarse_vector") not in ("first", "mean"):
        raise c.fail(
            "coarse_vector", f"must be 'first' or 'mean', got {manifest['coarse_vector']!r}"
        )
    budgets = c.get(manifest, "budgets")
    if not isinstance(budgets, list) or not all(
        isinstance(b, list) and len(b) == 2 and all(type(x) is int and x >= 1 for x in b)
        for b in budgets
    ):
        raise c.fail("budgets", f"must be a list of [r_q, r_c] integer pairs, got {budgets!r}")
    if any(b[1] > k for b in budgets):
        raise c.fail("budgets", f"holds a budget with more than vectors_per_doc={k} vectors")
    generation = manifest.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise c.fail("generation", f"must be an integer >= 0, got {generation!r}")
    _check_options(c, manifest.get("options", {}))
    _check_coarse(c, c.get(manifest, "coarse_index"))
    counts = c.get(manifest, "counts")
    rows = c.integer(counts, "rows", "counts.")
    docs = c.integer(counts, "documents", "counts.")
    deleted = c.integer(counts, "deleted", "counts.")
    if docs + deleted != rows:
        raise c.fail("counts", f"documents {docs} + deleted {deleted} != rows {rows}")
    files = c.get(manifest, "files")
    if not isinstance(files, dict):
        raise c.fail("files", "must be an object")
    codec = VectorCodec(dtype, dim, num_vectors=stored)
    side = codec.side  # int8 and tiered: "scales"; the residual kinds: "codes"
    required = {"vectors", "coarse", "docs"}
    if manifest["coarse_index"]["kind"] != "flat":  # a flat FAISS index is rebuilt from the rows
        required.add("faiss")
    required |= {side[0]} if side is not None else set()
    required |= {"codebook"} if codec.book is not None else set()
    for kind in sorted(required):
        c.get(files, kind, "files.")
    extra = set(files) - required - _OPTIONAL - {"faiss"}
    if extra:
        raise c.fail(f"files.{sorted(extra)[0]}", f"is not a file of a {dtype} index")
    vshape = list(codec.row_shape(stored, dim))
    # float16 coarse rows, or float32 ones written before format version 2
    legacy = files.get("coarse", {}).get("np_dtype") == _LEGACY_COARSE.str
    coarse_dtype = _LEGACY_COARSE if legacy else COARSE_DTYPE
    shapes: dict[str, tuple[list[int], np.dtype, int]] = {
        "vectors": (vshape, codec.np_dtype, codec.np_dtype.itemsize * int(np.prod(vshape))),
        "coarse": ([dim], coarse_dtype, coarse_dtype.itemsize * dim),
    }
    if side is not None:
        shapes[side[0]] = ([stored], side[1], side[1].itemsize * stored)
    for kind in [k for k in _EXT if k in files]:  # vectors first: its error explains the rest
        info = files[kind]
        prefix = f"files.{kind}."
        name = c.get(info, "name", prefix)
        if not isinstance(name, str) or not file_name_pattern(kind).match(name):
            raise c.fail(
                f"{prefix}name", f"must be a file name {expected_name(kind)} inside the index "
                f"folder, got {name!r}"
            )  # fmt: skip
        size = c.integer(info, "bytes", prefix)
        if kind in shapes:
            shape, np_dtype, row_bytes = shapes[kind]
            if c.get(info, "row_shape", prefix) != shape:
                raise c.fail(f"{prefix}row_shape", f"must be {shape} (dim {dim}, "
                             f"vectors_per_doc {k}), got {info['row_shape']!r}")  # fmt: skip
            if c.get(info, "np_dtype", prefix) != np_dtype.str:
                raise c.fail(f"{prefix}np_dtype", f"must be {np_dtype.str!r} for dtype "
                             f"{dtype!r}, got {info['np_dtype']!r}")  # fmt: skip
            if c.integer(info, "rows", prefix) != rows:
                raise c.fail(f"{prefix}rows", f"is {info['rows']}, counts.rows is {rows}")
            if size != rows * row_bytes:
                raise c.fail(f"{prefix}bytes", f"is {size}, but {rows} rows of {row_bytes} "
                             f"bytes are {rows * row_bytes}")  # fmt: skip
            _check_blocks(c, prefix, c.get(info, "sha256_blocks", prefix), rows)
        else:
            digest = c.get(info, "sha256", prefix)
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise c.fail(f"{prefix}sha256", "must be a 64-digit hex sha256")


def _check_options(c: _Checker, options: Any) -> None:
    if not isinstance(options, dict):
        raise c.fail("options", "must be an object")
    for key, value in options.items():
        kind = OPTION_FIELDS.get(key)
        if kind is None:
            raise c.fail(f"options.{key}", f"is not an index option ({sorted(OPTION_FIELDS)})")
        if kind is bool:
            if not isinstance(value, bool):
                raise c.fail(f"options.{key}", f"must be true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise c.fail(f"options.{key}", f"must be a number >= 0, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise c.fail(f"options.{key}", f"must be an integer, got {value!r}")


def _check_coarse(c: _Checker, coarse: Any) -> None:
    p = "coarse_index."
    if c.get(coarse, "setting", p) not in ("auto", "flat", "hnsw", "ivf"):
        raise c.fail(f"{p}setting", f"must be auto, flat, hnsw or ivf, got {coarse['setting']!r}")
    if c.get(coarse, "kind", p) not in ("flat", "hnsw", "ivf"):
        raise c.fail(f"{p}kind", f"must be flat, hnsw or ivf, got {coarse['kind']!r}")
    c.integer(coarse, "stale", p)
    for key in _COARSE_INTS:
        c.integer(coarse, key, p, low=1)
    nlist = c.get(coarse, "ivf_nlist", p)
    if nlist is not None and (isinstance(nlist, bool) or not isinstance(nlist, int) or nlist < 1):
        raise c.fail(f"{p}ivf_nlist", f"must be null or an integer >= 1, got {nlist!r}")


def _check_blocks(c: _Checker, prefix: str, blocks: Any, rows: int) -> None:
    """Checksum blocks must cover rows ``[0, rows)`` contiguously (none only when ``rows == 0``)."""
    field = f"{prefix}sha256_blocks"
    if not isinstance(blocks, list):
        raise c.fail(field, "must be a list")
    if rows and not blocks:
        raise c.fail(field, f"is empty for {rows} rows: checksums are required")
    at = 0
    for b in blocks:
        if (
            not isinstance(b, dict)
            or type(b.get("start")) is not int
            or type(b.get("end")) is not int
            or b["start"] != at
            or b["end"] <= b["start"]
            or not isinstance(b.get("sha256"), str)
            or not _HEX64.match(b["sha256"])
        ):
            raise c.fail(
                field, f"has a bad block {b!r} (blocks must cover rows 0..{rows} in order)"
            )
        at = b["end"]
    if at != rows:
        raise c.fail(field, f"covers rows 0..{at}, but there are {rows} rows")


def manifest_bytes(folder: Path) -> bytes | None:
    """The raw manifest (``None`` when missing): what identifies a committed generation."""
    try:
        return (folder / MANIFEST).read_bytes()
    except OSError:
        return None


def disk_generation(folder: Path) -> int:
    """The generation of the manifest in ``folder`` (0: no manifest yet, or one written before
    generations were recorded)."""
    if not (folder / MANIFEST).exists():
        return 0
    return int(read_manifest(folder).get("generation", 0))
