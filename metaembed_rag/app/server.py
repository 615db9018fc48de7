"""HTTP API and static page of the demo app (FastAPI + uvicorn).

Routes (JSON unless stated):

* ``GET /`` — the page (``static/index.html``); ``GET /static/...`` — its JS and CSS.
* ``GET /api/info`` — model, budgets (and the default one), collection summary, LLM and
  reranker in use, the uploads folder and its files.
* ``POST /api/upload`` — multipart ``files``: saved in the uploads folder (default
  ``<index>-uploads/`` beside the collection folder), not indexed yet.
* ``POST /api/index`` — ``{"files": [names] | null}``: ``Collection.add_paths`` on those
  uploads (default: all) -> the ingest report.
* ``POST /api/search`` — ``{"query", "k", "budget": "8,16"}`` -> results + latency.
* ``POST /api/ask`` — same body -> results, latency and an answer (LLM or extractive).
* ``POST /api/sweep`` — same body -> the query at every trained budget: latency and agreement
  of the top-k with the largest budget's top-k.
* ``GET /api/image/{token}`` — a result's page image (PNG / the uploaded image file).

The collection, model and uploads are shared by all requests; one lock serialises access
to them (the model is not re-entrant and indexing rewrites the collection).
"""

import errno
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Unpack

from .security import RequestGuard, loopback_hosts
from .state import DemoError, DemoOptions, DemoState, render_pdf_page, safe_filename

__all__ = [
    "DemoError",
    "DemoOptions",
    "DemoState",
    "bind_socket",
    "create_app",
    "render_pdf_page",
    "safe_filename",
    "serve",
]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

_INSTALL_HINT = 'pip install "metaembed-rag[app]"'


def _require_app_deps() -> None:
    """Import-check FastAPI, uvicorn and python-multipart; raise one ImportError naming the extra."""
    missing = []
    for module, dist in (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("python_multipart", "python-multipart"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ImportError(
            f"The demo app needs {', '.join(missing)}: install the 'app' extra with "
            f"`{_INSTALL_HINT}`."
        )


def create_app(
    index_dir: str | Path,
    *,
    allowed_hosts: Iterable[str] | None = None,
    auth_token: str | None = None,
    **options: Unpack[DemoOptions],
) -> Any:
    """The FastAPI application of the demo, behind the request checks of
    :class:`~metaembed_rag.app.security.RequestGuard` (security headers, JSON or multipart
    with a same-origin ``Origin`` for changes, body size limits while streaming).

    Args:
        index_dir: the collection folder (created if missing).
        allowed_hosts: ``Host`` names answered (``None``: any; :func:`serve` passes the bind
            address's names).
        auth_token: a token every request must carry (``None``: none needed).
        options: ``model``, ``llm``, ``collection``, ``max_upload_mb``, ``uploads_dir``,
            ``default_budget``, ``reranker``, ``rerank_candidates`` (:class:`~metaembed_rag.app.state.DemoOptions`; meanings and
            defaults in :class:`~metaembed_rag.app.state.DemoState`).

    Raises:
        ValueError: ``uploads_dir`` is inside the collection folder, or ``default_budget`` is
            not one of the model's trained budgets.
        ImportError: FastAPI / uvicorn / python-multipart missing (the ``app`` extra).
    """
    _require_app_deps()
    from fastapi import Body, FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    state = DemoState(index_dir, **options)
    app = FastAPI(title="metaembed-rag demo", docs_url=None, redoc_url=None)
    app.state.demo = state
    app.add_middleware(
        RequestGuard,
        allowed_hosts=allowed_hosts,
        auth_token=auth_token,
        max_upload_bytes=state.max_upload_bytes,
    )

    @app.exception_handler(DemoError)
    async def _demo_error(_: Request, exc: DemoError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return state.info()

    @app.post("/api/upload")
    def upload(files: list[UploadFile] = File(...)) -> dict[str, Any]:  # noqa: B008
        saved = [state.save_upload(f.filename or "", f.file) for f in files]
        return {"saved": saved}

    @app.post("/api/index")
    def index(body: dict[str, Any] | None = Body(default=None)) -> dict[str, Any]:  # noqa: B008
        files = (body or {}).get("files")
        if files is not None and not isinstance(files, list):
            raise HTTPException(400, "'files' must be a list of uploaded file names or null.")
        return state.index(files)

    @app.post("/api/search")
    def search(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return state.search(body)

    @app.post("/api/ask")
    def ask(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return state.ask(body)

    @app.post("/api/sweep")
    def sweep(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return state.sweep(body)

    @app.get("/api/image/{token}")
    def image(token: str) -> FileResponse:
        return FileResponse(state.image_file(token))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


#: Seconds requests still running at SIGINT / SIGTERM get before the server exits.
SHUTDOWN_GRACE_S = 3


def _stopping_server(config: Any, state: DemoState) -> Any:
    """A ``uvicorn.Server`` that, on SIGINT / SIGTERM, also tells a running indexing request
    to save and stop (:attr:`DemoState.stopping`)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.stopping.set()
            super().handle_exit(sig, frame)

    return Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (connections wait in its backlog until the app
    runs).

    Raises:
        OSError: the port is in use, or the address cannot be used (one-line message).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT only
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"port {port} on {host} is already in use (another server?): stop it or "
                f"choose another port, e.g. --port {port + 1}."
            ) from exc
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port."
        ) from exc
    sock.set_inheritable(True)
    return sock


def serve(
    index_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_ready: Callable[[], None] | None = None,
    allowed_hosts: Iterable[str] = (),
    auth_token: str | None = None,
    **options: Unpack[DemoOptions],
) -> None:
    """Run the demo at ``http://host:port/`` until interrupted (Ctrl-C).

    The port is bound first (a port in use fails at once, before the model loads), then the
    LLM and the collection are loaded, then ``on_ready()`` is called and requests are served
    (those that arrived meanwhile wait, they are not refused). Only ``Host`` names of the
    bind address (plus ``allowed_hosts``; ``"*"``: any) are answered. SIGINT / SIGTERM stop
    the server within seconds: a running indexing request saves the files it finished and
    answers 503 (indexing the same files again later resumes), other requests get up to
    :data:`SHUTDOWN_GRACE_S` seconds.

    Args: see :func:`create_app`; ``llm`` may also be a ``"module:attr"`` string
    (:func:`~metaembed_rag.app.answer.load_llm`); ``log_level`` is uvicorn's.

    Raises:
        OSError: the port is in use or the address cannot be used.
    """
    _require_app_deps()
    import uvicorn

    sock = bind_socket(host, port)
    try:
        if isinstance(options.get("llm"), str):
            from .answer import load_llm

            options["llm"] = load_llm(options["llm"])
        hosts = loopback_hosts(host) | set(allowed_hosts)
        if host in ("0.0.0.0", "::") and not allowed_hosts:
            hosts = {"*"}  # every interface: the names it is reached by are not known here
        app = create_app(index_dir, allowed_hosts=hosts, auth_token=auth_token, **options)
        shown = f"[{host}]" if ":" in host else host
        logger.info("metaembed-rag demo on http://%s:%d/ (index: %s)", shown, port, index_dir)
        if on_ready is not None:
            on_ready()
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )  # fmt: skip
        _stopping_server(config, app.state.demo).run(sockets=[sock])
    finally:
        sock.close()
