// metaembed-rag demo page: plain DOM, no framework, no network besides this server.
// All text from documents is inserted with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
// turns: [{n, data: /api/ask answer}] of the conversation; history: latency per budget of the
// last question; shownTurn: the turn whose passages the results panel shows.
const state = { budgets: [], turns: [], shownTurn: null, busy: false, history: new Map() };

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
  if (info.model_details) {
    const d = info.model_details;
    $("model-info").title =
      `backbone ${d.backbone} (${d.backbone_type}), reads up to ${d.max_length} tokens; ` +
      `trained budgets ${d.budgets.map((b) => `(${b})`).join(" ")}`;
  }
  $("collection-info").textContent = describeCollection(info.collection);
  $("llm-info").textContent = info.llm
    ? `answers by ${info.llm.name} (${info.llm.kind})`
    : "extractive answers (no LLM configured)";
  $("rerank-info").textContent = info.reranker
    ? ` · reranked by ${info.reranker.name} (P("True") over the top ${info.reranker.candidates})`
    : "";
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

// ---------------------------------------------------------------- page images (lightbox)
function openLightbox(src, caption) {
  $("lightbox-img").src = src;
  $("lightbox-img").alt = caption;
  $("lightbox-caption").textContent = caption;
  $("lightbox").hidden = false;
  $("lightbox-close").focus();
}

function closeLightbox() {
  $("lightbox").hidden = true;
  $("lightbox-img").removeAttribute("src");
}

function whereOf(r) {
  const page = r.page !== null && r.page !== undefined ? `, page ${r.page}` : "";
  return `${r.source || r.id}${page}`;
}

// ---------------------------------------------------------------- results of one turn
function resultId(turn, rank) {
  return `t${turn}-r${rank}`;
}

function renderResults(turn) {
  const list = $("results");
  list.replaceChildren();
  for (const r of turn.data.results) {
    const head = el("div", { className: "head" }, [
      el("span", { text: `#${r.rank + 1} · score ` }),
      el("span", { className: "score", text: r.score.toFixed(4) }),
      el("span", { className: "where", text: ` · ${whereOf(r)}` }),
    ]);
    const body = el("div", { className: "body" }, [head]);
    const text = el("div", { className: "text" });
    text.append(highlighted(r.text || "", r.highlights));
    body.append(text);
    const item = el("li", { className: "result", "data-id": r.id, id: resultId(turn.n, r.rank) });
    if (r.image_url) {
      const caption = `${r.source || "image"}${r.page ? ` page ${r.page}` : ""}`;
      const img = el("img", {
        className: "page-image",
        src: r.image_url,
        alt: caption,
        loading: "lazy",
        title: "Click to enlarge",
        tabindex: "0",
        role: "button",
      });
      img.addEventListener("click", () => openLightbox(r.image_url, caption));
      img.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          openLightbox(r.image_url, caption);
        }
      });
      item.append(img);
    }
    item.append(body);
    list.append(item);
  }
  if (!turn.data.results.length) list.append(el("li", { text: "No results." }));
  $("results-for").textContent = `for turn ${turn.n + 1}: “${turn.data.query}”`;
  $("results-panel").hidden = false;
  state.shownTurn = turn.n;
  for (const node of document.querySelectorAll("#chat .turn")) {
    node.classList.toggle("shown", Number(node.dataset.turn) === turn.n);
  }
}

// A citation: show that turn's results and bring the cited passage (and its page) into view.
function citeLink(turn, rank, label) {
  const link = el("a", { className: "cite", href: `#${resultId(turn.n, rank)}`, text: label });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    if (state.shownTurn !== turn.n) renderResults(turn);
    const target = $(resultId(turn.n, rank));
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    target.classList.remove("flash");
    void target.offsetWidth; // restart the animation
    target.classList.add("flash");
  });
  return link;
}

// LLM text with its [n] source markers turned into citation links.
function linkedLLMText(turn, text) {
  const frag = document.createDocumentFragment();
  const results = turn.data.results;
  let pos = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(m[1]);
    if (n < 1 || n > results.length) continue;
    frag.append(text.slice(pos, m.index));
    frag.append(citeLink(turn, results[n - 1].rank, `[${n}]`));
    pos = m.index + m[0].length;
  }
  frag.append(text.slice(pos));
  return frag;
}

function renderAnswer(turn, box) {
  const answer = turn.data.answer;
  box.replaceChildren();
  const mode = el("span", { className: "badge answer-mode" });
  const content = el("div", { className: "answer" });
  if (answer.mode === "llm") {
    mode.textContent = `LLM · ${answer.model}`;
    if (answer.error) content.append(el("span", { className: "skipped", text: answer.error }));
    else content.append(linkedLLMText(turn, answer.text || ""));
  } else {
    mode.textContent = "extractive";
    for (const s of answer.sentences) {
      const line = el("span", { className: "sentence" });
      line.append(highlighted(s.text, s.highlights));
      const page = s.page !== null && s.page !== undefined ? `, p. ${s.page}` : "";
      line.append(" ", citeLink(turn, s.rank, `[#${s.rank + 1} ${s.source || s.result_id}${page}]`));
      content.append(line);
    }
  }
  box.append(mode, content);
  if (answer.note) box.append(el("p", { className: "hint answer-note", text: answer.note }));
}

