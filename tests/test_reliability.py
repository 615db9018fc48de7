"""Reliability and security guarantees (docs/reliability.md lists each with its test here):
no code runs from saved data, tampered manifests are refused naming the field, one writer per
index folder, readers open a consistent generation and never write, interrupted creation
resumes, bad inputs give one-line errors or reported skips, and the demo server's checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _index_utils import D, K, make_index, unit

from metaembed_rag.index import (
    IndexCorruptedError,
    IndexLockedError,
    IndexStaleError,
    MultiVectorIndex,
)

# ---------------------------------------------------------------- 1. no code from data


def _model_with(tmp_path: Path, **changes) -> Path:
    """A copy of the packaged default model's folder with config fields changed."""
    from metaembed_rag.hub import BUILTIN_MODELS
    from metaembed_rag.model import DEFAULT_MODEL

    src = BUILTIN_MODELS[DEFAULT_MODEL]
    dest = tmp_path / "model"
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "metaembed_config.json").read_text())
    cfg.update(changes)
    (dest / "metaembed_config.json").write_text(json.dumps(cfg))
    return dest


def test_saved_package_backbone_must_be_allowed(tmp_path, monkeypatch):
    """A model folder naming ``package:this_module_would_run`` never imports it."""
    from metaembed_rag.hub import UntrustedModelError, resolve_backbone_path
    from metaembed_rag.model import MetaEmbedModel

    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    folder = _model_with(tmp_path, backbone="package:evil_module")
    with pytest.raises(UntrustedModelError, match="--allow-package evil_module"):
        MetaEmbedModel.from_pretrained(folder)
    assert imported == []
    # the caller's own argument, or an explicit allow, may import it
    with pytest.raises(ValueError, match="get_model_path"):
        resolve_backbone_path("package:evil_module", allow_packages=["evil_module"])
    assert imported == ["evil_module"]


def test_saved_trust_remote_code_is_ignored(tmp_path, monkeypatch, caplog):
    """``"trust_remote_code": true`` in a saved config does not reach transformers."""
    import metaembed_rag.model as model_mod

    seen = []

    def fake_load(path, remote, dtype):
        seen.append(remote)
        raise RuntimeError("stop here")

    monkeypatch.setattr(model_mod, "load_backbone", fake_load)
    folder = _model_with(tmp_path, trust_remote_code=True)
    with pytest.raises(RuntimeError, match="stop here"):
        model_mod.MetaEmbedModel.from_pretrained(folder)
    with pytest.raises(RuntimeError, match="stop here"):
        model_mod.MetaEmbedModel.from_pretrained(folder, trust_remote_code=True)
    assert seen == [False, True]
    assert "never turns it on" in caplog.text


