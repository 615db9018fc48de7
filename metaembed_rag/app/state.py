"""The demo app's state and operations, independent of HTTP: the collection, uploads, search,
answers, the budget sweep and result images (:mod:`.server` maps them to routes)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

from ..ingest import IMAGE_SUFFIXES
from .answer import LLMAdapter, extractive_answer, highlight_spans, query_terms, wrap_llm
from .chat import CONDENSE_SYSTEM, HistoryError, check_history, condense_prompt, format_history
from .views import budget_agreement, model_header

__all__ = ["DemoError", "DemoOptions", "DemoState", "MAX_K", "render_pdf_page", "safe_filename"]

logger = logging.getLogger(__name__)

#: Suffix of the default uploads folder, beside the collection folder (``Collection.add_paths``
#: leaves out files inside the collection's own folder).
UPLOADS_SUFFIX = "-uploads"
PAGE_CACHE = "app-cache"
MAX_K = 50
#: Coarse candidates per query (the Collection.search default).
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]+")


class DemoError(Exception):
    """A request the app refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def safe_filename(name: str) -> str:
    """The last component of an uploaded file name with unusual characters replaced by ``_``.

    Raises:
        DemoError: nothing usable is left (empty, only dots).
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    if not base:
        raise DemoError(f"Unusable file name {name!r}: rename the file and upload it again.")
    if len(base) > 180:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[: 170 - len(suffix)] + dot + suffix) if dot else base[:180]
    return base


def _report_dict(report: Any) -> dict[str, Any]:
    """An ``IngestReport`` as JSON: its fields, ``skipped`` as ``[{"path", "reason"}]`` and
    ``summary``."""
    data = (
        asdict(report)
        if is_dataclass(report) and not isinstance(report, type)
        else dict(vars(report))
    )
    skipped = []
    for entry in getattr(report, "skipped", []) or []:
        path, reason = entry
        skipped.append({"path": Path(str(path)).name, "reason": str(reason)})
    data["skipped"] = skipped
    summary = getattr(report, "summary", None)
    data["summary"] = summary() if callable(summary) else None
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def _jsonable(value: Any) -> Any:
    """Metadata made JSON-safe (paths to str, unknown objects to their repr)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class _GatedModel:
    """The model as the indexing run sees it: ``encode_documents`` split into single batches,
    each encoded under the demo's model lock (so a search waits for one batch at most, never
    for a whole indexing run) and each first checking whether the server is stopping (then
    ``KeyboardInterrupt``: ``add_paths`` saves the files finished so far). Batches are formed
    in the order ``encode_documents`` itself batches in, so the vectors are those of one call.
    Everything else is the model's own."""

    def __init__(self, model: Any, lock: Any, stopping: threading.Event) -> None:
        self._model, self._lock, self._stopping = model, lock, stopping

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode_documents(self, items: Any, *, batch_size: int = 32, **kw: Any) -> Any:
        import torch

        items = list(items) if isinstance(items, (list, tuple)) else [items]

        def key(i: int) -> tuple[bool, int]:
            item = items[i]
            if isinstance(item, str):
                return False, -len(item)
            if isinstance(item, tuple):
                return True, -len(item[0] or "")
            return True, 0

        order = sorted(range(len(items)), key=key)
        parts: list[Any] = []
        for start in range(0, len(order), batch_size):
            if self._stopping.is_set():
                raise KeyboardInterrupt
            idx = order[start : start + batch_size]
            with self._lock:
                parts.append(
                    self._model.encode_documents(
                        [items[i] for i in idx], batch_size=batch_size, **kw
                    )
                )
        if not parts:
            return self._model.encode_documents(items, batch_size=batch_size, **kw)
        out = torch.empty((len(items), *parts[0].shape[1:]), dtype=parts[0].dtype)
        out[torch.tensor(order)] = torch.cat(parts)
        return out


class DemoOptions(TypedDict, total=False):
    """The demo's options besides the collection folder, as keywords of :class:`DemoState`,
    :func:`~metaembed_rag.app.create_app` and :func:`~metaembed_rag.app.serve` (documented
    in :class:`DemoState`; the defaults are its own)."""

    collection: Any
    model: Any
    llm: Any
    max_upload_mb: float
    uploads_dir: str | Path | None
    default_budget: Any
    reranker: Any
    rerank_candidates: int


