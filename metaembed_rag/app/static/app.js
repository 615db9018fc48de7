// metaembed-rag demo page: plain DOM, no framework, no network besides this server.
// All text from documents is inserted with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { budgets: [], lastQuery: null, busy: false, history: new Map() };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

function postJSON(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Text with [start, end) spans wrapped in <mark>.
function highlighted(text, spans) {
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const [start, end] of spans || []) {
    if (start < pos) continue;
    frag.append(text.slice(pos, start));
    frag.append(el("mark", { text: text.slice(start, end) }));
    pos = end;
  }
  frag.append(text.slice(pos));
  return frag;
}

function currentBudget() {
  return state.budgets[Number($("budget").value)];
}

function describeCollection(c) {
  if (!c) return "";
  const parts = [];
  for (const key of ["documents", "num_documents", "files", "num_files", "chunks", "num_chunks"]) {
    if (typeof c[key] === "number") parts.push(`${c[key]} ${key.replace("num_", "")}`);
  }
  return parts.length ? `index: ${parts.join(", ")}` : "index ready";
}

async function refreshInfo() {
  const info = await api("/api/info");
  $("model-info").textContent = `model: ${info.model}`;
  $("collection-info").textContent = describeCollection(info.collection);
  $("llm-info").textContent = info.llm
    ? `answers by ${info.llm.name} (${info.llm.kind})`
    : "extractive answers (no LLM configured)";
  if (!state.budgets.length) {
    state.budgets = info.budgets;
    const slider = $("budget");
    slider.max = String(info.budgets.length - 1);
    slider.value = String(info.budgets.indexOf(info.default_budget));
    const ticks = $("budget-ticks");
    ticks.replaceChildren(...info.budgets.map((b) => el("span", { text: `(${b})` })));
    $("budget-label").textContent = `(${currentBudget()})`;
  }
  if (info.uploads_dir) $("uploads-dir").textContent = info.uploads_dir;
  $("uploads-count").textContent = String(info.uploads.length);
  $("uploads").replaceChildren(...info.uploads.map((name) => el("li", { text: name })));
  return info;
}

async function uploadAndIndex() {
  const files = $("file-input").files;
  if (!files.length) {
    showError("Choose one or more files first.");
    return;
  }
  showError("");
  const status = $("index-status");
  const button = $("index-btn");
  button.disabled = true;
  try {
    status.textContent = `Uploading ${files.length} file(s)…`;
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const saved = await api("/api/upload", { method: "POST", body: form });
    status.textContent = `Indexing ${saved.saved.join(", ")}…`;
    const report = await postJSON("/api/index", { files: saved.saved });
    status.replaceChildren(
      el("span", {
        id: "index-summary",
        text:
          report.summary ||
          `${report.files_added} added, ${report.files_updated} updated, ` +
            `${report.files_unchanged} unchanged; ${report.chunks_added} chunks`,
      }),
    );
    for (const skip of report.skipped || []) {
      status.append(el("div", { className: "skipped", text: `skipped ${skip.path}: ${skip.reason}` }));
    }
    for (const [where, reason] of report.bad_records || []) {
      status.append(el("div", { className: "skipped", text: `skipped record ${where}: ${reason}` }));
    }
    $("file-input").value = "";
    await refreshInfo();
  } catch (err) {
    status.textContent = "";
    showError(`Indexing failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function renderResults(results) {
  const list = $("results");
  list.replaceChildren();
  for (const r of results) {
    const head = el("div", { className: "head" }, [
      el("span", { text: `#${r.rank + 1} · score ` }),
      el("span", { className: "score", text: r.score.toFixed(4) }),
      el("span", {
        className: "where",
        text: ` · ${r.source || r.id}${r.page !== null && r.page !== undefined ? `, page ${r.page}` : ""}`,
      }),
    ]);
    const body = el("div", { className: "body" }, [head]);
    const text = el("div", { className: "text" });
    text.append(highlighted(r.text || "", r.highlights));
    body.append(text);
    const item = el("li", { className: "result", "data-id": r.id });
    if (r.image_url) {
      item.append(
        el("img", {
          className: "page-image",
          src: r.image_url,
          alt: `${r.source || "image"}${r.page ? ` page ${r.page}` : ""}`,
          loading: "lazy",
        }),
      );
    }
    item.append(body);
    list.append(item);
  }
  if (!results.length) list.append(el("li", { text: "No results." }));
  $("results-panel").hidden = false;
}