def test_cli_allow_package_and_untrusted_one_line(tmp_path, capsys):
    from metaembed_rag.cli import main

    folder = _model_with(tmp_path, backbone="package:evil_module")
    assert main(["info", "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "evil_module" in err[0]


# ---------------------------------------------------------------- 2. tampered manifests


def _saved(tmp_path: Path, n: int = 6, dtype: str = "float32") -> Path:
    rng = np.random.default_rng(0)
    index = make_index(dtype=dtype, path=tmp_path / "idx")
    index.add([f"d{i}" for i in range(n)], unit(rng, n, K, D), [f"text {i}" for i in range(n)])
    index.save()
    index.close()
    return tmp_path / "idx"


def _tamper(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


TAMPERED = {
    "absolute vectors path": (
        lambda m: m["files"]["vectors"].update(name="/etc/passwd"),
        "files.vectors.name",
    ),
    "vectors path with ..": (
        lambda m: m["files"]["vectors"].update(name="../vectors-0123456789ab.bin"),
        "files.vectors.name",
    ),
    "docs named like vectors": (
        lambda m: m["files"]["docs"].update(name=m["files"]["vectors"]["name"]),
        "files.docs.name",
    ),
    "empty checksums": (
        lambda m: m["files"]["vectors"].update(sha256_blocks=[]),
        "files.vectors.sha256_blocks",
    ),
    "dim edited": (lambda m: m.update(dim=8), "files.vectors.row_shape"),
    "row count edited": (lambda m: m["counts"].update(rows=5), "counts"),
    "renamed key": (
        lambda m: m["coarse_index"].update(ef=m["coarse_index"].pop("ef_search")),
        "coarse_index.ef_search",
    ),
    "path option injected": (lambda m: m["options"].update(path="/tmp/elsewhere"), "options.path"),
    "bad dtype": (lambda m: m.update(dtype="float64"), "dtype"),
    "missing docs checksum": (lambda m: m["files"]["docs"].pop("sha256"), "files.docs.sha256"),
    "bytes edited": (lambda m: m["files"]["coarse"].update(bytes=4), "files.coarse.bytes"),
    "extra file kind": (lambda m: m["files"].update(scales=m["files"]["coarse"]), "files.scales"),
    "coarse dtype edited": (
        lambda m: m["files"]["coarse"].update(np_dtype="<f8"),
        "files.coarse.np_dtype",
    ),
    # only a flat coarse stage may go without its FAISS file (rebuilt from the rows on load)
    "hnsw without its FAISS file": (
        lambda m: m["coarse_index"].update(kind="hnsw", setting="hnsw"),
        "files.faiss",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_manifest_refused_naming_field(tmp_path, case):
    edit, field = TAMPERED[case]
    folder = _saved(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    _tamper(folder, edit)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(IndexCorruptedError) as exc:
        MultiVectorIndex.load(folder)
    assert f"'{field}'" in str(exc.value)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert victim.read_text() == "untouched"


# ---------------------------------------------------------------- 3. writers and readers


def test_two_raw_writers_one_waits_then_is_told_stale(tmp_path):
    """Two ``MultiVectorIndex`` writers on one folder: the second cannot write while the first
    holds the lock, and after the first commits it is refused (its view is stale) instead of
    overwriting the first writer's rows."""
    rng = np.random.default_rng(1)
    folder = _saved(tmp_path)
    a = MultiVectorIndex.load(folder, lock_timeout=0.2)
    b = MultiVectorIndex.load(folder, lock_timeout=0.2)
    vec_a, vec_b = unit(rng, 20, K, D), unit(rng, 20, K, D)
    a.add([f"a{i}" for i in range(20)], vec_a)
    with pytest.raises(IndexLockedError, match=r"locked by pid \d+"):
        b.add([f"b{i}" for i in range(20)], vec_b)
    a.save()
    with pytest.raises(IndexStaleError, match="Load it again"):
        b.add([f"b{i}" for i in range(20)], vec_b)
    b.close()
    b = MultiVectorIndex.load(folder)
    b.add([f"b{i}" for i in range(20)], vec_b)
    b.save()
    final = MultiVectorIndex.load(folder, mmap=False)
    assert len(final) == 6 + 40
    for prefix, vec in (("a", vec_a), ("b", vec_b)):
        got = final.backend.fetch(final.backend.rows_of([f"{prefix}{i}" for i in range(20)]))
        np.testing.assert_allclose(got.numpy(), vec, atol=1e-6)


def test_reader_never_writes_into_the_folder(tmp_path):
    folder = _saved(tmp_path)
    (folder / ".lock").unlink(missing_ok=True)
    (folder / ".readers").unlink()  # as in a folder saved before the reader lock existed
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    index = MultiVectorIndex.load(folder)
    index.search(np.asarray(unit(np.random.default_rng(2), 1, 4, D)), k=3)
    index.close()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_save_keeps_files_an_opening_reader_may_need(tmp_path, monkeypatch):
    """While a reader holds the shared lock (it is opening the files of the generation it read),
    a save commits but deletes no retired file; the next save, with no reader opening, does."""
    from metaembed_rag.index import readers

    monkeypatch.setattr(readers, "REMOVE_WAIT", 0.2)
    folder = _saved(tmp_path)
    first = {p.name for p in folder.iterdir() if p.suffix == ".jsonl"}
    rng = np.random.default_rng(3)
    with readers.reading(folder) as held:
        assert held
        w = MultiVectorIndex.load(folder)  # its own load takes the shared lock too
        w.add(["x1"], unit(rng, 1, K, D))
        w.save()
        w.close()
        now = {p.name for p in folder.iterdir() if p.suffix == ".jsonl"}
        assert first < now  # the retired docs file is still there, the new one beside it
        assert len(MultiVectorIndex.load(folder)) == 7  # new readers see the commit
    w = MultiVectorIndex.load(folder)
    w.add(["x2"], unit(rng, 1, K, D))
    w.save()
    w.close()
    assert len({p.name for p in folder.iterdir() if p.suffix == ".jsonl"}) == 1
    assert first.isdisjoint(p.name for p in folder.iterdir())


def test_new_index_folder_is_locked_until_saved(tmp_path):
    index = make_index(path=tmp_path / "new")
    with pytest.raises(IndexLockedError):
        make_index(path=tmp_path / "new", lock_timeout=0.1)
    index.save()
    with pytest.raises(FileExistsError):
        make_index(path=tmp_path / "new", lock_timeout=0.1)


# ---------------------------------------------------------------- harnesses (benchmarks/)


def _harness():
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location("bench_reliability", bench / "reliability.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_tampered_catalogue_all_refused(tmp_path):
    res = _harness().tampered(tmp_path)
    assert res["failures"] == [] and res["refused_naming_field"] == res["cases"] >= 15


def test_kill_index_first_steps(tmp_path):
    """The kill harness on its first 6 steps of a create and an update (all steps: slow)."""
    res = _harness().kill_index(tmp_path, max_steps=6)
    for op in ("create", "update"):
        assert res[op]["failures"] == [] and res[op]["lost_documents"] == 0
        assert res[op]["survived"] == res[op]["kill_points"] == 6


@pytest.mark.slow
def test_kill_index_every_step(tmp_path):
    res = _harness().kill_index(tmp_path)
    for op in ("create", "update"):
        assert res[op]["failures"] == [] and res[op]["lost_documents"] == 0
        assert res[op]["survived"] == res[op]["kill_points"] > 20


@pytest.mark.slow
def test_kill_collection_every_step(tmp_path):
    res = _harness().kill_collection(tmp_path)
    for op in ("create", "update"):
        assert res[op]["failures"] == [] and res[op]["lost_documents"] == 0
        assert res[op]["survived"] == res[op]["kill_points"] > 20


def test_readers_during_writes_short(tmp_path):
    res = _harness().readers(tmp_path, seconds=4, collection=False)["index"]
    assert res["writer_ok"] and res["writer_commits"] > 0 and res["reader_opens"] > 0
    assert res["failed_opens"] == 0 and res["lost_documents"] == 0 and res["wrong_vectors"] == 0


@pytest.mark.slow
def test_readers_during_writes_collection(tmp_path):
    res = _harness().readers(tmp_path, seconds=20, collection=True)
    for level in ("index", "collection"):
        assert res[level]["failed_opens"] == 0, res[level]
    assert res["index"]["lost_documents"] == 0 and res["collection"]["lost_files"] == 0


def test_two_raw_writer_processes(tmp_path):
    res = _harness().writers(tmp_path, rounds=3)
    assert res["writers_ok"] and res["lost_documents"] == 0 and res["wrong_vectors"] == 0


# ---------------------------------------------------------------- 4. resumable creation


def test_half_created_collection_is_finished(tmp_path):
    from metaembed_rag.collection.folder import CREATING_FILE, clear_half_created, creatable

    folder = tmp_path / "col"
    (folder / "index").mkdir(parents=True)
    (folder / "index" / "vectors-0123456789ab.bin").write_bytes(b"x" * 10)
    (folder / "files.json.tmp").write_text("{")
    assert not creatable(folder)  # not ours without the marker
    (folder / CREATING_FILE).write_text("")
    assert creatable(folder)
    assert clear_half_created(folder) and not (folder / "index").exists()
    (folder / "mine.txt").write_text("user data")
    assert not creatable(folder)  # anything of the user's: never touched


# ---------------------------------------------------------------- 6. bad inputs


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory):
    """A small collection built by the CLI (default model)."""
    from metaembed_rag.cli import main

    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"Document {i} about topic {i}. " * 5)
    assert main(["index", str(docs), "--index", str(root / "idx"), "--no-progress"]) == 0
    return root


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_fifo_is_skipped_not_read(cli_index, tmp_path, capsys):
    import os
    import signal

    from metaembed_rag.cli import main

    fifo = tmp_path / "f.txt"
    os.mkfifo(fifo)
    signal.alarm(120)  # a read of the FIFO would block forever
    try:
        code = main(["index", str(fifo), "--index", str(cli_index / "idx"), "--no-progress"])
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert code == 1 and "a FIFO (named pipe), not a regular file" in err


def test_huge_k_is_clamped(cli_index, capsys):
    from metaembed_rag.cli import main

    code = main(["search", "topic", "--index", str(cli_index / "idx"), "--k", "1000000000000"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("d1.txt") + out.count("d0.txt") + out.count("d2.txt") >= 3


def test_jsonl_records_empty_and_non_string(cli_index, tmp_path, capsys):
    from metaembed_rag.cli import main

    corpus = tmp_path / "c.jsonl"
    rows = [
        {"_id": "ok1", "text": "a fine record"},
        {"_id": "e1", "title": "", "text": ""},
        {"_id": ["x"], "text": "list id"},
        {"_id": "t1", "text": {"nested": 1}},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["index", str(corpus), "--index", str(cli_index / "idx"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "Skipped 1 empty record(s): e1 (c.jsonl:2)" in captured.out
    assert "c.jsonl:3: '_id' must be a string (or integer), got list" in captured.err
    assert "c.jsonl:4: 'text' of record 't1' must be a string, got dict" in captured.err


def _beir(tmp_path: Path, docs: list[dict]) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "topic one"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\te1\t1\n")
    return root


def test_eval_reports_empty_documents(tmp_path, capsys):
    from metaembed_rag.cli import main

    docs = [{"_id": "d1", "text": "topic one text"}, {"_id": "d2", "text": "other"},
            {"_id": "e1", "title": "", "text": "  "}]  # fmt: skip
    root = _beir(tmp_path, docs)
    out_json = tmp_path / "r.json"
    code = main(["eval", "--data", str(root), "--budgets", "16,64", "--no-cache",
                 "--json", str(out_json)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "skipped 1 empty document(s)" in err and "1 of them judged relevant" in err
    assert json.loads(out_json.read_text())["empty_docs"] == {"count": 1, "judged": 1,
                                                              "ids": ["e1"]}  # fmt: skip


def test_eval_non_string_text_is_one_line_error(tmp_path, capsys):
    from metaembed_rag.cli import main

    root = _beir(tmp_path, [{"_id": "d1", "text": {"a": 1}}, {"_id": "e1", "text": "x"}])
    assert main(["eval", "--data", str(root), "--no-cache"]) == 2
    assert "corpus.jsonl:1: 'text' of 'd1' must be a string, got dict" in _one_line_error(capsys)


# ---------------------------------------------------------------- 5. the demo server


@pytest.fixture(scope="module")
def demo_model():
    pytest.importorskip("fastapi")  # the `app` extra
    from metaembed_rag.hub import load_model

    return load_model(None, "cpu")


def _client(demo_model, tmp_path, **kw):
    from fastapi.testclient import TestClient

    from metaembed_rag.app import create_app

    kw.setdefault("allowed_hosts", {"testserver", "127.0.0.1", "localhost"})
    app = create_app(tmp_path / "idx", model=demo_model, **kw)
    return TestClient(app), app.state.demo


def test_server_refuses_cross_origin_and_plain_text(demo_model, tmp_path):
    c, state = _client(demo_model, tmp_path)
    evil = {"Origin": "http://evil.example"}
    r = c.post("/api/upload", files={"files": ("a.txt", b"planted")}, headers=evil)
    assert r.status_code == 403
    r = c.post("/api/index", content=b"", headers={**evil, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/api/index", content=b"", headers={"Sec-Fetch-Site": "cross-site",
                                                   "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 403
    assert list(state.uploads.iterdir()) == []
    same = {"Origin": "http://testserver"}
    r = c.post("/api/upload", files={"files": ("a.txt", b"fine")}, headers=same)
    assert r.status_code == 200 and r.json()["saved"] == ["a.txt"]


def test_server_checks_host_and_sets_headers(demo_model, tmp_path):
    c, _ = _client(demo_model, tmp_path, allowed_hosts={"127.0.0.1", "localhost"})
    assert c.get("/api/info", headers={"Host": "rebound.evil.example"}).status_code == 421
    r = c.get("/api/info", headers={"Host": "localhost:8000"})
    assert r.status_code == 200
    for response in (r, c.get("/", headers={"Host": "127.0.0.1:8000"})):
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_server_auth_token(demo_model, tmp_path):
    c, _ = _client(demo_model, tmp_path, auth_token="s3cret")
    assert c.get("/api/info").status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = c.get("/?token=s3cret")
    assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
    assert c.get("/api/info").status_code == 200  # the cookie


def test_server_upload_limit_while_streaming(demo_model, tmp_path):
    c, state = _client(demo_model, tmp_path, max_upload_mb=0.05)
    big = b"x" * (1 << 20)
    r = c.post("/api/upload", files={"files": ("big.txt", big)})
    assert r.status_code == 413  # declared Content-Length: refused before reading

    def chunks():
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="big.txt"'
        yield b"\r\nContent-Type: text/plain\r\n\r\n"
        for _ in range(64):
            yield b"y" * (64 << 10)
        yield b"\r\n" + boundary + b"--\r\n"

    r = c.post("/api/upload", content=chunks(),
               headers={"Content-Type": "multipart/form-data; boundary=b0undary"})  # fmt: skip
    assert r.status_code == 413
    assert list(state.uploads.iterdir()) == []


def test_server_concurrent_same_name_uploads(demo_model, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    c, state = _client(demo_model, tmp_path)
    bodies = [f"body number {i} ".encode() * 2000 for i in range(5)]

    def up(body: bytes):
        return c.post("/api/upload", files={"files": ("same.txt", body)})

    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(up, bodies))
    assert [r.status_code for r in responses] == [200] * 5
    names = [r.json()["saved"][0] for r in responses]
    assert len(set(names)) == 5
    stored = {(state.uploads / n).read_bytes() for n in names}
    assert stored == set(bodies)  # every file whole, none mixed or lost
    again = up(bodies[0]).json()["saved"][0]
    assert again in names  # the same bytes again: no new copy


def test_server_search_while_indexing_and_stop(demo_model, tmp_path, monkeypatch):
    import threading

    from metaembed_rag.app import state as state_mod

    c, state = _client(demo_model, tmp_path)
    c.post("/api/upload", files={"files": ("first.txt", b"Alpha beta gamma. " * 20)})
    assert c.post("/api/index", json={"files": None}).status_code == 200
    for i in range(3):
        c.post("/api/upload", files={"files": (f"more{i}.txt", f"More text {i}. ".encode() * 30)})
    entered, release = threading.Event(), threading.Event()
    original = state_mod._GatedModel.encode_documents

    def slow(self, items, **kw):
        entered.set()
        release.wait(60)
        return original(self, items, **kw)

    monkeypatch.setattr(state_mod._GatedModel, "encode_documents", slow)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=c.post("/api/index", json={})))
    worker.start()
    assert entered.wait(60)
    r = c.post("/api/search", json={"query": "alpha", "k": 2})  # not behind the indexing run
    assert r.status_code == 200 and r.json()["results"]
    state.stopping.set()  # what SIGINT / SIGTERM do
    release.set()
    worker.join(60)
    assert result["r"].status_code == 503 and "shutting down" in result["r"].json()["detail"]
    state.stopping.clear()
    monkeypatch.setattr(state_mod._GatedModel, "encode_documents", original)
    r = c.post("/api/index", json={})  # resumes: the rest is indexed now
    assert r.status_code == 200 and r.json()["files_added"] >= 1
    assert len(state.collection.files) == 4


@pytest.mark.slow
def test_serve_stops_on_sigterm_while_indexing(tmp_path):
    """A real `metaembed-rag serve` process exits within seconds of SIGTERM during indexing."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uploads = tmp_path / "up"
    uploads.mkdir()
    for i in range(40):
        (uploads / f"doc{i}.txt").write_text(f"Text number {i}. " * 3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaembed_rag.cli", "serve", "--index", str(tmp_path / "idx"),
         "--uploads", str(uploads), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "Ready" in line:
                break
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/index", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        threading_result = {}

        def call():
            try:
                urllib.request.urlopen(req, timeout=300)
            except Exception as exc:  # noqa: BLE001 - the 503 is expected
                threading_result["e"] = exc

        import threading

        t = threading.Thread(target=call, daemon=True)
        t.start()
        time.sleep(5)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
        print(f"SIGTERM during indexing -> exit in {elapsed:.1f} s")
        assert elapsed < 15
    finally:
        if proc.poll() is None:
            proc.kill()


def test_collection_size_ignores_a_file_a_save_removes(tmp_path, monkeypatch):
    """``Collection.info`` sums file sizes while a writer may delete retired files: a file
    listed and then gone is not counted (it raised FileNotFoundError for concurrent readers)."""
    from metaembed_rag.collection.core import _folder_bytes

    (tmp_path / "kept").write_bytes(b"x" * 10)
    gone = tmp_path / "gone"
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: iter([tmp_path / "kept", gone]))
    monkeypatch.setattr(Path, "is_file", lambda self: True)  # listed as a file, then removed
    assert _folder_bytes(tmp_path) == 10
