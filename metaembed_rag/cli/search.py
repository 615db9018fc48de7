"""``metaembed-rag search``: search a collection from the shell."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..index.params import DEFAULT_FETCH_K
from .common import index_option

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


def run(args: argparse.Namespace) -> int:
    from ..budget import resolve_budget
    from ..collection import Collection
    from ..index import SearchParams

    if not args.query.strip():
        raise ValueError(
            'the query is empty; pass a question in quotes, e.g. metaembed-rag search "What is '
            'a retrieval budget?"'
        )
    filt = _parse_filters(args.filter)
    try:  # flag mistakes fail before anything loads
        params = SearchParams.of(args.k, fetch_k=args.fetch_k, filter=filt, scorer=args.scorer)
    except ValueError as exc:
        raise ValueError(f"search flags (--k / --fetch-k / --filter / --scorer): {exc}") from exc
    reranker = None
    if args.rerank:  # load (and fail) before the index opens
        from ..rerank import load_reranker, rerank_results

        reranker = load_reranker(
            args.rerank, device=args.device, trust_remote_code=args.trust_remote_code,
            fusion_weight=args.rerank_fusion,
        )  # fmt: skip
    query: object = args.query
    if args.image:
        query = Path(args.query).expanduser()
        if not query.is_file():  # type: ignore[union-attr]
            raise FileNotFoundError(f"{args.query}: no such image file.")
    col = Collection.open(args.index, model=args.model, device=args.device, load_model=False)
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
        t0 = time.perf_counter()
        pool = max(params.k, args.rerank_candidates) if args.rerank else params.k
        results = col.search(
            query, k=pool, budget=budget, fetch_k=max(params.fetch_k, pool), filter=filt,
            scorer=params.scorer,
        )  # fmt: skip
        if reranker is not None:
            results = rerank_results(reranker, query, results, top_n=params.k)
        search_ms = (time.perf_counter() - t0) * 1000
        total = len(col)
    finally:
        col.close()
    if args.json:
        out = {
            "query": args.query, "budget": str(budget), "k": params.k, "fetch_k": params.fetch_k,
            "filter": filt, "results": [r.to_dict() for r in results],
        }  # fmt: skip
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        shown = args.query if args.image else f'"{args.query}"'
        print(
            f"Top {len(results)} of {total} chunks for {shown} at budget ({budget}): "
            f"{search_ms:.0f} ms (model loaded in {load_s:.1f} s)."
        )
        if reranker is not None:
            print(f'Score = P("True") from {args.rerank} over the top {pool} (docs/gpu-vlm.md).')
        elif params.scorer is not None:
            print(f"Score = the {params.scorer.name} scorer (docs/scorers.md; higher is better).")
        else:
            print(
                f"Score = MaxSim: for each of {budget.r_q} query vectors its best dot product "
                f"with the chunk's first {budget.r_c} vectors, summed (-{budget.r_q} to "
                f"{budget.r_q}; higher is better)."
            )
        for r in results:
            print(f"\n{r.rank + 1:3d}. {r.score:7.3f}  {_result_label(r)}")
            if r.text:
                snippet = " ".join(r.text.split())
                print(f"     {snippet[:220]}{'...' if len(snippet) > 220 else ''}")
            if r.image is not None:
                print(f"     image: {r.image}")
    if not results:
        print("error: no document matches the filter", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any) -> None:
    """The ``search`` subcommand."""
    se = sub.add_parser("search", help="search an index made by `metaembed-rag index`")
    se.add_argument("query", help="the question (or an image file with --image)")
    index_option(se)
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
        "--scorer",
        default=None,
        metavar="NAME|DIR",
        help="scorer of the exact stage: maxsim (default), pooled, or a folder written by "
        "`metaembed-rag train-scorer` (see docs/scorers.md)",
    )
    se.add_argument(
        "--rerank",
        default=None,
        metavar="mllm:MODEL",
        help="rerank the top --rerank-candidates with a generative model's P(True) "
        "(MM-Embed; a transformers checkpoint, see docs/gpu-vlm.md)",
    )
    se.add_argument("--rerank-candidates", type=int, default=20, help="hits reranked (default 20)")
    se.add_argument(
        "--rerank-fusion", type=float, default=0.0,
        help="weight of the first-stage score fused with P(True), 0-1 (default 0)",
    )  # fmt: skip
    se.add_argument(
        "--trust-remote-code", action="store_true",
        help="let the --rerank checkpoint run its own code (off by default)",
    )  # fmt: skip
    se.add_argument("--image", action="store_true", help="the query is an image file")
    se.add_argument("--json", action="store_true", help="print the results as JSON")
    se.add_argument("--model", help="model folder if the index records none")
    se.add_argument("--device", default=None)
    se.set_defaults(func=run)
