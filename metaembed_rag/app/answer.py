"""Answers for the demo app: extractive (no LLM) or from a LlamaIndex / LangChain model.

Neither framework is imported here: an LLM object is recognised by duck typing.

* LlamaIndex LLMs (``llama_index.core.llms.LLM`` and subclasses, chat models included) have
  ``complete(prompt) -> CompletionResponse`` (``.text``).
* LangChain chat models (``langchain_core.language_models.BaseChatModel``) and LLMs have
  ``invoke(input) -> AIMessage`` (``.content``) or ``str``; they take a list of
  ``(role, text)`` tuples as messages.
* A plain callable ``f(prompt: str) -> str`` is accepted too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LLMAdapter",
    "build_prompt",
    "extractive_answer",
    "highlight_spans",
    "load_llm",
    "parse_llm_spec",
    "query_terms",
    "wrap_llm",
]

logger = logging.getLogger(__name__)

LLMKind = Literal["llamaindex", "langchain", "callable"]

#: Words ignored when matching query terms against passages.
_STOPWORDS_TEXT = """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its it's me my of on or our so than that the their them then there these they this
    those to was we were what when where which who whom why will with would you your about after
    all also any before between both each few more most other over same some such only own very
    just not no nor too up down out off again further once here s t don should now"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
#: Lines shorter than this, without end punctuation and followed by a capitalised line, are
#: headings (titles in text extracted from PDFs).
HEADING_MAX_CHARS = 60

#: With a model, the sentences of this many of the best passages are scored ...
SEMANTIC_PASSAGES = 3
#: ... and at most this many sentences (the earlier ones first), to keep answers fast.
MAX_SEMANTIC_SENTENCES = 16
#: Share of the model's similarity in an extractive sentence's rank score (the rest: lexical).
SEMANTIC_WEIGHT = 0.7
#: With a model, sentences scoring below this share of the best one are left out.
RELATIVE_CUTOFF = 0.75

SYSTEM_PROMPT = (
    "You answer questions about the user's documents. Use only the numbered sources given. "
    "Cite the sources you use like [1] or [2]. If the sources do not hold the answer, say so."
)