class DemoState:
    """Everything the routes share: the collection, the LLM, uploads and page images.

    Args:
        index_dir: the collection folder.
        uploads_dir: where uploaded files are kept (default: ``<index_dir>-uploads`` beside
            the collection folder; ``Collection.add_paths`` does not index files inside the
            collection's own folder, so it must be outside it).
        collection: an open :class:`~metaembed_rag.collection.Collection` on ``index_dir``
            (default: ``Collection.open_or_create(index_dir, model=model)``).
        model: model name, folder or ``MetaEmbedModel``, passed to
            ``Collection.open_or_create`` when ``collection`` is None (default: the embedded
            default model for a new collection).
        llm: a LlamaIndex LLM, LangChain chat model, ``f(prompt) -> str`` or None
            (extractive answers).
        max_upload_mb: largest accepted upload, in MiB.
        default_budget: the budget of requests that name none and of the page's slider at
            start, e.g. ``"8,16"`` (default: the model's largest trained budget).
        reranker: a loaded :class:`~metaembed_rag.rerank.MLLMReranker` (``None``: none). The
            search and ask paths then rerank the top ``rerank_candidates`` hits of the
            multi-vector search by its P("True") (fused with the first-stage score when its
            ``fusion_weight > 0``), as ``metaembed-rag search --rerank`` does; the sweep
            stays on the first stage.
        rerank_candidates: hits reranked per query (at least ``k``).

    Raises:
        ValueError: ``uploads_dir`` inside the collection folder, ``default_budget`` not
            one the model was trained with, or ``rerank_candidates < 1``.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        collection: Any = None,
        model: Any = None,
        llm: Any = None,
        max_upload_mb: float = 200.0,
        uploads_dir: str | Path | None = None,
        default_budget: Any = None,
        reranker: Any = None,
        rerank_candidates: int = 20,
    ) -> None:
        if (
            isinstance(rerank_candidates, bool)
            or not isinstance(rerank_candidates, int)
            or (rerank_candidates < 1)
        ):
            raise ValueError(
                f"rerank_candidates must be an integer >= 1, got {rerank_candidates!r}"
            )
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.index_dir = Path(index_dir)
        if uploads_dir is None:
            resolved = self.index_dir.resolve()
            uploads_dir = resolved.with_name(resolved.name + UPLOADS_SUFFIX)
        self.uploads = Path(uploads_dir)
        if self.uploads.resolve().is_relative_to(self.index_dir.resolve()):
            raise ValueError(
                f"The uploads folder {self.uploads} is inside the collection folder "
                f"{self.index_dir}, whose files are never indexed; choose a folder outside it."
            )
        self.llm: LLMAdapter | None = None if llm is None else wrap_llm(llm)
        if collection is None:
            from ..collection import Collection

            collection = Collection.open_or_create(self.index_dir, model=model)
        self.collection = collection
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.page_cache = self.index_dir / PAGE_CACHE
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        #: Held briefly by whatever uses the model or swaps the reader collection (searches,
        #: answers, the sweep, one indexing batch at a time); never for a whole indexing run.
        self.lock = threading.RLock()
        #: One indexing run at a time (it writes through its own Collection object).
        self.index_lock = threading.Lock()
        #: Set on shutdown: a running indexing run saves what it finished and stops.
        self.stopping = threading.Event()
        self._images: dict[str, tuple[str, Path, int]] = {}
        self._sources: dict[str, Path] = {}
        self.default_budget = self.budgets[-1]
        if default_budget is not None and default_budget != "":
            try:
                self.default_budget = self.resolve_budget(default_budget)
            except DemoError as exc:
                raise ValueError(f"--budget / default_budget: {exc}") from exc

    # -- model / budgets -------------------------------------------------------------------
    @property
    def budgets(self) -> list[Any]:
        """The model's trained budgets, smallest first."""
        return sorted(self.collection.model.budgets)

    def resolve_budget(self, budget: Any) -> Any:
        """``"8,16"`` / ``[8, 16]`` / None (:attr:`default_budget`) -> a trained ``Budget``.

        Raises:
            DemoError: not one of the model's trained budgets.
        """
        budgets = self.budgets
        if budget is None or budget == "":
            return getattr(self, "default_budget", budgets[-1])
        from ..budget import Budget

        try:
            value = Budget.parse(budget)
        except (TypeError, ValueError) as exc:
            raise DemoError(str(exc)) from exc
        if value not in budgets:
            raise DemoError(
                f"Budget ({value}) is not one the model was trained with; use one of "
                + ", ".join(f"({b})" for b in budgets)
                + "."
            )
        return value

    def info(self) -> dict[str, Any]:
        """What the page shows in its header."""
        with self.lock:
            cinfo = self.collection.info()
        header = model_header(
            self.collection.model, cinfo.get("model"), cinfo.get("model_fingerprint")
        )
        return {
            "model": header["label"],
            "model_details": header,
            "budgets": [str(b) for b in self.budgets],
            "default_budget": str(self.default_budget),
            "collection": _jsonable(cinfo),
            "llm": None if self.llm is None else {"kind": self.llm.kind, "name": self.llm.name},
            "reranker": self.reranker_info(),
            "uploads": sorted(p.name for p in self.uploads.iterdir() if p.is_file()),
            "uploads_dir": str(self.uploads),
            "max_upload_mb": self.max_upload_bytes / (1024 * 1024),
        }

    def reranker_info(self) -> dict[str, Any] | None:
        """``{"kind": "mllm", "name", "candidates", "fusion_weight"}`` of the active reranker
        (``name``: the checkpoint it was loaded from), or ``None``."""
        if self.reranker is None:
            return None
        config = getattr(getattr(self.reranker, "model", None), "config", None)
        name = getattr(config, "name_or_path", "") or type(self.reranker.model).__name__
        return {
            "kind": "mllm",
            "name": str(name),
            "candidates": self.rerank_candidates,
            "fusion_weight": float(getattr(self.reranker, "fusion_weight", 0.0)),
        }

    # -- uploads and indexing --------------------------------------------------------------
    def save_upload(self, filename: str, stream: BinaryIO) -> str:
        """Copy an uploaded file to the uploads folder; returns the stored name.

        The size limit is checked while copying (nothing past it is written). The copy goes to
        a temporary file of its own and is linked into place only under a free name: an
        existing upload is never overwritten (a different file with the same name is stored
        as ``name (2).ext``; the same bytes again keep the existing name).

        Raises:
            DemoError: unusable name (400) or larger than ``max_upload_mb`` (413).
        """
        import os
        import uuid

        name = safe_filename(filename)
        part = self.uploads / f".{uuid.uuid4().hex}.part"
        size = 0
        digest = hashlib.sha256()
        try:
            with part.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise DemoError(
                            f"{filename}: larger than the {self.max_upload_bytes >> 20} MiB "
                            "upload limit (serve --max-upload-mb to raise it).",
                            413,
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            stem, dot, suffix = name.rpartition(".")
            stem, dot = (stem, dot) if dot and stem else (name, "")
            for n in range(1, 10_000):
                candidate = name if n == 1 else f"{stem} ({n}){dot}{suffix if dot else ''}"
                target = self.uploads / candidate
                try:
                    os.link(part, target)  # atomic, and fails if the name is taken
                except FileExistsError:
                    if _sha256(target) == digest.hexdigest():
                        break  # the same file uploaded again
                    continue
                break
            else:  # pragma: no cover - 10,000 files of one name
                raise DemoError(f"Too many uploads named {name!r}; rename the file.", 409)
        finally:
            part.unlink(missing_ok=True)
        logger.info("saved upload %s (%d bytes)", target, size)
        return candidate

    def index(self, files: list[str] | None = None) -> dict[str, Any]:
        """``Collection.add_paths`` on the named uploads (default: every upload).

        Raises:
            DemoError: a named file was not uploaded, or there is nothing to index.
        """
        if files is None:
            paths = sorted(
                p for p in self.uploads.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        else:
            paths = []
            for name in files:
                path = self.uploads / safe_filename(str(name))
                if not path.is_file():
                    raise DemoError(f"{name!r} was not uploaded: upload it first.", 404)
                paths.append(path)
        if not paths:
            raise DemoError("Nothing to index: upload PDFs, images or text files first.")
        if self.stopping.is_set():
            raise DemoError("The server is shutting down.", 503)
        # Vision-language models also index every PDF page as an image.
        images = bool(getattr(self.collection.model, "supports_images", False))
        with self.index_lock:  # searches go on meanwhile, on the reader collection
            report = self._write(paths, images)
        self.refresh()
        out = _report_dict(report)
        logger.info("indexed uploads: %s", out.get("summary"))
        return out

    def _write(self, paths: list[Path], images: bool) -> Any:
        """``add_paths`` through a writer collection of its own (the reader one is never
        written to), its model gated per batch (see :class:`_GatedModel`)."""
        from ..collection import Collection

        model = _GatedModel(self.collection.model, self.lock, self.stopping)
        writer = Collection.open(self.collection.folder, model=model)
        try:
            return writer.add_paths(paths, pdf_page_images=images, progress=False)
        except KeyboardInterrupt as exc:
            raise DemoError(
                "The server is shutting down: the files finished so far are saved; index "
                "the rest after it restarts.",
                503,
            ) from exc
        finally:
            writer.close()

    def refresh(self) -> None:
        """Reopen the reader collection if a writer committed since it was opened (this
        process's indexing run or another process)."""
        from ..collection import Collection

        current = self.collection
        disk = getattr(current, "_disk_generation", None)
        if disk is None or disk() == getattr(current, "_generation", None):
            return
        fresh = Collection.open(current.folder, model=current.model)
        with self.lock:
            self.collection = fresh
            self._sources = {}
        logger.info("reopened %s after a commit", current.folder)

    # -- search and answers ----------------------------------------------------------------
    def _search(
        self, query: str, k: int, budget: Any, hybrid: Any = None
    ) -> tuple[list[Any], float]:
        self.refresh()
        with self.lock:
            t0 = time.perf_counter()
            pool, fetch_k = k, None
            if self.reranker is not None:  # the first stage fetches the candidates reranked
                from ..index.params import DEFAULT_FETCH_K

                pool = max(k, self.rerank_candidates)
                fetch_k = max(DEFAULT_FETCH_K, pool)
            try:
                results = self.collection.search(
                    query, k=pool, budget=budget, hybrid=hybrid, fetch_k=fetch_k
                )
            except ValueError as exc:  # empty collection, bad budget, ...
                raise DemoError(str(exc)) from exc
            if self.reranker is not None:
                from ..rerank import rerank_results

                try:
                    results = rerank_results(self.reranker, query, results, top_n=k)
                except ValueError as exc:  # e.g. an image hit for a text-only reranker
                    raise DemoError(f"Reranking failed: {exc}") from exc
            ms = (time.perf_counter() - t0) * 1000.0
        return list(results), ms

    @staticmethod
    def _check_query(body: dict[str, Any]) -> tuple[str, int]:
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DemoError("Type a question first ('query' is empty).")
        k = body.get("k", 5)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise DemoError(f"'k' must be an integer from 1 to {MAX_K}, got {k!r}.")
        return query.strip(), k

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"query", "k", "budget", "hybrid"}`` -> ``{"query", "budget", "reranker",
        "latency_ms", "results"}``; ``"hybrid": "rrf"`` fuses the ranking with BM25 (reciprocal
        rank fusion; ``"weighted"``: normalised scores, even weights). With a reranker, the
        scores are its P("True") (or the fused score) and ``latency_ms`` includes it."""
        query, k = self._check_query(body)
        budget = self.resolve_budget(body.get("budget"))
        hybrid = body.get("hybrid")
        if hybrid not in (None, "rrf", "weighted"):
            raise DemoError(f"'hybrid' must be null, 'rrf' or 'weighted', got {hybrid!r}.")
        terms = query_terms(query)
        rerank = self.reranker_info()
        with self.lock:  # the image lookup reads the collection's manifest
            results, ms = self._search(query, k, budget, hybrid)
            rows = [self._result_dict(r, terms) for r in results]
        return {
            "query": query,
            "budget": str(budget),
            "k": k,
            "hybrid": hybrid,
            "reranker": rerank["name"] if rerank else None,
            "latency_ms": round(ms, 3),
            "results": rows,
        }

    def _standalone_question(
        self, history: list[dict[str, str]], question: str
    ) -> tuple[str, str | None]:
        """(what to search, the LLM's error or None): with an LLM and earlier turns, the LLM
        rewrites a follow-up as a standalone question; if that call fails, the question as
        typed is searched and the error is returned (shown with the answer)."""
        if self.llm is None or not history:
            return question, None
        try:
            text = self.llm.generate(CONDENSE_SYSTEM, condense_prompt(history, question))
        except Exception as exc:  # a remote model can fail in many ways: show it
            logger.exception("LLM call (standalone question) failed")
            return question, f"{type(exc).__name__}: {exc}"
        text = " ".join(text.split())
        return (text or question), None

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """:meth:`search` plus ``"answer"`` (LLM when configured, else extractive) and
        ``"answer_ms"``. An LLM failure is reported in ``answer["error"]``, results kept.

        ``body["history"]``: the earlier turns of the conversation, oldest first
        (``[{"query", "answer"}]``, see :func:`~metaembed_rag.app.chat.check_history`). With
        an LLM, a follow-up is rewritten into a standalone question, which is searched
        (``"search_query"``), and the answer prompt holds the conversation; the extractive
        path answers each question on its own (``"search_query"`` = ``"query"``)."""
        question, _ = self._check_query(body)
        try:
            history = check_history(body.get("history"))
        except HistoryError as exc:
            raise DemoError(str(exc)) from exc
        searched, condense_error = self._standalone_question(history, question)
        out = self.search(dict(body, query=searched))
        out["search_query"] = out["query"]
        out["query"] = question
        t0 = time.perf_counter()
        if self.llm is None:
            with self.lock:  # the model ranks the sentences by meaning; it is not re-entrant
                answer = extractive_answer(
                    out["query"], out["results"], model=self.collection.model
                )
        else:
            try:
                answer = self.llm.answer(
                    question, out["results"], conversation=format_history(history)
                )
            except Exception as exc:  # a remote model can fail in many ways: show it
                logger.exception("LLM call failed")
                answer = {
                    "mode": "llm",
                    "kind": self.llm.kind,
                    "model": self.llm.name,
                    "text": None,
                    "error": f"The LLM call failed: {type(exc).__name__}: {exc}",
                }
        if condense_error is not None:
            answer["note"] = (
                f"Rewriting the follow-up as a standalone question failed ({condense_error}); "
                "the question was searched as typed."
            )
        out["answer"] = answer
        out["answer_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        return out

    def sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        """The query at every trained budget, smallest first.

        The query is encoded once (``encode_ms``); each budget then runs the collection's
        two-stage search on those vectors (``score_ms``: coarse recall + exact MaxSim at the
        budget; ``latency_ms`` = ``encode_ms`` + ``score_ms``); ``ids`` equal
        ``Collection.search(query, k=k, budget=budget)``. Each row's agreement with the
        largest budget's top-k: ``top1`` (same best hit), ``agreement`` (share of ranks with
        the same document) and ``overlap`` (share of its documents returned at any rank), see
        :func:`~metaembed_rag.app.views.budget_agreement`.
        """
        query, k = self._check_query(body)
        rows: list[dict[str, Any]] = []
        with self.lock:
            if len(self.collection.index) == 0:
                raise DemoError("The index is empty: upload and index documents first.")
            retriever = self.collection.retriever
            t0 = time.perf_counter()
            vectors = self.collection.model.encode_queries([query])
            encode_ms = (time.perf_counter() - t0) * 1000.0
            for budget in self.budgets:
                t0 = time.perf_counter()
                hits = retriever.search_vectors(vectors, k, rerank_budget=budget)[0]
                score_ms = (time.perf_counter() - t0) * 1000.0
                rows.append(
                    {
                        "budget": str(budget),
                        "score_ms": round(score_ms, 3),
                        "latency_ms": round(encode_ms + score_ms, 3),
                        "ids": [str(h.id) for h in hits],
                        "top_score": float(hits[0].score) if hits else None,
                    }
                )
        for row in rows:
            row.update(budget_agreement(row["ids"], rows[-1]["ids"]))
        return {
            "query": query,
            "k": k,
            "encode_ms": round(encode_ms, 3),
            "reference_budget": rows[-1]["budget"],
            "budgets": rows,
        }

    def _result_dict(self, result: Any, terms: list[str]) -> dict[str, Any]:
        meta = dict(result.metadata or {})
        text = result.text or ""
        source = meta.get("source")
        return {
            "id": str(result.id),
            "rank": int(result.rank),
            "score": float(result.score),
            "text": text,
            "highlights": [[a, b] for a, b in highlight_spans(text, terms)],
            "source": None if source is None else Path(str(source)).name,
            "page": meta.get("page"),
            "metadata": _jsonable(meta),
            "image_url": self._image_url(result, meta),
        }

    # -- page images -----------------------------------------------------------------------
    def _register(self, kind: str, path: Path, page: int) -> str:
        key = f"{kind}\0{path}\0{page}".encode()
        token = hashlib.sha256(key).hexdigest()[:24]
        self._images[token] = (kind, path, page)
        return f"/api/image/{token}"

    def _image_url(self, result: Any, meta: dict[str, Any]) -> str | None:
        """A URL for the result's picture: its own image, an uploaded image file, or its PDF
        page rendered on demand."""
        image = getattr(result, "image", None)
        if image is not None:
            return self._register("file", Path(image), 0)
        source = meta.get("source")
        if source is None:
            return None
        path = self._locate(str(source))
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path.is_file():
            return self._register("file", path, 0)
        page = meta.get("page")
        if suffix == ".pdf" and isinstance(page, int) and path.is_file():
            return self._register("pdf", path, page)
        return None

    def _locate(self, source: str) -> Path:
        """The file a result's ``source`` names: the indexed file of that name in the
        collection's manifest (sources relative to the indexing directory are not relative to
        ours), else the path as given, else the upload of that name."""
        if source not in self._sources:  # (re)build the source -> file map on a miss
            files = getattr(self.collection, "files", None) or {}
            self._sources = {str(e.get("source")): Path(k) for k, e in files.items()}
        if source in self._sources:
            return self._sources[source]
        path = Path(source)
        if not path.is_file() and (self.uploads / path.name).is_file():
            return self.uploads / path.name
        return path

    def image_file(self, token: str) -> Path:
        """The file to send for ``/api/image/{token}`` (PDF pages rendered to PNG, cached).

        Raises:
            DemoError: unknown token (404) or the page cannot be rendered.
        """
        entry = self._images.get(token)
        if entry is None:
            raise DemoError("Unknown image: run the search again.", 404)
        kind, path, page = entry
        if kind == "file":
            if not path.is_file():
                raise DemoError(f"The image {path.name} is gone from disk.", 404)
            return path
        out = self.page_cache / f"{token}.png"
        if not out.is_file():
            with self.lock:
                render_pdf_page(path, page, out)
        return out


def _sha256(path: Path) -> str:
    from ..index.persist import sha256_file

    return sha256_file(path)


def render_pdf_page(pdf: Path, page: int, out: Path, *, width: int = 900) -> Path:
    """Render page ``page`` (1-based, as stored in result metadata) of ``pdf`` to a PNG of
    ``width`` pixels at ``out`` (written atomically).

    Raises:
        DemoError: pypdfium2 is not installed (the ``pdf`` extra) or the page does not exist.
    """
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise DemoError(
            'Rendering PDF pages needs pypdfium2: pip install "metaembed-rag[pdf]".', 500
        ) from exc
    doc = pdfium.PdfDocument(str(pdf))
    try:
        if not 1 <= page <= len(doc):
            raise DemoError(f"{pdf.name} has no page {page} (it has {len(doc)}).", 404)
        pdf_page = doc[page - 1]
        scale = width / max(pdf_page.get_width(), 1.0)
        image = pdf_page.render(scale=scale).to_pil()
    finally:
        doc.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    image.save(tmp, format="PNG")
    tmp.replace(out)
    return out
