"""``metaembed-rag eval``: retrieval quality and latency per budget on BEIR folders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .common import load_model

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


_EVAL_HEADER = f"{'':>10} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'MAP':>7}"


def _eval_rows(res: dict, latency: bool = True) -> None:
    """Print a result's budget rows (with latency) and baseline rows (quality only)."""
    print(_EVAL_HEADER + (f" {'query ms':>9} {'score ms':>9}" if latency else ""))
    rows = [(f"({n})", r) for n, r in res["budgets"].items()]
    rows += list(res.get("baselines", {}).items())
    for name, row in rows:
        line = (
            f"{name:>10} {row['ndcg@10']:8.4f} {row['recall@10']:7.4f} {row['recall@100']:7.4f} "
            f"{row['mrr@10']:7.4f} {row['map']:7.4f}"
        )
        if latency and "score_ms" in row:
            line += f" {row['query_ms']:9.2f} {row['score_ms']:9.2f}"
        print(line)


def _eval_folders(args: argparse.Namespace) -> list[Path]:
    """The BEIR folders of ``--data`` or ``--suite``, each checked to exist."""
    from ..data import DataError
    from ..suite import read_suite_file

    if args.suite:
        return read_suite_file(args.suite)
    folders = [Path(d) for d in args.data]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(
                f"--data {folder}: not a folder; pass a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
            )
    return folders


def run(args: argparse.Namespace) -> int:
    from ..baselines import BM25_SETTINGS, MeanPoolEncoder, parse_baselines
    from ..budget import parse_budgets
    from ..data import load_beir
    from ..evaluation import plot_budgets
    from ..hub import resolve_model_folder
    from ..metrics import require_backend
    from ..model import DEFAULT_MODEL
    from ..suite import dataset_names, evaluate_dataset, macro_average, plot_suite
    from ..vector_cache import default_cache_dir

    require_backend()  # before the model loads and the corpora are encoded
    baselines = parse_baselines(args.baselines) if args.baselines else []
    if args.limit_docs is not None and args.limit_docs < 1:
        raise ValueError(f"--limit-docs must be a positive number, got {args.limit_docs}")
    folders = _eval_folders(args)
    names = dataset_names(folders)
    # every data error before the model loads
    datasets = [load_beir(f, args.split) for f in folders]
    model = load_model(args.model, args.device)
    budgets = parse_budgets(args.budgets, model.budgets)
    cache_dir = None if args.no_cache else Path(args.cache_dir or default_cache_dir())
    mean_pool = None
    if "mean-pool" in baselines:
        mean_pool = MeanPoolEncoder.from_backbone(
            model.config.backbone,
            model_folder=resolve_model_folder(args.model or DEFAULT_MODEL),
            device=model.device,
            dtype=model.dtype,
        )
    model_name = args.model or "default"
    per_set: dict[str, dict] = {}
    for name, folder, ds in zip(names, folders, datasets, strict=True):
        qids = sorted(ds.qrels)[: args.limit_queries] if args.limit_queries else None
        if args.limit_docs:
            ds = ds.sample_docs(args.limit_docs, qids, args.docs_seed)
        res = evaluate_dataset(
            model,
            ds,
            budgets,
            baselines=baselines,
            mean_pool=mean_pool,
            batch_size=args.batch_size,
            max_length=args.max_length,
            cache_dir=cache_dir,
            query_ids=qids,
        )
        res["data"] = str(folder)
        per_set[name] = res
        if ds.empty_docs:  # left out of the corpus: counted and named (JSON and stderr)
            res["empty_docs"] = {"count": len(ds.empty_docs), "judged": ds.empty_judged,
                                 "ids": ds.empty_docs[:20]}  # fmt: skip
            shown = ", ".join(ds.empty_docs[:5]) + (" ..." if len(ds.empty_docs) > 5 else "")
            print(
                f"skipped {len(ds.empty_docs)} empty document(s) in {folder / 'corpus.jsonl'} "
                f"({ds.empty_judged} of them judged relevant, unretrievable): {shown}",
                file=sys.stderr,
            )
        print(
            f"{'' if len(folders) == 1 and not args.suite else '== ' + name + ': '}"
            f"model: {model_name}  data: {folder} ({args.split}, {res['num_queries']} queries, {res['num_docs']} docs)"
        )
        if res["docs_per_s"]:
            print(
                f"document encoding: {res['doc_encode_s']:.1f} s ({res['docs_per_s']:.1f} docs/s)"
            )
        _eval_rows(res)
    settings: dict[str, object] = {}
    if "bm25" in baselines:
        settings["bm25"] = BM25_SETTINGS
    if mean_pool is not None:
        length = args.max_length or model.config.max_length
        settings["mean-pool"] = {"backbone": mean_pool.reference, "max_length": length}
    if len(folders) == 1 and not args.suite:
        out = per_set[names[0]]
        out.update({"model": model_name, "data": str(args.data[0]), "split": args.split})
        if args.limit_docs:
            out.update(limit_docs=args.limit_docs, docs_seed=args.docs_seed)
        if settings:
            out["baseline_settings"] = settings
        title = f"{model_name} on {folders[0].name}"
    else:
        macro = macro_average(per_set)
        print(f"== macro average over {len(names)} sets ({', '.join(names)})")
        _eval_rows(macro, latency=False)
        out = {"datasets": per_set, "macro": macro, "model": model_name, "split": args.split,
               "suite": args.suite, "limit_queries": args.limit_queries,
               "limit_docs": args.limit_docs, "docs_seed": args.docs_seed}  # fmt: skip
        if settings:
            out["baseline_settings"] = settings
        title = f"{model_name} on {len(names)} sets"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        if "datasets" in out:
            plot_suite(out, args.plot, title=title)
        else:
            plot_budgets(out, args.plot, title=title)
    return 0


