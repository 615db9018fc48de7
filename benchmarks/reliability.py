"""Reliability harnesses: kill -9 at every file-system step, readers during writes, two raw
writers, tampered manifests. The figures in ``docs/reliability.md`` come from this script.

Parts (``--parts``, default all):

* ``kill-index`` - a raw ``MultiVectorIndex`` created (new folder, add, save) and updated
  (load, add, delete, save), killed with SIGKILL just before its N-th file-system step
  (``os.replace / fsync / unlink / mkdir / truncate / rmdir``, ``os.open`` and ``open`` for
  writing) for every N the operation has. After each kill the folder must load as exactly the
  old or the new index (or, before the first commit of a create, as "no index"), and running
  the operation again must give the new index.
* ``kill-collection`` - the same for a ``Collection`` (default model): ``create`` +
  ``add_paths`` into a new folder, and ``add_paths`` of new and changed files into an existing
  one. After each kill: the folder opens (or is still creatable), and a rerun indexes every
  document (lost documents are counted).
* ``readers`` - a writer process loads, adds, deletes (compactions included) and saves for
  ``--seconds`` while this process opens and searches the index in a loop; every failed open
  and every document the writer committed but the final index lacks are counted. ``--collection``
  runs the same loop at the ``Collection`` level too.
* ``writers`` - two processes add 20 documents per round to one index folder; a writer that
  finds the folder locked or stale reloads and retries. Lost and wrongly stored documents are
  counted.
* ``tampered`` - each manifest edit of :data:`TAMPERED`; refusals naming the field are counted.

Kills are simulated in a ``fork`` of this process (so the model loads once), by wrapping the
``os`` functions the index and collection code writes through.

Usage::

    python benchmarks/reliability.py                      # everything, prints a table
    python benchmarks/reliability.py --parts kill-index writers tampered --json out.json
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

K, D = 8, 16
PARTS = ("kill-index", "kill-collection", "readers", "writers", "tampered")
_STEP_FUNCS = ("replace", "rename", "fsync", "unlink", "mkdir", "rmdir", "truncate", "ftruncate")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# ---------------------------------------------------------------- kill at step N
def _arm(kill_at: int) -> None:
    """In a child: SIGKILL this process just before its ``kill_at``-th file-system step."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **kw: Any) -> Any:
            tick()
            return fn(*a, **kw)

        return inner

    for name in _STEP_FUNCS:
        setattr(os, name, wrap(getattr(os, name)))
    raw_open, file_open = os.open, io.open

    def os_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
        if flags & _WRITE_FLAGS:
            tick()
        return raw_open(path, flags, *a, **kw)

    def py_open(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if any(c in mode for c in "wax+"):
            tick()
        return file_open(file, mode, *a, **kw)

    os.open = os_open  # type: ignore[assignment]
    builtins.open = io.open = py_open  # type: ignore[assignment]


def run_killed(op: Callable[[], None], kill_at: int) -> bool:
    """Run ``op`` in a fork killed before step ``kill_at``; ``True`` if it was killed, ``False``
    if it finished first (the step does not exist).

    Raises:
        RuntimeError: the operation failed on its own (not killed).
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            _arm(kill_at)
            op()
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code
            sys.stderr.write(f"child failed: {type(exc).__name__}: {exc}\n")
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return False
    raise RuntimeError(f"the operation failed by itself at kill point {kill_at} (status {status})")


def _vectors(ids: list[str]) -> np.ndarray:
    """Deterministic unit vectors ``(n, K, D)`` per id (so stored rows can be checked)."""
    out = np.empty((len(ids), K, D), dtype=np.float32)
    for i, doc_id in enumerate(ids):
        rng = np.random.default_rng(zlib.crc32(doc_id.encode()))
        x = rng.standard_normal((K, D)).astype(np.float32)
        out[i] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out


def _state(folder: Path) -> dict[str, bytes] | None:
    """Ids -> stored vector bytes of the index in ``folder`` (``None``: no index there)."""
    from metaembed_rag.index import MultiVectorIndex

    try:
        index = MultiVectorIndex.load(folder, mmap=False)
    except FileNotFoundError:
        return None
    ids = list(index.ids)
    rows = index.backend.rows_of(ids)
    vecs = index.backend.fetch(rows).numpy() if ids else np.empty((0, K, D))
    index.close()
    return {i: np.asarray(v).tobytes() for i, v in zip(ids, vecs, strict=True)}


def _expected(ids: list[str]) -> dict[str, bytes]:
    from metaembed_rag.index import MultiVectorIndex

    tmp = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32")
    tmp.add(ids, _vectors(ids))
    got = tmp.backend.fetch(tmp.backend.rows_of(ids)).numpy()
    return {i: np.asarray(v).tobytes() for i, v in zip(ids, got, strict=True)}


def kill_index(work: Path, max_steps: int = 200) -> dict[str, Any]:
    """The ``kill-index`` part (see the module docstring)."""
    from metaembed_rag.index import MultiVectorIndex

    base_ids = [f"d{i}" for i in range(30)]
    new_ids = [f"n{i}" for i in range(10)]

    def create(folder: Path) -> None:
        index = MultiVectorIndex(
            D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32", path=folder
        )
        index.add(base_ids, _vectors(base_ids))
        index.save()
        index.close()

    def update(folder: Path) -> None:
        index = MultiVectorIndex.load(folder)
        index.add(new_ids, _vectors(new_ids))
        index.delete(base_ids[:12])  # 12/40 deleted: the save compacts (new files)
        index.save()
        index.close()

    old = _expected(base_ids)
    new_ids_all = base_ids[12:] + new_ids
    new = _expected(new_ids_all)
    out: dict[str, Any] = {}
    template = work / "template"
    create(template)
    for name, op, before in (("create", create, None), ("update", update, old)):
        survived = killed = lost = 0
        failures: list[str] = []
        final = old if name == "create" else new
        for n in range(1, max_steps + 1):
            folder = work / f"{name}-{n}"
            if name == "update":
                shutil.copytree(template, folder)
            if not run_killed(lambda f=folder, o=op: o(f), n):
                shutil.rmtree(folder, ignore_errors=True)
                break
            killed += 1
            try:
                state = _state(folder)
                if state not in (before, final) and not (name == "create" and state is None):
                    raise AssertionError(
                        f"state after the kill is neither old nor new ({state and len(state)} docs)"
                    )
                if name == "create" and state is None:
                    create(folder)  # rerun: must finish the half-created folder
                elif name == "update" and state == before:
                    update(folder)
                result = _state(folder) or {}
                lost += len(set(final) - set(result))
                if result != final:
                    raise AssertionError("the rerun did not give the new index")
                survived += 1
            except Exception as exc:  # noqa: BLE001 - counted and listed
                failures.append(f"step {n}: {type(exc).__name__}: {exc}")
            shutil.rmtree(folder, ignore_errors=True)
        out[name] = {"kill_points": killed, "survived": survived, "lost_documents": lost,
                     "failures": failures}  # fmt: skip
    return out


# ---------------------------------------------------------------- collection kills
def _write_docs(folder: Path, names: list[str], tag: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.txt").write_text(
            f"Document {name}{tag}. " + " ".join(f"word{name}{j}{tag}" for j in range(40)),
            encoding="utf-8",
        )


def _sources(col: Any) -> dict[str, list[str]]:
    return {Path(k).name: sorted(v.get("chunks", [])) for k, v in col.files.items()}


def kill_collection(work: Path, max_steps: int = 200) -> dict[str, Any]:
    """The ``kill-collection`` part (see the module docstring)."""
    import torch

    from metaembed_rag.collection import Collection
    from metaembed_rag.collection.folder import creatable
    from metaembed_rag.hub import load_model
    from metaembed_rag.model import DEFAULT_MODEL

    torch.set_num_threads(1)
    model = load_model(None, "cpu")
    docs = work / "docs"
    _write_docs(docs, ["a", "b", "c"])
    more = work / "more"
    _write_docs(more, ["d", "e"])

    def create(folder: Path) -> None:
        col = Collection.open_or_create(folder, model, model_name=DEFAULT_MODEL)
        col.add_paths([docs], progress=False)
        col.close()

    def update(folder: Path) -> None:
        col = Collection.open(folder, model)
        col.add_paths([docs, more], progress=False)
        col.close()

    def ids_of(folder: Path) -> set[str]:
        col = Collection.open(folder, model)
        ids = set(col.index.ids)
        col.close()
        return ids

    template = work / "template"
    create(template)
    old_ids = ids_of(template)
    # the update also changes a file: its chunks are replaced
    _write_docs(docs, ["b"], tag=" changed")
    clean = work / "clean-update"
    shutil.copytree(template, clean)
    update(clean)
    new_ids = ids_of(clean)
    created = work / "clean-create"
    create(created)
    create_ids = ids_of(created)
    out: dict[str, Any] = {}
    for name, op, final in (("create", create, create_ids), ("update", update, new_ids)):
        survived = killed = lost = 0
        failures: list[str] = []
        for n in range(1, max_steps + 1):
            folder = work / f"{name}-{n}"
            if name == "update":
                shutil.copytree(template, folder)
            if not run_killed(lambda f=folder, o=op: o(f), n):
                shutil.rmtree(folder, ignore_errors=True)
                break
            killed += 1
            try:
                if (folder / "collection.json").exists():
                    ids_of(folder)  # opens (repairing an interrupted commit)
                elif not creatable(folder):
                    raise AssertionError("the folder is neither a collection nor creatable")
                create(folder) if name == "create" else update(folder)
                result = ids_of(folder)
                lost += len(final - result)
                if result != final:
                    raise AssertionError(f"rerun: {len(result)} chunks, expected {len(final)}")
                survived += 1
            except Exception as exc:  # noqa: BLE001 - counted and listed
                failures.append(f"step {n}: {type(exc).__name__}: {exc}")
            shutil.rmtree(folder, ignore_errors=True)
        out[name] = {"kill_points": killed, "survived": survived, "lost_documents": lost,
                     "failures": failures}  # fmt: skip
    _ = old_ids
    return out


# ---------------------------------------------------------------- readers during writes
def readers(work: Path, seconds: float, collection: bool) -> dict[str, Any]:
    """The ``readers`` part (see the module docstring)."""
    import torch

    from metaembed_rag.index import MultiVectorIndex

    folder = work / "rw"
    base = [f"b{i}" for i in range(40)]
    index = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32",
                             path=folder)  # fmt: skip
    index.add(base, _vectors(base))
    index.save()
    index.close()
    deadline = time.time() + seconds
    pid = os.fork()
    if pid == 0:  # the writer
        code = 0
        try:
            r = 0
            while time.time() < deadline:
                w = MultiVectorIndex.load(folder)
                ids = [f"w{r}-{j}" for j in range(5)]
                w.add(ids, _vectors(ids))
                if r % 3 == 2:  # delete the previous rounds' documents: compactions
                    w.delete([f"w{r - 1}-{j}" for j in range(5)])
                w.save()
                w.close()
                r += 1
            (work / "rounds").write_text(str(r))
        except BaseException as exc:  # noqa: BLE001
            sys.stderr.write(f"writer failed: {exc}\n")
            code = 3
        os._exit(code)
    opens = failed = 0
    errors: dict[str, int] = {}
    examples: list[str] = []
    q = torch.from_numpy(_vectors(["query"])[:, :4])
    while time.time() < deadline:
        opens += 1
        try:
            r = MultiVectorIndex.load(folder)
            r.search(q, k=5)
            r.close()
        except Exception as exc:  # noqa: BLE001 - counted, the first few kept verbatim
            failed += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if len(examples) < 3:
                examples.append(f"{type(exc).__name__}: {exc}")
    _, status = os.waitpid(pid, 0)
    rounds = int((work / "rounds").read_text())
    expected = set(base)
    for r in range(rounds):
        expected |= {f"w{r}-{j}" for j in range(5)}
        if r % 3 == 2:
            expected -= {f"w{r - 1}-{j}" for j in range(5)}
    final = _state(folder) or {}
    want = _expected(sorted(expected))
    out = {
        "index": {
            "writer_commits": rounds, "reader_opens": opens, "failed_opens": failed,
            "errors": errors, "error_examples": examples,
            "lost_documents": len(expected - set(final)),
            "wrong_vectors": sum(final.get(i) != v for i, v in want.items() if i in final),
            "writer_ok": os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
        }
    }  # fmt: skip
    if collection:
        out["collection"] = _collection_readers(work, seconds)
    return out


def _collection_readers(work: Path, seconds: float) -> dict[str, Any]:
    import torch

    from metaembed_rag.collection import Collection
    from metaembed_rag.hub import load_model
    from metaembed_rag.model import DEFAULT_MODEL

    torch.set_num_threads(1)
    model = load_model(None, "cpu")
    folder = work / "col"
    docs = work / "col-docs"
    _write_docs(docs, ["x"])
    col = Collection.create(folder, model, model_name=DEFAULT_MODEL)
    col.add_paths([docs], progress=False)
    col.close()
    deadline = time.time() + seconds
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            r = 0
            w = Collection.open(folder, model)
            while time.time() < deadline:
                _write_docs(docs, [f"r{r}"])
                w.add_paths([docs], progress=False)
                r += 1
            w.close()
            (work / "col-rounds").write_text(str(r))
        except BaseException as exc:  # noqa: BLE001
            sys.stderr.write(f"collection writer failed: {exc}\n")
            code = 3
        os._exit(code)
    opens = failed = 0
    errors: dict[str, int] = {}
    examples: list[str] = []
    while time.time() < deadline:
        opens += 1
        try:
            c = Collection.open(folder, load_model=False)
            c.info()
            c.close()
        except Exception as exc:  # noqa: BLE001 - counted, the first few kept verbatim
            failed += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if len(examples) < 3:
                examples.append(f"{type(exc).__name__}: {exc}")
    os.waitpid(pid, 0)
    rounds = int((work / "col-rounds").read_text())
    c = Collection.open(folder, model)
    names = set(_sources(c))
    c.close()
    lost = len({f"r{r}.txt" for r in range(rounds)} - names)
    return {"writer_commits": rounds, "reader_opens": opens, "failed_opens": failed,
            "errors": errors, "error_examples": examples, "lost_files": lost}  # fmt: skip


# ---------------------------------------------------------------- two raw writers
def writers(work: Path, rounds: int) -> dict[str, Any]:
    """The ``writers`` part (see the module docstring)."""
    from metaembed_rag.index import IndexLockedError, IndexStaleError, MultiVectorIndex

    folder = work / "ww"
    index = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32",
                             path=folder)  # fmt: skip
    index.save()
    index.close()
    pids = []
    for name in ("p", "q"):
        pid = os.fork()
        if pid == 0:
            code, retries = 0, 0
            try:
                for r in range(rounds):
                    ids = [f"{name}{r}-{j}" for j in range(20)]
                    while True:
                        w = MultiVectorIndex.load(folder, lock_timeout=30)
                        try:
                            w.add(ids, _vectors(ids))
                            w.save()
                            break
                        except (IndexLockedError, IndexStaleError):
                            retries += 1
                        finally:
                            w.close()
                (work / f"retries-{name}").write_text(str(retries))
            except BaseException as exc:  # noqa: BLE001
                sys.stderr.write(f"writer {name} failed: {exc}\n")
                code = 3
            os._exit(code)
        pids.append(pid)
    ok = all(os.WEXITSTATUS(os.waitpid(p, 0)[1]) == 0 for p in pids)
    expected_ids = [f"{n}{r}-{j}" for n in "pq" for r in range(rounds) for j in range(20)]
    final = _state(folder) or {}
    want = _expected(expected_ids)
    return {
        "documents_committed": len(expected_ids),
        "lost_documents": len(set(expected_ids) - set(final)),
        "wrong_vectors": sum(final.get(i) != v for i, v in want.items() if i in final),
        "stale_or_locked_retries": sum(
            int((work / f"retries-{n}").read_text()) for n in "pq" if (work / f"retries-{n}").exists()
        ),
        "writers_ok": ok,
    }  # fmt: skip


# ---------------------------------------------------------------- tampered manifests
def _files(m: dict[str, Any]) -> dict[str, Any]:
    return m["files"]


#: Manifest edits -> the field the refusal must name.
TAMPERED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "absolute vectors path": (lambda m: _files(m)["vectors"].update(name="/etc/passwd"),
                              "files.vectors.name"),
    "vectors path with ..": (lambda m: _files(m)["vectors"].update(
        name="../vectors-0123456789ab.bin"), "files.vectors.name"),
    "docs named like vectors": (lambda m: _files(m)["docs"].update(
        name=_files(m)["vectors"]["name"]), "files.docs.name"),
    "empty checksums": (lambda m: _files(m)["vectors"].update(sha256_blocks=[]),
                        "files.vectors.sha256_blocks"),
    "checksum block gap": (lambda m: _files(m)["coarse"]["sha256_blocks"][0].update(start=1),
                           "files.coarse.sha256_blocks"),
    "dim edited": (lambda m: m.update(dim=8), "files.vectors.row_shape"),
    "row count edited": (lambda m: m["counts"].update(rows=5), "counts"),
    "renamed key": (lambda m: m["coarse_index"].update(ef=m["coarse_index"].pop("ef_search")),
                    "coarse_index.ef_search"),
    "path option injected": (lambda m: m["options"].update(path="/tmp/elsewhere"),
                             "options.path"),
    "bad dtype": (lambda m: m.update(dtype="float64"), "dtype"),
    "missing docs checksum": (lambda m: _files(m)["docs"].pop("sha256"), "files.docs.sha256"),
    "bytes edited": (lambda m: _files(m)["coarse"].update(bytes=4), "files.coarse.bytes"),
    "extra file kind": (lambda m: _files(m).update(scales=_files(m)["coarse"]), "files.scales"),
    "budget too wide": (lambda m: m.update(budgets=[[1, 1], [2, 999]]), "budgets"),
    "negative generation": (lambda m: m.update(generation=-1), "generation"),
}  # fmt: skip


def tampered(work: Path) -> dict[str, Any]:
    """The ``tampered`` part: every edit of :data:`TAMPERED` must be refused naming its field,
    with nothing written in or outside the folder."""
    from metaembed_rag.index import IndexCorruptedError, MultiVectorIndex

    ids = [f"d{i}" for i in range(6)]
    refused, failures = 0, []
    for case, (edit, field) in TAMPERED.items():
        folder = work / "t" / case.replace(" ", "-").replace(".", "")
        index = MultiVectorIndex(D, num_vectors=K, budgets=[(1, 1), (2, 4)], dtype="float32",
                                 path=folder)  # fmt: skip
        index.add(ids, _vectors(ids))
        index.save()
        index.close()
        path = folder / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))
        before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
        try:
            MultiVectorIndex.load(folder).close()
            failures.append(f"{case}: loaded")
        except IndexCorruptedError as exc:
            if f"'{field}'" in str(exc) and before == sorted(
                (p.name, p.stat().st_mtime_ns) for p in folder.iterdir()
            ):
                refused += 1
            else:
                failures.append(f"{case}: {exc}")
    return {"cases": len(TAMPERED), "refused_naming_field": refused, "failures": failures}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--seconds", type=float, default=20.0, help="readers: loop length")
    ap.add_argument("--collection", action="store_true", help="readers: Collection level too")
    ap.add_argument("--rounds", type=int, default=10, help="writers: rounds per writer")
    ap.add_argument("--max-steps", type=int, default=200, help="kill points tried at most")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="metaembed-reliability-") as tmp:
        work = Path(tmp)
        for part in args.parts:
            sub = work / part
            sub.mkdir()
            t0 = time.perf_counter()
            if part == "kill-index":
                results[part] = kill_index(sub, args.max_steps)
            elif part == "kill-collection":
                results[part] = kill_collection(sub, args.max_steps)
            elif part == "readers":
                results[part] = readers(sub, args.seconds, args.collection)
            elif part == "writers":
                results[part] = writers(sub, args.rounds)
            else:
                results[part] = tampered(sub)
            results[part]["seconds"] = round(time.perf_counter() - t0, 1)
            print(part, json.dumps(results[part], indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
