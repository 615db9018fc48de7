"""The demo app in a real headless browser: ``metaembed-rag serve`` in a subprocess, Debian's
chromium driven by Playwright (system browser, no browser download).

Upload a text file and a PDF, index them, ask, see results with scores and page images, move
the budget slider, compare budgets; then a two-turn conversation: a follow-up sent with the
first turn, both turns shown, a citation of the first turn bringing its passage into view, a
page thumbnail enlarged. Skipped only when chromium is absent (outside CI: CI installs
it with ``.ci/install-browser.sh`` and fails without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 600.0  # model load on a busy 2-core machine


def find_chromium() -> str | None:
    """``$CHROMIUM`` or Debian's ``chromium`` (``chromium-browser`` on some systems)."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "chromium is not installed but CI must run the browser test: run "
            ".ci/install-browser.sh before the tests."
        )
    pytest.skip(
        "Debian's chromium is not installed (run .ci/install-browser.sh, or set $CHROMIUM)",
        allow_module_level=True,
    )

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError as exc:  # a dev dependency: a missing one is an error, not a skip
    raise ImportError(
        "The browser test needs Playwright's Python package: pip install playwright "
        "(no `playwright install` needed: the test uses the system chromium)."
    ) from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(work: Path, *extra: str) -> Iterator[str]:
    """``python -m metaembed_rag.cli serve`` (default model, a new index in ``work``, options
    ``extra``) on a free port; yields its base URL and stops it afterwards."""
    port = free_port()
    log = (work / "server.log").open("wb")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "metaembed_rag.cli", "serve", "--index", str(work / "index"),
           "--host", "127.0.0.1", "--port", str(port), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}):\n{_tail(work / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{url}/api/info", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer in time:\n{_tail(work / 'server.log')}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo with extractive answers."""
    with running_server(tmp_path_factory.mktemp("browser")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium (one Playwright per module: the sync API allows only one)."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def browser_page(browser: Browser, url: str) -> Iterator[Page]:
    """A new page on ``url``, ready; ``page.errors`` collects the page's errors."""
    pg = browser.new_page(viewport={"width": 1200, "height": 1400})
    try:
        pg.set_default_timeout(120_000)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.goto(url + "/")
        pg.wait_for_selector("body[data-ready='1']")
        pg.errors = errors  # type: ignore[attr-defined]
        yield pg
    finally:
        pg.close()


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import importlib.util

    folder = tmp_path_factory.mktemp("docs")
    notes = folder / "notes.txt"
    notes.write_text(
        "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.\n"
        "The Moon is Earth's only natural satellite.\n",
        encoding="utf-8",
    )
    spec = importlib.util.spec_from_file_location(
        "make_sample_pdf", REPO / "examples" / "make_sample_pdf.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pdf = module.write_pdf(
        folder / "budgets.pdf",
        [["Budgets", "", "A retrieval budget chooses how many query and document vectors."]],
        title="Budgets",
    )
    return [notes, pdf]


@pytest.fixture(scope="module")
def page(browser: Browser, server: str) -> Iterator[Page]:
    with browser_page(browser, server) as pg:
        yield pg


def test_upload_index_ask_and_move_budget(page: Page, server: str, docs: list[Path]) -> None:
    # The page knows the model's trained budgets; the slider starts at the largest.
    expect(page.locator("#budget-label")).to_have_text("(16,64)")
    expect(page.locator("#budget-ticks span")).to_have_text(
        ["(1,1)", "(2,4)", "(4,8)", "(8,16)", "(16,64)"]
    )
    expect(page.locator("#llm-info")).to_contain_text("extractive answers")
    # The page says where uploads go (beside the index) and offers only supported types.
    expect(page.locator("#uploads-dir")).to_have_text(re.compile(r"index-uploads$"))
    accept = page.locator("#file-input").get_attribute("accept") or ""
    assert ".pdf" in accept.split(",") and ".json" not in accept.split(",")

    # Upload and index a text file and a PDF.
    page.set_input_files("#file-input", [str(p) for p in docs])
    page.click("#index-btn")
    expect(page.locator("#index-summary")).to_contain_text("Indexed 2 new files")
    expect(page.locator("#collection-info")).to_contain_text("2 documents, 2 files")
    expect(page.locator("#uploads-count")).to_have_text("2")

    # Ask: results with scores, a rendered PDF page image, an extractive answer, the latency.
    page.fill("#query", "What causes type 2 diabetes?")
    page.click("#ask-btn")
    results = page.locator("#results .result")
    expect(results).to_have_count(2)
    scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    expect(page.locator("#latency")).to_contain_text("at budget (16,64)")
    assert re.fullmatch(r"\d+\.\d ms", page.locator("#latency-ms").inner_text())
    first = page.locator("#chat .turn").first
    expect(first.locator(".question")).to_have_text("What causes type 2 diabetes?")
    expect(first.locator(".answer-mode")).to_have_text("extractive")
    expect(first.locator(".answer mark").first).to_have_text("cause")
    pdf_image = page.locator(".result img.page-image")
    expect(pdf_image).to_have_count(1)
    expect(pdf_image).to_have_attribute("alt", "budgets.pdf page 1")
    page.wait_for_function(
        "() => { const i = document.querySelector('.result img.page-image');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    # The header names the model readably (no Python repr).
    header = page.locator("#model-info").inner_text()
    assert "MetaEmbedModel(" not in header and "16 query / 64 document vectors" in header

    # The page shows exactly what the API returns for that budget.
    body = {"query": "What causes type 2 diabetes?", "k": 5, "budget": "16,64"}
    api = _post(page, server, "/api/search", body)
    shown = [results.nth(i).get_attribute("data-id") for i in range(results.count())]
    assert shown == [r["id"] for r in api["results"]]

    # Move the budget slider to its smallest position: the question runs again at (1,1).
    page.focus("#budget")
    page.keyboard.press("Home")
    expect(page.locator("#budget-label")).to_have_text("(1,1)")
    expect(page.locator("#latency")).to_contain_text("at budget (1,1)")
    expect(page.locator("#latency-history tbody tr")).to_have_count(2)
    expect(page.locator("#latency-history tbody tr").first).to_have_attribute("data-budget", "1,1")
    expect(results).to_have_count(2)
    expect(page.locator("#chat .turn")).to_have_count(1)  # the same turn, re-run
    api = _post(page, server, "/api/search", dict(body, budget="1,1"))
    shown_scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
    assert shown_scores == pytest.approx([round(r["score"], 4) for r in api["results"]], abs=1e-4)

    # Quality vs latency at every budget; agreement as the API computes it (rank by rank).
    page.click("#sweep-btn")
    rows = page.locator("#sweep-table tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.last).to_have_attribute("data-budget", "16,64")
    expect(rows.last.locator("td.top1")).to_have_text("same")
    expect(rows.last.locator("td.agreement")).to_have_text("100%")
    sweep = _post(page, server, "/api/sweep", {"query": body["query"], "k": 5})
    for i, row in enumerate(sweep["budgets"]):
        cells = rows.nth(i)
        expect(cells.locator("td.top1")).to_have_text("same" if row["top1"] else "changed")
        expect(cells.locator("td.agreement")).to_have_text(f"{round(100 * row['agreement'])}%")
        expect(cells.locator("td.overlap")).to_have_text(f"{round(100 * row['overlap'])}%")

    page.screenshot(path=str(docs[0].parent / "demo.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def _post(page: Page, server: str, path: str, body: dict) -> dict:
    return page.request.post(server + path, data=json.dumps(body),
                             headers={"Content-Type": "application/json"}).json()  # fmt: skip


def test_two_turn_conversation_citations_and_enlarged_pages(page: Page, docs: list[Path]) -> None:
    turns = page.locator("#chat .turn")
    expect(turns).to_have_count(1)  # the first test's question
    page.fill("#query", "How far away is the Moon?")
    with page.expect_request(lambda r: r.url.endswith("/api/ask")) as request:
        page.click("#ask-btn")
    sent = request.value.post_data_json
    assert sent["query"] == "How far away is the Moon?"
    assert [t["query"] for t in sent["history"]] == ["What causes type 2 diabetes?"]
    assert sent["history"][0]["answer"]  # the first answer's text goes with it
    expect(turns).to_have_count(2)
    # Both turns stay on the page, each with its own answer (extractive: each on its own).
    expect(turns.nth(0).locator(".answer mark").first).to_have_text("cause")
    expect(turns.nth(1).locator(".question")).to_have_text("How far away is the Moon?")
    expect(turns.nth(1).locator(".answer")).to_contain_text("Moon")
    expect(page.locator("#results-for")).to_contain_text("turn 2")
    expect(page.locator("#query")).to_have_value("")

    # A citation of the first turn shows that turn's passages and brings the cited one into view.
    cite = turns.nth(0).locator("a.cite").first
    target_id = (cite.get_attribute("href") or "").lstrip("#")
    assert re.fullmatch(r"t0-r\d+", target_id)
    cite.click()
    expect(page.locator("#results-for")).to_contain_text("turn 1")
    target = page.locator(f"#{target_id}")
    expect(target).to_have_class(re.compile(r"\bflash\b"))
    expect(target).to_be_in_viewport()
    expect(target.locator(".text")).to_contain_text("diabetes")

    # A page thumbnail opens large; Escape closes it.
    thumb = page.locator(".result img.page-image").first
    thumb.click()
    expect(page.locator("#lightbox")).to_be_visible()
    assert page.locator("#lightbox-img").get_attribute("src") == thumb.get_attribute("src")
    expect(page.locator("#lightbox-caption")).to_have_text("budgets.pdf page 1")
    page.wait_for_function("() => document.getElementById('lightbox-img').naturalWidth > 0")
    page.screenshot(path=str(docs[0].parent / "demo-lightbox.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()

    # A new conversation starts empty.
    page.click("#new-chat-btn")
    expect(turns).to_have_count(0)
    expect(page.locator("#results-panel")).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]


def test_errors_are_shown(page: Page) -> None:
    page.fill("#query", "   ")
    page.click("#ask-btn")  # the form's `required` does not catch blanks: the app does
    expect(page.locator("#error")).to_have_text("Type a question first.")


LLM_MODULE = """
def chat(prompt):
    if "Standalone question:" in prompt:
        return "How far away is the Moon from the Earth?"
    return "It orbits at about 384,400 km [1]."
"""


def test_llm_conversation_rewrites_follow_ups_and_links_citations(
    browser: Browser, tmp_path: Path, docs: list[Path]
) -> None:
    """With --llm: the follow-up is searched as the LLM's standalone question (shown on the
    turn) and the answer's [1] links to the first passage."""
    (tmp_path / "fake_llm.py").write_text(LLM_MODULE)
    with (
        running_server(tmp_path, "--llm", "fake_llm:chat") as url,
        browser_page(browser, url) as pg,
    ):
        pg.set_input_files("#file-input", [str(docs[0])])
        pg.click("#index-btn")
        expect(pg.locator("#index-summary")).to_contain_text("Indexed 1 new file")
        expect(pg.locator("#llm-info")).to_contain_text("answers by function (callable)")
        for question in ("What is the Moon?", "How far away is it?"):
            pg.fill("#query", question)
            pg.click("#ask-btn")
            expect(pg.locator("#query")).to_have_value("")
        turns = pg.locator("#chat .turn")
        expect(turns).to_have_count(2)
        expect(turns.nth(0).locator(".searched")).to_have_count(0)  # a first question as typed
        expect(turns.nth(1).locator(".searched")).to_have_text(
            "searched for: \u201cHow far away is the Moon from the Earth?\u201d \u00b7 "
        )
        expect(turns.nth(1).locator(".answer-mode")).to_have_text("LLM \u00b7 function")
        expect(turns.nth(1).locator(".answer")).to_have_text("It orbits at about 384,400 km [1].")
        cite = turns.nth(1).locator("a.cite")
        expect(cite).to_have_text("[1]")
        assert cite.get_attribute("href") == "#t1-r0"
        turns.nth(0).locator("a.show-results").click()
        expect(pg.locator("#results-for")).to_contain_text("turn 1")
        cite.click()
        expect(pg.locator("#results-for")).to_contain_text("turn 2")
        expect(pg.locator("#t1-r0")).to_have_class(re.compile(r"\bflash\b"))
        expect(pg.locator("#t1-r0")).to_be_in_viewport()
        assert pg.errors == []  # type: ignore[attr-defined]