function renderTurn(turn) {
  let node = document.querySelector(`#chat .turn[data-turn="${turn.n}"]`);
  if (!node) {
    node = el("li", { className: "turn", "data-turn": String(turn.n) });
    $("chat").append(node);
  }
  const data = turn.data;
  const question = el("div", { className: "question", text: data.query });
  const meta = el("div", { className: "turn-meta" });
  if (data.search_query && data.search_query !== data.query) {
    meta.append(el("span", { className: "searched", text: `searched for: “${data.search_query}” · ` }));
  }
  meta.append(
    el("span", {
      text: `budget (${data.budget}) · search ${data.latency_ms.toFixed(1)} ms · answer ${data.answer_ms.toFixed(1)} ms · `,
    }),
  );
  const show = el("a", { href: "#results-panel", className: "show-results", text: "passages" });
  show.addEventListener("click", (event) => {
    event.preventDefault();
    renderResults(turn);
    $("results-panel").scrollIntoView({ block: "start" });
  });
  meta.append(show);
  const answerBox = el("div", { className: "answer-box" });
  renderAnswer(turn, answerBox);
  node.replaceChildren(question, answerBox, meta);
  $("chat-panel").hidden = false;
  $("new-chat-btn").hidden = false;
  node.scrollIntoView({ block: "nearest" });
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

// The earlier turns sent with a question: [{query, answer}], oldest first.
function historyBefore(n) {
  return state.turns.slice(0, n).map((t) => ({
    query: t.data.query,
    answer: t.data.answer.text || null,
  }));
}

// Ask a new question (a new turn), or (rerun) the last question again at the slider's budget.
async function ask({ rerun = false } = {}) {
  const last = state.turns[state.turns.length - 1];
  const query = rerun ? last.data.query : $("query").value.trim();
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
  const n = rerun ? last.n : state.turns.length;
  if (!rerun) {
    state.history.clear();
    $("sweep").hidden = true;
  }
  try {
    const hybrid = $("hybrid") && $("hybrid").checked ? "rrf" : null;
    const data = await postJSON("/api/ask", {
      query,
      k: Number($("k").value),
      budget,
      history: historyBefore(n),
      hybrid,
    });
    const turn = { n, data };
    state.turns[n] = turn;
    if (!rerun) $("query").value = "";
    $("latency").replaceChildren(
      el("span", { text: "search latency " }),
      el("strong", { id: "latency-ms", text: `${data.latency_ms.toFixed(1)} ms` }),
      el("span", {
        text: ` at budget (${data.budget}) · answer ${data.answer_ms.toFixed(1)} ms`,
      }),
    );
    recordLatency(data);
    renderTurn(turn);
    renderResults(turn);
    $("sweep-btn").disabled = false;
  } catch (err) {
    $("latency").textContent = "";
    showError(err.message);
  } finally {
    state.busy = false;
    $("ask-btn").disabled = false;
  }
}

function newConversation() {
  state.turns = [];
  state.history.clear();
  state.shownTurn = null;
  $("chat").replaceChildren();
  $("results").replaceChildren();
  for (const id of ["chat-panel", "results-panel", "sweep", "latency-history-box", "new-chat-btn"]) {
    $(id).hidden = true;
  }
  $("latency").textContent = "";
  $("sweep-btn").disabled = true;
  $("query").focus();
}

function percent(value) {
  return value === null ? "–" : `${Math.round(100 * value)}%`;
}

async function sweep() {
  const last = state.turns[state.turns.length - 1];
  if (!last) return;
  const button = $("sweep-btn");
  button.disabled = true;
  showError("");
  try {
    const query = last.data.search_query || last.data.query;
    const data = await postJSON("/api/sweep", { query, k: Number($("k").value) });
    const maxMs = Math.max(...data.budgets.map((b) => b.score_ms));
    $("sweep-encode").textContent = data.encode_ms.toFixed(1);
    const rows = data.budgets.map((b) => {
      const bar = el("div", { className: "bar" });
      bar.style.width = `${Math.max(2, (100 * b.score_ms) / maxMs)}%`;
      const top1 = b.top1 === null ? "–" : b.top1 ? "same" : "changed";
      return el("tr", { "data-budget": b.budget }, [
        el("td", { text: `(${b.budget})` }),
        el("td", { className: "num", text: b.score_ms.toFixed(2) }),
        el("td", { style: "width:30%" }, [bar]),
        el("td", { className: "num", text: b.latency_ms.toFixed(1) }),
        el("td", { className: `top1 ${b.top1 === false ? "changed" : ""}`, text: top1 }),
        el("td", { className: "num agreement", text: percent(b.agreement) }),
        el("td", { className: "num overlap", text: percent(b.overlap) }),
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
  $("new-chat-btn").addEventListener("click", newConversation);
  $("lightbox").addEventListener("click", (event) => {
    if (event.target !== $("lightbox-img")) closeLightbox();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("lightbox").hidden) closeLightbox();
  });
  const slider = $("budget");
  slider.addEventListener("input", () => {
    $("budget-label").textContent = `(${currentBudget()})`;
  });
  slider.addEventListener("change", () => {
    $("budget-label").textContent = `(${currentBudget()})`;
    if (state.turns.length) ask({ rerun: true });
  });
  refreshInfo()
    .then(() => document.body.setAttribute("data-ready", "1"))
    .catch((err) => showError(`Cannot reach the server: ${err.message}`));
}

init();
