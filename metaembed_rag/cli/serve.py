"""``metaembed-rag serve``: the local visual-document RAG demo app."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from .common import index_option, qdrant_options, rerank_options, storage_of

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def run(args: argparse.Namespace) -> int:
    from .. import app
    from ..app.answer import parse_llm_spec
    from ..budget import Budget

    if args.llm:
        parse_llm_spec(args.llm)  # a malformed spec fails before anything starts
    if args.budget:
        Budget.parse(args.budget)  # checked against the model's budgets once it is loaded
    if args.rerank_candidates < 1:
        raise ValueError(f"--rerank-candidates must be >= 1, got {args.rerank_candidates}")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    if args.auth_token:
        url += f"?token={args.auth_token}"
    print(f"metaembed-rag demo: {url}  (index: {args.index}; starting)", flush=True)
    t0 = time.perf_counter()

    def ready() -> None:
        print(f"Ready in {time.perf_counter() - t0:.1f} s: open {url}  (Ctrl-C stops)", flush=True)

    extra: dict[str, Any] = {}
    if args.rerank:  # loaded once, before the collection (a bad spec or checkpoint fails here)
        from ..rerank import load_reranker

        extra["reranker"] = load_reranker(
            args.rerank, trust_remote_code=args.trust_remote_code,
            fusion_weight=args.rerank_fusion,
        )  # fmt: skip
        extra["rerank_candidates"] = args.rerank_candidates
        print(f'Reranking the top {args.rerank_candidates} hits by P("True") of {args.rerank}',
              flush=True)  # fmt: skip
    storage = storage_of(args)
    if storage is not None:  # the demo opens (or creates) the collection with its Qdrant store
        from ..collection import Collection
        from ..collection.folder import CONFIG_FILE

        exists = (Path(args.index).expanduser() / CONFIG_FILE).is_file()
        extra["collection"] = (
            Collection.open(args.index, model=args.model, storage=storage)
            if exists
            else Collection.create(args.index, args.model, storage=storage)
        )
    app.serve(
        args.index,
        **extra,
        host=args.host,
        port=args.port,
        model=args.model,
        llm=args.llm,
        max_upload_mb=args.max_upload_mb,
        uploads_dir=args.uploads,
        log_level="info" if args.verbose else "warning",
        default_budget=args.budget,
        on_ready=ready,
        allowed_hosts=args.allowed_host,
        auth_token=args.auth_token,
    )
    return 0


def add_parser(sub: Any) -> None:
    """The ``serve`` subcommand."""
    sv = sub.add_parser(
        "serve", help="the visual-document RAG chatbot demo: a web page on localhost"
    )
    index_option(sv, " (created if missing)")
    qdrant_options(sv)
    sv.add_argument(
        "--budget",
        default=None,
        help="the page's default budget 'r_q,r_c' (default: the model's largest trained "
        "budget, 16,64 for the default model)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--model", help="model name or folder for a new index (default: built-in)")
    sv.add_argument(
        "--llm",
        help="module:attr of a LlamaIndex LLM or LangChain chat model (or a zero-argument "
        "factory of one); default: extractive answers",
    )
    rerank_options(sv, "every search / question")
    sv.add_argument(
        "--uploads", help="folder for uploaded files (default: <index>-uploads beside the index)"
    )
    sv.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload, MiB")
    sv.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (behind a proxy; repeatable; '*': any). "
        "Default: only the --host address and its loopback names",
    )
    sv.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="require this token on every request (open the printed URL with ?token=...); "
        "use it when serving beyond localhost",
    )
    sv.set_defaults(func=run)