def add_parser(sub: Any) -> None:
    """The ``eval`` subcommand."""
    ev = sub.add_parser(
        "eval", help="retrieval quality and latency per budget on BEIR folders (and baselines)"
    )
    where = ev.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--data",
        nargs="+",
        metavar="DIR",
        help="BEIR folder(s) (corpus.jsonl, queries.jsonl, qrels/); several: a suite",
    )
    where.add_argument(
        "--suite",
        metavar="FILE",
        help="text file listing BEIR folders, one a line ('#' comments; relative to the file)",
    )
    ev.add_argument("--split", default="test", help="qrels split (default: test)")
    ev.add_argument("--model", help="model folder or name (default: the embedded default model)")
    ev.add_argument("--budgets", default="all", help="'all' or a list like '1,1 8,16'")
    ev.add_argument(
        "--baselines",
        default=None,
        help="also evaluate baselines on the same data: bm25, mean-pool (comma-separated)",
    )
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-length", type=int, default=None, help="document token limit")
    ev.add_argument(
        "--limit-queries", type=int, default=None, help="evaluate the first N queries of each set"
    )
    ev.add_argument(
        "--limit-docs",
        type=int,
        default=None,
        metavar="N",
        help="cut each corpus to N documents: every document judged for the evaluated queries "
        "plus a seeded sample of the others (--docs-seed); vectors come from the whole "
        "corpus's cache when it exists",
    )
    ev.add_argument(
        "--docs-seed", type=int, default=0, help="seed of the --limit-docs sample (default 0)"
    )
    ev.add_argument(
        "--cache-dir",
        default=None,
        help="document-vector cache (default: $XDG_CACHE_HOME/metaembed-rag/eval or "
        "~/.cache/metaembed-rag/eval)",
    )
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ev.add_argument("--json", help="write the figures to this JSON file")
    ev.add_argument(
        "--plot", help="write a PNG: quality and latency by budget (one set) or nDCG@10 per set"
    )
    ev.add_argument("--device", default=None)
    ev.set_defaults(func=run)