function renderAnswer(answer) {
  const box = $("answer");
  box.replaceChildren();
  const note = $("answer-note");
  note.textContent = "";
  if (answer.mode === "llm") {
    $("answer-mode").textContent = `LLM · ${answer.model}`;
    if (answer.error) {
      box.append(el("span", { className: "skipped", text: answer.error }));
    } else {
      box.textContent = answer.text;
    }
  } else {
    $("answer-mode").textContent = "extractive";
    for (const s of answer.sentences) {
      const line = el("span", { className: "sentence" });
      line.append(highlighted(s.text, s.highlights));
      const where = `${s.source || s.result_id}${s.page !== null && s.page !== undefined ? `, p. ${s.page}` : ""}`;
      line.append(el("span", { className: "cite", text: `  [#${s.rank + 1} ${where}]` }));
      box.append(line);
    }
    if (answer.note) note.textContent = answer.note;
  }
  $("answer-panel").hidden = false;
}

function recordLatency(data) {
  const key = data.budget;
  const top = data.results[0];
  state.history.set(key, {
    ms: data.latency_ms,
    top: top ? `${top.source || top.id}${top.page ? ` p.${top.page}` : ""}` : "–",
    score: top ? top.score.toFixed(4) : "–",
  });
  const rows = state.budgets
    .filter((b) => state.history.has(b))
    .map((b) => {
      const h = state.history.get(b);
      return el("tr", { "data-budget": b }, [
        el("td", { text: `(${b})` }),
        el("td", { className: "num", text: h.ms.toFixed(1) }),
        el("td", { text: h.top }),
        el("td", { className: "num", text: h.score }),
      ]);
    });
  $("latency-history").tBodies[0].replaceChildren(...rows);
  $("latency-history-box").hidden = false;
}

async function ask() {
  const query = $("query").value.trim();
  if (!query) {
    showError("Type a question first.");
    return;
  }
  if (state.busy) return;
  state.busy = true;
  showError("");
  $("ask-btn").disabled = true;
  const budget = currentBudget();
  $("latency").textContent = `Searching at budget (${budget})…`;
  if (query !== state.lastQuery) {
    state.history.clear();
    $("sweep").hidden = true;
  }
  try {
    const hybrid = $("hybrid") && $("hybrid").checked ? "rrf" : null;
    const data = await postJSON("/api/ask", { query, k: Number($("k").value), budget, hybrid });
    state.lastQuery = query;
    $("latency").replaceChildren(
      el("span", { text: "search latency " }),
      el("strong", { id: "latency-ms", text: `${data.latency_ms.toFixed(1)} ms` }),
      el("span", {
        text: ` at budget (${data.budget}) · answer ${data.answer_ms.toFixed(1)} ms`,
      }),
    );
    recordLatency(data);
    renderResults(data.results);
    renderAnswer(data.answer);
    $("sweep-btn").disabled = false;
  } catch (err) {
    $("latency").textContent = "";
    showError(err.message);
  } finally {
    state.busy = false;
    $("ask-btn").disabled = false;
  }
}

async function sweep() {
  const query = $("query").value.trim();
  if (!query) return;
  const button = $("sweep-btn");
  button.disabled = true;
  showError("");
  try {
    const data = await postJSON("/api/sweep", { query, k: Number($("k").value) });
    const maxMs = Math.max(...data.budgets.map((b) => b.score_ms));
    $("sweep-encode").textContent = data.encode_ms.toFixed(1);
    const rows = data.budgets.map((b) => {
      const bar = el("div", { className: "bar" });
      bar.style.width = `${Math.max(2, (100 * b.score_ms) / maxMs)}%`;
      return el("tr", { "data-budget": b.budget }, [
        el("td", { text: `(${b.budget})` }),
        el("td", { className: "num", text: b.score_ms.toFixed(2) }),
        el("td", { style: "width:35%" }, [bar]),
        el("td", { className: "num", text: b.latency_ms.toFixed(1) }),
        el("td", {
          className: "num",
          text: b.agreement === null ? "–" : `${Math.round(100 * b.agreement)}%`,
        }),
      ]);
    });
    $("sweep-table").tBodies[0].replaceChildren(...rows);
    $("sweep").hidden = false;
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
  }
}

function init() {
  $("index-btn").addEventListener("click", uploadAndIndex);
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("sweep-btn").addEventListener("click", sweep);
  const slider = $("budget");
  slider.addEventListener("input", () => {
    $("budget-label").textContent = `(${currentBudget()})`;
  });
  slider.addEventListener("change", () => {
    $("budget-label").textContent = `(${currentBudget()})`;
    if (state.lastQuery !== null && $("query").value.trim()) ask();
  });
  refreshInfo()
    .then(() => document.body.setAttribute("data-ready", "1"))
    .catch((err) => showError(`Cannot reach the server: ${err.message}`));
}

init();