def _norm(word: str) -> str:
    """Lower-case a word and strip plural / verb endings (a light stemmer) so that
    'causes', 'caused', 'causing' and 'cause' all match."""
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith("es") and w[-3] in "sxz" or w.endswith(("ches", "shes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) >= len(suffix) + 4 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


def query_terms(query: str) -> list[str]:
    """The normalised content words of ``query`` (stop words and 1-letter words dropped),
    in order of first appearance, without duplicates."""
    seen: dict[str, None] = {}
    for m in _WORD.finditer(query):
        word = m.group(0).lower()
        if len(word) < 2 or word in STOPWORDS:
            continue
        seen.setdefault(_norm(word), None)
    return list(seen)


def highlight_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text`` that match ``terms``
    (normalised as in :func:`query_terms`), sorted, non-overlapping."""
    wanted = set(terms)
    if not wanted:
        return []
    return [(m.start(), m.end()) for m in _WORD.finditer(text) if _norm(m.group(0)) in wanted]


def _is_heading(line: str, next_line: str) -> bool:
    """A Markdown heading, or a short unpunctuated line followed by a capitalised line
    (a title in extracted PDF text)."""
    if line.startswith("#"):
        return True
    return (
        len(line) < HEADING_MAX_CHARS
        and line[-1] not in ".!?,;:"
        and bool(next_line)
        and (next_line[0].isupper() or next_line[0].isdigit())
    )


def _blocks(text: str) -> list[tuple[int, int]]:
    """Paragraph spans of ``text``: split at blank lines, around headings and before list
    items (``-``, ``*``, bullet)."""
    lines = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]
    blocks: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    for n, (a, b) in enumerate(lines):
        line = text[a:b].strip()
        if not line:  # a line of spaces is a blank line
            if start is not None:
                blocks.append((start, end))
                start = None
            continue
        following = text[lines[n + 1][0] : lines[n + 1][1]].strip() if n + 1 < len(lines) else ""
        heading = _is_heading(line, following)
        blank_before = start is not None and text.count("\n", end, a) > 1
        if start is not None and (blank_before or heading or line[0] in "-*\u2022"):
            blocks.append((start, end))
            start = None
        if start is None:
            start = a
        end = b
        if heading:
            blocks.append((start, end))
            start = None
    if start is not None:
        blocks.append((start, end))
    return blocks


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text``: paragraphs (blank lines, headings, list
    items) split after ``.!?`` followed by white space; whitespace-trimmed, empty ones dropped."""
    out = []
    for block_start, block_end in _blocks(text):
        start = block_start
        ends = list(_SENTENCE_END.finditer(text, block_start, block_end))
        bounds = [(start, ends[0].start())] if ends else []
        for prev, cur in zip(ends, ends[1:], strict=False):
            bounds.append((prev.end(), cur.start()))
        bounds.append((ends[-1].end() if ends else start, block_end))
        for s, e in bounds:
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if e > s:
                out.append((s, e))
    return out


def _field(result: Any, name: str, default: Any = None) -> Any:
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)


def _source_name(source: Any) -> str | None:
    """The file name of a ``metadata["source"]`` path (None stays None)."""
    if source is None:
        return None
    return str(source).replace("\\", "/").rsplit("/", 1)[-1]


def _passage_title(text: str, meta: dict[str, Any]) -> str | None:
    """The passage's title: ``metadata["title"]``, else its opening heading, if any."""
    title = meta.get("title")
    if title:
        return str(title)
    spans = split_sentences(text)
    if spans:
        first = " ".join(text[spans[0][0] : spans[0][1]].split())
        if first.startswith("#") or (len(first) < HEADING_MAX_CHARS and first[-1] not in ".!?"):
            return first.lstrip("#").strip() or None
    return None


def _semantic_scores(model: Any, query: str, texts: list[str], budget: Any) -> list[float]:
    """MaxSim of ``query`` against each text encoded as a document, divided by ``r_q``
    (so in [-1, 1]), at ``budget`` (default: the model's smallest trained budget)."""
    from ..budget import Budget
    from ..scoring import maxsim

    b = min(model.budgets) if budget is None else Budget.parse(budget)
    q = model.encode_queries([query], show_progress_bar=False)
    d = model.encode_documents(texts, batch_size=32, show_progress_bar=False)
    return (maxsim(q, d, b)[0] / b.r_q).tolist()


def extractive_answer(
    query: str,
    results: Sequence[Any],
    *,
    max_sentences: int = 3,
    max_passages: int = 5,
    model: Any = None,
    budget: Any = None,
    semantic_weight: float = SEMANTIC_WEIGHT,
) -> dict[str, Any]:
    """Pick the sentences of the best passages that answer the question best.

    Without ``model``, sentences are ranked by the query terms they hold (lexical coverage).
    With ``model`` (the collection's ``MetaEmbedModel``) they are ranked by meaning as well:
    each candidate sentence, prefixed with its passage's title (so "It orbits at 384,400 km"
    is known to be about the Moon), is encoded as a document and scored against the query
    at ``budget`` (default: the model's smallest trained budget; a few dozen short sentences
    take well under a second on a CPU); the rank score is ``semantic_weight`` x that
    similarity (min-max scaled over the candidates) + the rest x the lexical coverage of
    title and sentence. So "How far is the Moon?" finds "It orbits at an average distance of
    about 384,400 kilometres", which holds no query word.

    Args:
        query: the question.
        results: search results, best first (objects or dicts with ``text``, ``rank``,
            ``score`` and ``metadata``).
        max_sentences: how many sentences the answer holds at most.
        max_passages: how many of the top results are read.
        model: a ``MetaEmbedModel`` to rank by meaning, or ``None`` (lexical only).
        budget: the budget of the semantic score (``model`` only).
        semantic_weight: share of the semantic score in the rank score (``model`` only).

    Returns:
        ``{"mode": "extractive", "text": str, "sentences": [...], "terms": [...],
        "ranking": "semantic+lexical" | "lexical", "note": str | None}``; each sentence is
        ``{"text", "rank", "result_id", "source", "page", "coverage", "semantic", "score",
        "highlights": [[start, end], ...]}`` (``coverage``: the share of query terms the
        sentence holds, 0..1; ``semantic``: its similarity to the query, -1..1, or ``None``
        without a model; ``score``: the rank score; ``highlights``: spans of query terms
        inside the sentence, whose white space is collapsed to single spaces). Headings and
        fragments without end punctuation are used only when no full sentence qualifies.
        Without a model, only sentences holding a query term qualify; when none does, the
        first sentence of the best passage is returned and ``note`` says so. The chosen
        sentences are listed in reading order (passage rank, then position).
    """
    terms = query_terms(query)
    candidates: list[dict[str, Any]] = []
    for pos, result in enumerate(results[:max_passages]):
        text = _field(result, "text") or ""
        meta = _field(result, "metadata") or {}
        rank = _field(result, "rank")
        title = _passage_title(text, meta)
        for s, e in split_sentences(text):
            sentence = " ".join(text[s:e].split())  # line breaks of PDF text -> spaces
            spans = highlight_spans(sentence, terms)
            matched = {_norm(sentence[a:b]) for a, b in spans}
            context = f"{title}. {sentence}" if title and title not in sentence else sentence
            in_context = {_norm(w) for w in _WORD.findall(context)} & set(terms)
            candidates.append(
                {
                    "item": {
                        "text": sentence,
                        "rank": pos if rank is None else int(rank),
                        "result_id": str(_field(result, "id", pos)),
                        "source": _source_name(meta.get("source")),
                        "page": meta.get("page"),
                        "coverage": round(len(matched) / len(terms), 4) if terms else 0.0,
                        "highlights": [[a, b] for a, b in spans],
                    },
                    "context": context,
                    "lexical": len(in_context) / len(terms) if terms else 0.0,
                    "full": sentence[-1] in ".!?" and not sentence.startswith("#"),
                    "order": len(candidates),
                    "pos": pos,
                }
            )
    ranking = "lexical" if model is None else "semantic+lexical"
    if not candidates:
        return {
            "mode": "extractive",
            "text": "",
            "sentences": [],
            "terms": terms,
            "ranking": ranking,
            "note": "No passage with text was retrieved (image-only results?).",
        }
    note = None
    if model is None:
        for c in candidates:
            c["item"]["semantic"] = None
            c["score"] = c["item"]["coverage"]
        qualified = [c for c in candidates if c["score"] > 0]
    else:
        pool = [c for c in candidates if c["pos"] < SEMANTIC_PASSAGES][:MAX_SEMANTIC_SENTENCES]
        sims = _semantic_scores(model, query, [c["context"] for c in pool], budget)
        low, high = min(sims), max(sims)
        for c, sim in zip(pool, sims, strict=True):
            scaled = (sim - low) / (high - low) if high > low else 1.0
            c["item"]["semantic"] = round(sim, 4)
            c["score"] = semantic_weight * scaled + (1.0 - semantic_weight) * c["lexical"]
        candidates = pool
        best = max(c["score"] for c in pool)
        qualified = [c for c in pool if c["score"] >= RELATIVE_CUTOFF * best]
    # Best: highest score, then the better-ranked passage, then the earlier sentence.
    qualified.sort(key=lambda c: (-c["score"], c["pos"], c["order"]))
    chosen = ([c for c in qualified if c["full"]] or qualified)[:max_sentences]
    if not chosen:
        chosen = [min(candidates, key=lambda c: (c["pos"], c["order"]))]
        note = "No retrieved sentence contains a query term; showing the start of the best passage."
    chosen.sort(key=lambda c: (c["pos"], c["order"]))  # reading order
    sentences = []
    for c in chosen:
        item = dict(c["item"])
        item["score"] = round(c["score"], 4)
        sentences.append(item)
    return {
        "mode": "extractive",
        "text": " ".join(s["text"] for s in sentences),
        "sentences": sentences,
        "terms": terms,
        "ranking": ranking,
        "note": note,
    }


def build_prompt(
    query: str, results: Sequence[Any], *, max_chars: int = 1500, conversation: str = ""
) -> str:
    """The user prompt for an LLM: the ``conversation`` so far (``User: ...`` /
    ``Assistant: ...`` lines, if any), numbered sources (text cut at ``max_chars`` each) and
    the question."""
    parts = []
    for i, result in enumerate(results, 1):
        meta = _field(result, "metadata") or {}
        where = _source_name(meta.get("source")) or str(_field(result, "id", i))
        if meta.get("page") is not None:
            where += f", page {meta['page']}"
        text = (_field(result, "text") or "(image without text)").strip()
        if len(text) > max_chars:
            text = text[:max_chars].rstrip() + " ..."
        parts.append(f"[{i}] ({where})\n{text}")
    sources = "\n\n".join(parts) if parts else "(no sources were retrieved)"
    before = f"Conversation so far:\n{conversation}\n\n" if conversation else ""
    return f"{before}Sources:\n\n{sources}\n\nQuestion: {query}\nAnswer:"


def _content_text(content: Any) -> str:
    """Text of a LangChain message content: a string or a list of str / {"type": "text"} blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    raise TypeError(f"Unexpected LangChain message content of type {type(content).__name__}.")


@dataclass
class LLMAdapter:
    """One way to call a LlamaIndex LLM, a LangChain chat model / LLM or a plain callable.

    Attributes:
        llm: the wrapped object.
        kind: ``"llamaindex"`` (``complete``), ``"langchain"`` (``invoke``) or ``"callable"``.
    """

    llm: Any
    kind: LLMKind

    @property
    def name(self) -> str:
        """A short description for the UI (class name, plus the model name when known)."""
        cls = type(self.llm).__name__
        for attr in ("model", "model_name", "model_id"):
            value = getattr(self.llm, attr, None)
            if isinstance(value, str) and value:
                return f"{cls} ({value})"
        return cls

    def generate(self, system: str, prompt: str) -> str:
        """Call the model once with a system instruction and a user prompt; returns its text."""
        if self.kind == "llamaindex":
            response = self.llm.complete(f"{system}\n\n{prompt}")
            text = getattr(response, "text", response)
            if not isinstance(text, str):
                raise TypeError(
                    f"{type(self.llm).__name__}.complete() returned {type(response).__name__} "
                    "without a .text string."
                )
            return text
        if self.kind == "langchain":
            message = self.llm.invoke([("system", system), ("human", prompt)])
            if isinstance(message, str):
                return message
            return _content_text(getattr(message, "content", message))
        text = self.llm(f"{system}\n\n{prompt}")
        if not isinstance(text, str):
            raise TypeError(f"The LLM callable returned {type(text).__name__}, expected str.")
        return text

    def answer(self, query: str, results: Sequence[Any], conversation: str = "") -> dict[str, Any]:
        """``{"mode": "llm", "kind", "model", "text"}`` for ``query`` over ``results``, with
        the earlier turns of the ``conversation`` (see :func:`build_prompt`) in the prompt."""
        text = self.generate(SYSTEM_PROMPT, build_prompt(query, results, conversation=conversation))
        return {"mode": "llm", "kind": self.kind, "model": self.name, "text": text.strip()}


def wrap_llm(llm: Any) -> LLMAdapter:
    """Recognise ``llm`` by its methods: ``complete`` (LlamaIndex), ``invoke`` (LangChain),
    else a callable ``f(prompt) -> str``.

    Raises:
        TypeError: ``llm`` has none of these, or is a class (pass an instance).
    """
    if isinstance(llm, LLMAdapter):
        return llm
    if isinstance(llm, type):
        raise TypeError(
            f"{llm.__name__} is a class: pass an instance, e.g. llm={llm.__name__}(...)."
        )
    if callable(getattr(llm, "complete", None)):
        return LLMAdapter(llm, "llamaindex")
    if callable(getattr(llm, "invoke", None)):
        return LLMAdapter(llm, "langchain")
    if callable(llm):
        return LLMAdapter(llm, "callable")
    raise TypeError(
        f"Cannot use {type(llm).__name__} as an LLM: pass a LlamaIndex LLM (has .complete), a "
        "LangChain chat model (has .invoke) or a function prompt -> str."
    )


def parse_llm_spec(spec: str) -> tuple[str, str]:
    """``"package.module:attr"`` -> ``("package.module", "attr")``.

    Raises:
        ValueError: ``spec`` is not ``module:attr``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--llm {spec!r}: expected 'module:attr', e.g. 'my_llms:chat_model'.")
    return module_name, attr


def load_llm(spec: str) -> LLMAdapter:
    """Import ``"package.module:attr"`` and wrap it.

    The module is looked up on ``sys.path`` and then in the current working directory (as
    ``python -m`` would; the ``metaembed-rag`` console script does not put the working
    directory on ``sys.path`` by itself), so ``--llm my_llms:chat`` works from the folder
    holding ``my_llms.py``.

    ``attr`` is an LLM object; or a class, instantiated with no arguments; or a function
    without required arguments (a factory), called to make the LLM. Any other function is
    used as ``f(prompt) -> str``.

    Raises:
        ValueError: ``spec`` is not ``module:attr``.
        ImportError: the module cannot be imported or has no ``attr``.
        TypeError: the class cannot be instantiated without arguments, or ``attr`` is not
            usable as an LLM.
    """
    import importlib
    import os
    import sys

    module_name, attr = parse_llm_spec(spec)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after site-packages: a local file never shadows a package
        importlib.invalidate_caches()
        logger.info("added the working directory %s to sys.path for --llm %s", cwd, spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            hint = (
                f"no module named {missing!r} on the Python path or in {cwd}; run from the "
                "folder holding it or add its folder to PYTHONPATH."
            )
        else:
            hint = f"{module_name} needs {missing!r}, which is not installed ({exc})."
        raise ModuleNotFoundError(f"--llm {spec!r}: {hint}", name=exc.name) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"--llm {spec!r}: module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        logger.info("instantiating %s() to make the LLM", spec)
        try:
            obj = obj()
        except TypeError as exc:
            raise TypeError(
                f"--llm {spec!r}: the class cannot be made without arguments ({exc}); point "
                "--llm at an instance or a zero-argument function that returns one."
            ) from exc
    elif _is_factory(obj):
        logger.info("calling %s() to make the LLM", spec)
        obj = obj()
    return wrap_llm(obj)


def _is_factory(obj: Callable[..., Any] | Any) -> bool:
    """True for a function that takes no required arguments (a factory, not ``f(prompt)``)."""
    import inspect

    if not inspect.isfunction(obj):
        return False
    params = inspect.signature(obj).parameters.values()
    return not any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in params
    )
