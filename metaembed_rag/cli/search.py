"""``metaembed-rag search``: search a collection from the shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..index.params import DEFAULT_FETCH_K
from .common import (
    DEFAULT_INDEX,
    error_line,
    index_option,
    qdrant_options,
    rerank_options,
    storage_of,
)

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def _parse_filters(items: list[list[str]] | None) -> dict | None:
    if not items:
        return None
    out: dict = {}
    for item in (x for group in items for x in group):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--filter takes key=value (e.g. --filter type=pdf page=2), got {item!r}."
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def _result_label(r: object) -> str:
    """Where a hit comes from: its source (and page), plus its id when the id is not derived
    from the source (JSONL record ids)."""
    m = getattr(r, "metadata", {}) or {}
    rid = str(getattr(r, "id", ""))
    source = str(m.get("source", ""))
    label = source or rid
    if "page" in m:
        label += f", page {m['page']}"
    if source and not rid.startswith(source + "#"):
        label += f"  (id {rid})"
    elif m.get("chunk"):
        label += f", part {int(m['chunk']) + 1}"
    return label


def _print_hits(
    args: argparse.Namespace, query: str, results: list[Any], budget: Any, params: Any,
    filt: dict | None, timing: str, total: int | None,
) -> None:  # fmt: skip
    """One query's results: JSON (indented; one line a query with --interactive) or text."""
    if args.json:
        out = {
            "query": query, "budget": str(budget), "k": params.k, "fetch_k": params.fetch_k,
            "filter": filt, "results": [r.to_dict() for r in results],
        }  # fmt: skip
        if params.hybrid:
            out.update(hybrid=params.hybrid, hybrid_weight=params.hybrid_weight)
        print(json.dumps(out, indent=None if args.interactive else 2, ensure_ascii=False))
        return
    from ..budget import Budget

    b = Budget.parse(str(budget))
    shown = query if args.image else f'"{query}"'
    of = f" of {total}" if total is not None else ""
    print(f"Top {len(results)}{of} chunks for {shown} at budget ({b}): {timing}.")
    if getattr(args, "rerank", None):
        print(f'Score = P("True") from {args.rerank} over the top hits (docs/gpu-vlm.md).')
    elif params.scorer is not None:
        print(f"Score = the {params.scorer.name} scorer (docs/scorers.md; higher is better).")
    elif params.hybrid == "rrf":
        print("Score = reciprocal rank fusion of MaxSim and BM25 ranks (higher is better).")
    elif params.hybrid == "weighted":
        print(
            f"Score = {params.weight:g} x MaxSim + {1 - params.weight:g} x BM25, each "
            "min-max normalised over the candidates (0 to 1; higher is better)."
        )
    else:
        print(
            f"Score = MaxSim: for each of {b.r_q} query vectors its best dot product with "
            f"the chunk's first {b.r_c} vectors, summed (-{b.r_q} to {b.r_q}; higher is better)."
        )
    for r in results:
        print(f"\n{r.rank + 1:3d}. {r.score:7.3f}  {_result_label(r)}")
        if r.text:
            snippet = " ".join(r.text.split())
            print(f"     {snippet[:220]}{'...' if len(snippet) > 220 else ''}")
        if r.image is not None:
            print(f"     image: {r.image}")


def _check_query(text: str) -> str:
    if not text.strip():
        raise ValueError(
            'the query is empty; pass a question in quotes, e.g. metaembed-rag search "What is '
            'a retrieval budget?"'
        )
    return text


