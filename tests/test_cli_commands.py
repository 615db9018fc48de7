"""The CLI's promises beyond index/search correctness: every command reports a bad input as
exactly one ``error:`` line without a traceback; ``search --interactive`` and ``search
--server`` answer several questions with one model load; ``index --json``; ``bench maxsim
--dtypes float32``."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaembed_rag import MetaEmbedModel
from metaembed_rag.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_model(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    model = MetaEmbedModel.from_backbone(tiny_bert_path, seed=0)
    return str(model.save_pretrained(tmp_path_factory.mktemp("cli_model") / "tiny"))


@pytest.fixture(scope="module")
def tiny_index(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from metaembed_rag.collection import Collection

    root = tmp_path_factory.mktemp("cli_docs")
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Moon orbits the Earth.")
    (docs / "b.md").write_text("# Plants\n\nPhotosynthesis turns light into sugar.")
    (docs / "c.html").write_text("<p>Insulin resistance causes type 2 diabetes.</p>")
    col = Collection.create(root / "idx", tiny_model)
    col.add_paths([docs], progress=False)
    col.close()
    return root / "idx"


# ------------------------------------------------------------------ one error line each
BAD_INPUTS = [
    (["demo", "--docs", "{tmp}/missing.txt"], "--docs"),
    (["info", "--index", "{tmp}/nothing"], "No collection at"),
    (["index", "{tmp}/missing"], "no such file or folder"),
    (["search", "   "], "the query is empty"),
    (["search", "moon", "--k", "0"], "--k"),
    (["search", "moon", "--server", "http://127.0.0.1:{port}"], "no metaembed-rag server answers"),
    (["search", "moon", "--server", "http://127.0.0.1:{port}", "--filter", "type=pdf"],
     "not available with --server"),
    (["bench", "nope"], "no benchmark 'nope'"),
    (["eval", "--data", "{tmp}/missing"], "not a folder"),
    (["train", "--config", "{tmp}/missing.toml"], "no such file"),
    (["serve", "--llm", "no-colon"], "expected 'module:attr'"),
    (["serve", "--budget", "x,y"], "budget"),
    (["serve", "--rerank", "nope"], "write mllm:MODEL"),
    (["serve", "--rerank", "mllm:x", "--rerank-candidates", "0"], "--rerank-candidates"),
    # usage errors: one line naming the command's --help, not argparse's usage block
    (["index"], "the following arguments are required: PATH"),
    (["search", "moon", "--k", "five"], "invalid int value"),
    (["frobnicate"], "invalid choice"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=lambda v: " ".join(v)[:40])
def test_every_command_reports_one_error_line(
    tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    port = str(_free_port())  # nothing listens there
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{port}", port) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from parse_args
        rc = exc.code
    _, err = capsys.readouterr()
    assert rc == 2, err
    line = _one_error_line(err)
    assert message in line, line
    assert err.strip() == line or argv[0] == "bench", err  # nothing but that line


def test_unexpected_failures_are_one_line_too(monkeypatch, capsys, caplog) -> None:
    import metaembed_rag.cli.info as info

    def boom(args: object) -> int:
        raise RuntimeError("the disk\nfell off")

    monkeypatch.setattr(info, "run", boom)
    rc, _, err = _run(capsys, "info")
    assert rc == 2
    line = _one_error_line(err)
    assert line == (
        "error: info failed unexpectedly: RuntimeError: the disk fell off (run with -v for the "
        "traceback)"
    )
    caplog.clear()
    rc, _, err = _run(capsys, "-v", "info")
    assert rc == 2 and any(r.exc_info for r in caplog.records)  # -v logs the traceback


def test_usage_errors_in_a_real_process_have_no_usage_block() -> None:
    proc = subprocess.run([sys.executable, "-m", "metaembed_rag.cli", "search"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: the query is empty; pass a question in quotes, e.g. metaembed-rag search "
        '"What is a retrieval budget?"'
    )


# ------------------------------------------------------------------ bench maxsim --dtypes
def test_bench_maxsim_takes_torch_dtype_names_and_rejects_others() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_maxsim", ROOT / "benchmarks" / "maxsim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [module.dtype_name(n) for n in ("float32", "fp32", "BFloat16", "half")] == [
        "fp32", "fp32", "bf16", "fp16"
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "metaembed_rag.cli", "bench", "maxsim", "--dtypes", "float64"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "KeyError" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: argument --dtypes: unknown dtype 'float64'; choose from fp32, bf16, fp16, "
        "float32, bfloat16, float16, half (see: maxsim.py --help)"
    ], proc.stderr


# ------------------------------------------------------------------ index --json
def test_index_json(tmp_path: Path, capsys, tiny_model: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Moon orbits the Earth.")
    (docs / "bad.pdf").write_bytes(b"not a pdf")
    idx = str(tmp_path / "idx")
    rc, out, err = _run(capsys, "index", str(docs), "--index", idx, "--model", tiny_model,
                        "--json", "--no-progress")  # fmt: skip
    assert rc == 0, err
    data = json.loads(out)  # stdout is only the JSON
    assert data["action"] == "created" and data["model_load_s"] >= 0
    assert data["report"]["files_added"] == 1 and data["report"]["chunks_added"] == 1
    assert [s["path"] for s in data["report"]["skipped"]] == [str(docs / "bad.pdf")]
    assert data["report"]["summary"].startswith("Indexed 1 new file")
    assert data["index"]["documents"] == 1 and data["index"]["files"] == 1
    rc, out, _ = _run(capsys, "index", str(docs), "--index", idx, "--json", "--no-progress")
    data = json.loads(out)
    assert data["action"] == "updated" and data["model_load_s"] is None
    assert data["report"]["files_unchanged"] == 1


# ------------------------------------------------------------------ search --interactive
def test_search_interactive_loads_the_model_once(tiny_index: Path, capsys, monkeypatch) -> None:
    from metaembed_rag.collection import Collection

    loads = []
    original = Collection.model.fget  # type: ignore[attr-defined]

    def counting(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            loads.append(1)
        return original(self)

    monkeypatch.setattr(Collection, "model", property(counting))
    monkeypatch.setattr(sys, "stdin", io.StringIO("Moon\n\nsugar\nquit\nnever asked\n"))
    rc, out, err = _run(capsys, "search", "--index", str(tiny_index), "-i", "--json", "--k", "2")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["query"] for r in rows] == ["Moon", "sugar"]
    assert loads == [1]
    col = Collection.open(tiny_index)
    try:  # each answer equals a one-off search
        for row in rows:
            expect = [(r.id, r.score) for r in col.search(row["query"], k=2)]
            assert [(h["id"], h["score"]) for h in row["results"]] == expect
    finally:
        col.close()


def test_search_interactive_keeps_going_after_a_bad_query(
    tiny_index: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Moon\n"))
    rc, out, err = _run(capsys, "search", "--index", str(tiny_index), "-i", "--image", "--k", "1")
    assert rc == 2 and "Moon: no such image file" in _one_error_line(err)


# ------------------------------------------------------------------ search --server
@pytest.fixture(scope="module")
def served(tiny_index: Path, tiny_model: str) -> Iterator[str]:
    """The demo app over the tiny index, on a free port in a thread."""
    pytest.importorskip("fastapi")
    import uvicorn

    from metaembed_rag.app import create_app
    from metaembed_rag.collection import Collection

    col = Collection.open(tiny_index)
    app = create_app(tiny_index, collection=col)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        col.close()


def test_search_through_a_running_server(
    served: str, tiny_index: Path, capsys, monkeypatch
) -> None:
    import metaembed_rag.hub as hub
    from metaembed_rag.collection import Collection

    col = Collection.open(tiny_index)
    try:
        expect = [(r.id, r.score) for r in col.search("Moon", k=2, budget=(1, 1))]
    finally:
        col.close()

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("--server must not load a model")

    monkeypatch.setattr(hub, "load_model", no_load)
    rc, out, err = _run(capsys, "search", "Moon", "--server", served, "--k", "2", "--budget", "1,1",
                        "--json")  # fmt: skip
    assert rc == 0, err
    data = json.loads(out)
    assert data["budget"] == "1,1"
    assert [(h["id"], h["score"]) for h in data["results"]] == expect
    # text output, and the server named by the environment variable
    monkeypatch.setenv("METAEMBED_RAG_SERVER", served)
    rc, out, err = _run(capsys, "search", "Moon", "--k", "2", "--budget", "1,1")
    assert rc == 0, err
    assert out.startswith('Top 2 of 3 chunks for "Moon" at budget (1,1): ')
    assert f"on the server at {served}" in out and "a.txt" in out
    # a budget the model was not trained with: the server's message, one line
    rc, _, err = _run(capsys, "search", "Moon", "--budget", "3,3")
    assert rc == 2 and "answered 400" in _one_error_line(err)
    # --index naming another index than the server's
    rc, _, err = _run(capsys, "search", "Moon", "--index", str(tiny_index.parent / "other"))
    assert rc == 2 and "serves the index" in _one_error_line(err)


def test_search_finds_a_server_of_the_same_index(
    served: str, tiny_index: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import metaembed_rag.cli.remote as remote

    assert remote.detect_server(tiny_index, url=served) == served
    assert remote.detect_server(tmp_path / "other", url=served) is None  # another index
    assert remote.detect_server(tiny_index, url=f"http://127.0.0.1:{_free_port()}") is None
    monkeypatch.setattr(remote, "DEFAULT_SERVER", served)  # as if it ran on the default port
    rc, out, err = _run(capsys, "search", "Moon", "--index", str(tiny_index), "--k", "1")
    assert rc == 0, err
    assert f"on the server at {served}" in out
    rc, out, err = _run(capsys, "search", "Moon", "--index", str(tiny_index), "--k", "1",
                        "--no-server")  # fmt: skip
    assert rc == 0, err
    assert "on the server" not in out and "model loaded in" in out