def _queries(args: argparse.Namespace) -> Iterator[str]:
    """The question of the command line, or (``--interactive``) that one and then one per
    line of stdin (blank lines skipped) until ``quit``/``exit`` or the end of input."""
    if not args.interactive:
        yield _check_query(args.query or "")
        return
    if args.query:
        yield _check_query(args.query)
    prompt = sys.stdin.isatty()
    while True:
        if prompt:
            print("query> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or line.strip().lower() in ("quit", "exit", ":q"):
            return
        if line.strip():
            yield line.strip()


def _each_query(args: argparse.Namespace, answer: Callable[[str], int]) -> int:
    """Call ``answer(query)`` for every query; with ``--interactive`` a failing query prints
    its ``error:`` line and the loop goes on (exit code: the last failure's, else 0)."""
    if not args.interactive:
        return answer(next(_queries(args)))
    rc = 0
    for query in _queries(args):
        try:
            rc = answer(query) or rc
        except (ValueError, OSError) as exc:
            print(error_line(exc), file=sys.stderr)
            rc = 2
        sys.stdout.flush()
    return rc


def _run_remote(args: argparse.Namespace, url: str, params: Any) -> int:
    """Search through a running ``metaembed-rag serve`` (its model stays loaded)."""
    from .remote import served_folder, server_info, server_search

    if (
        args.image
        or args.filter
        or args.fetch_k is not None
        or args.hybrid
        or args.scorer
        or (args.rerank)
    ):
        raise ValueError(
            "--image, --filter, --fetch-k, --hybrid, --scorer and --rerank are not available "
            "with --server (the demo "
            "server's search takes a question, --k and --budget); search without --server."
        )
    if args.budget:
        from ..budget import Budget

        Budget.parse(args.budget)  # a malformed budget fails before the request
    info = server_info(url)
    served = served_folder(info)
    if args.index != DEFAULT_INDEX and served != Path(args.index).expanduser().resolve():
        raise ValueError(
            f"the server at {url} serves the index {served}, not {args.index}; leave out "
            "--index (or --server) to search the one you mean."
        )
    total = (info.get("collection") or {}).get("documents")

    def answer(query: str) -> int:
        results, budget, ms = server_search(url, query, k=params.k, budget=args.budget)
        timing = f"{ms:.0f} ms on the server at {url} (model already loaded)"
        _print_hits(args, query, list(results), budget, params, None, timing, total)
        if not results:
            print(error_line("no document matched"), file=sys.stderr)
            return 1
        return 0

    return _each_query(args, answer)


def run(args: argparse.Namespace) -> int:
    from ..budget import resolve_budget
    from ..collection import Collection
    from ..index import SearchParams
    from .remote import SERVER_ENV, detect_server

    if not args.interactive:
        _check_query(args.query or "")
    filt = _parse_filters(args.filter)
    try:  # flag mistakes fail before anything loads
        params = SearchParams.of(
            args.k, fetch_k=args.fetch_k, filter=filt, hybrid=args.hybrid,
            hybrid_weight=args.hybrid_weight, scorer=args.scorer,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(
            "search flags (--k / --fetch-k / --filter / --hybrid / --hybrid-weight / --scorer): "
            f"{exc}"
        ) from exc
    storage = storage_of(args)
    server = args.server or (None if args.no_server else os.environ.get(SERVER_ENV))
    local_only = (
        args.no_server or args.image or args.filter or args.fetch_k is not None or args.hybrid
        or storage is not None or args.scorer or args.rerank
    )  # fmt: skip
    if not server and not local_only:
        server = detect_server(args.index)  # a `serve` of this index on the default port
    if server:
        return _run_remote(args, server, params)
    reranker = None
    if args.rerank:  # load (and fail) before the index opens
        from ..rerank import load_reranker

        reranker = load_reranker(
            args.rerank, device=args.device, trust_remote_code=args.trust_remote_code,
            fusion_weight=args.rerank_fusion,
        )  # fmt: skip
    col = Collection.open(args.index, model=args.model, device=args.device, load_model=False,
                          storage=storage)  # fmt: skip
    try:
        if len(col) == 0:
            raise ValueError(
                f"the index {args.index} holds no documents; add some with "
                f"`metaembed-rag index PATH --index {args.index}`."
            )
        budget = resolve_budget(args.budget, col.index.budgets)
        t0 = time.perf_counter()
        col.model  # noqa: B018 - load (and check) the model before timing the search
        load_s = time.perf_counter() - t0

        def answer(text: str) -> int:
            query: object = text
            if args.image:
                query = Path(text).expanduser()
                if not query.is_file():  # type: ignore[union-attr]
                    raise FileNotFoundError(f"{text}: no such image file.")
            t0 = time.perf_counter()
            pool = max(params.k, args.rerank_candidates) if reranker is not None else params.k
            results = col.search(
                query, k=pool, budget=budget, fetch_k=max(params.fetch_k, pool), filter=filt,
                hybrid=params.hybrid, hybrid_weight=params.hybrid_weight, scorer=params.scorer,
            )  # fmt: skip
            if reranker is not None:
                from ..rerank import rerank_results

                results = rerank_results(reranker, query, results, top_n=params.k)
            timing = f"{(time.perf_counter() - t0) * 1000:.0f} ms (model loaded in {load_s:.1f} s)"
            _print_hits(args, text, list(results), budget, params, filt, timing, len(col))
            if not results:
                print(error_line("no document matches the filter"), file=sys.stderr)
                return 1
            return 0

        return _each_query(args, answer)
    finally:
        col.close()


def add_parser(sub: Any) -> None:
    """The ``search`` subcommand."""
    se = sub.add_parser("search", help="search an index made by `metaembed-rag index`")
    se.add_argument(
        "query", nargs="?", default=None,
        help="the question (or an image file with --image); optional with --interactive",
    )  # fmt: skip
    index_option(se)
    qdrant_options(se)
    se.add_argument("--k", type=int, default=5, help="results to show (default 5)")
    se.add_argument(
        "--budget",
        default=None,
        help="rerank budget 'r_q,r_c', one the model was trained with (default: the model's "
        "largest trained budget, 16,64 for the default model)",
    )
    se.add_argument(
        "--fetch-k",
        type=int,
        default=None,
        help=f"coarse candidates reranked exactly (default {DEFAULT_FETCH_K})",
    )
    se.add_argument(
        "--filter",
        action="append",
        nargs="+",
        metavar="KEY=VALUE",
        help="metadata filter, e.g. --filter type=pdf page=2 (values parsed as JSON "
        'when they are: numbers, true/false, {"$gte": 2})',
    )
    se.add_argument(
        "--hybrid",
        choices=("rrf", "weighted"),
        default=None,
        help="fuse the multi-vector ranking with BM25 over the query text: reciprocal rank "
        "fusion or a weighted sum of min-max normalised scores (see docs/hybrid-search.md)",
    )
    se.add_argument(
        "--hybrid-weight",
        type=float,
        default=None,
        metavar="W",
        help="with --hybrid weighted: the multi-vector share in [0, 1] (default 0.5; 1 = "
        "multi-vector alone, 0 = BM25 alone)",
    )
    se.add_argument(
        "--scorer",
        default=None,
        metavar="NAME|DIR",
        help="scorer of the exact stage: maxsim (default), pooled, or a folder written by "
        "`metaembed-rag train-scorer` (see docs/scorers.md)",
    )
    rerank_options(se, "the search")
    se.add_argument("--image", action="store_true", help="the query is an image file")
    se.add_argument("--json", action="store_true", help="print the results as JSON")
    se.add_argument("--model", help="model folder if the index records none")
    se.add_argument("--device", default=None)
    se.add_argument(
        "--interactive", "-i", action="store_true",
        help="load the model once, then answer one question per line of stdin (quit, exit or "
        "Ctrl-D ends)",
    )  # fmt: skip
    se.add_argument(
        "--server", metavar="URL", default=None,
        help="search through a running `metaembed-rag serve` at URL (e.g. "
        "http://127.0.0.1:8000), whose model is already loaded: no model load here "
        "(default: $METAEMBED_RAG_SERVER if set, else a server on http://127.0.0.1:8000 if "
        "it serves the same index)",
    )  # fmt: skip
    se.add_argument(
        "--no-server", action="store_true",
        help="search here even if a running server serves the index",
    )  # fmt: skip
    se.set_defaults(func=run)
