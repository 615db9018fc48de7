"""nDCG@10 of each scorer of the exact stage, at each budget, on every set of a suite.

For each set the packaged default model's document vectors come from the eval cache
(``metaembed_rag.evaluation.encode_corpus``: a cache hit after ``metaembed-rag eval``), the
queries are encoded (the first ``--limit-queries`` judged queries, sorted by id), the documents
go into a float32 :class:`~metaembed_rag.index.MultiVectorIndex`, and each scorer is measured on
its own, apart from the coarse stage: a first-stage scorer (MaxSim, pooled, bilinear) scores
every document (``search_rows(..., mode="exhaustive", rerank_budget=b, scorer=s)``); a
reranker-only scorer (cross-attention) reorders exact MaxSim's top ``--rerank-pool`` (100) at the
same budget through ``Scorer.rerank``. nDCG@10 on the top 10.

Usage::

    python benchmarks/scorers.py --suite benchmarks/zero-shot-suite.txt \\
        --scorer maxsim --scorer pooled --scorer DIR_BILINEAR --scorer DIR_CROSS \\
        --json bench-results/scorers.json

The markdown table it prints is the one in ``docs/scorers.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from metaembed_rag.data import load_beir
from metaembed_rag.evaluation import encode_corpus
from metaembed_rag.hub import load_model
from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.metrics import evaluate
from metaembed_rag.scorers import load_scorer, resolve_scorer
from metaembed_rag.suite import dataset_names, read_suite_file
from metaembed_rag.vector_cache import cached_vectors, default_cache_dir, file_identity

logger = logging.getLogger("benchmarks.scorers")


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.model)
    fp = model.fingerprint()
    scorers = {}
    for spec in args.scorer:
        s = resolve_scorer(spec)
        if s.fingerprint is not None:
            s = load_scorer(spec, fingerprint=fp)  # refuses a scorer of another model
        scorers[spec if s.name in ("maxsim", "pooled") else s.name] = s
    budgets = [model.resolve_budget(b) for b in (args.budgets or model.budgets)]
    folders = read_suite_file(args.suite)
    out: dict[str, Any] = {"sets": {}, "fingerprint": fp, "rerank_pool": args.rerank_pool,
                           "limit_queries": args.limit_queries}  # fmt: skip
    for name, folder in zip(dataset_names(folders), folders, strict=True):
        ds = load_beir(folder)
        qids = sorted(ds.qrels)[: args.limit_queries]
        doc_ids, docs, _ = encode_corpus(model, ds, cache_dir=default_cache_dir())
        queries, _, _ = cached_vectors(  # the same queries for every run of this script
            default_cache_dir(), "scorer-queries",
            f"{fp}|{file_identity(folder / 'queries.jsonl')}|{args.limit_queries}",
            lambda ds=ds, qids=qids: model.encode_queries(
                [ds.queries[q] for q in qids], batch_size=64
            ),
        )  # fmt: skip
        index = MultiVectorIndex.for_model(model, dtype="float32")
        index.add(doc_ids, docs, None, None)
        del docs
        qrels = {q: ds.qrels[q] for q in qids}
        rows: dict[str, dict[str, float]] = {}
        for sname, scorer in scorers.items():
            for b in budgets:
                t0 = time.perf_counter()
                if scorer.first_stage:  # every document scored exactly by the scorer
                    _, found = index.search_rows(
                        queries, 10, mode="exhaustive", rerank_budget=b, scorer=scorer
                    )
                else:  # a reranker of exact MaxSim's top --rerank-pool at the same budget
                    _, pool = index.search_rows(
                        queries, args.rerank_pool, mode="exhaustive", rerank_budget=b
                    )
                    scores = scorer.rerank(index.backend, queries, pool, b)
                    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
                    found = np.take_along_axis(pool, top, axis=1)
                ms = (time.perf_counter() - t0) * 1000 / len(qids)
                ids = index.ids_of(found)
                rankings = dict(zip(qids, ids, strict=True))
                ndcg = evaluate(rankings, qrels, ks=(10,))["ndcg@10"]
                rows.setdefault(sname, {})[str(b)] = ndcg
                rows[sname][f"{b} ms"] = ms
                logger.warning("%s %s (%s): nDCG@10 %.4f, %.2f ms/query", name, sname, b, ndcg, ms)
        out["sets"][name] = {"queries": len(qids), "docs": len(doc_ids), "ndcg@10": rows}
        index.close()
    macro: dict[str, dict[str, float]] = {}
    for sname in scorers:
        for b in budgets:
            vals = [s["ndcg@10"][sname][str(b)] for s in out["sets"].values()]
            macro.setdefault(sname, {})[str(b)] = statistics.mean(vals)
    out["macro"] = macro
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per (scorer, budget), one column per set, then the macro average."""
    sets = list(result["sets"])
    lines = [
        "| scorer | budget | " + " | ".join(sets) + " | macro |",
        "|---|---|" + "---:|" * (len(sets) + 1),
    ]
    for sname, per in result["macro"].items():
        for b, m in per.items():
            cells = [f"{result['sets'][s]['ndcg@10'][sname][b]:.4f}" for s in sets]
            lines.append(f"| {sname} | ({b}) | " + " | ".join(cells) + f" | {m:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--suite", default=str(Path(__file__).with_name("zero-shot-suite.txt")))
    p.add_argument("--model", default=None, help="model (default: the packaged default)")
    p.add_argument(
        "--scorer",
        action="append",
        required=True,
        help="maxsim, pooled or a folder from train-scorer (repeat)",
    )
    p.add_argument(
        "--budgets", nargs="*", default=None, help="budgets 'r_q,r_c' (default: all trained)"
    )
    p.add_argument(
        "--rerank-pool",
        type=int,
        default=100,
        help="exact MaxSim candidates a reranker-only scorer reorders",
    )
    p.add_argument("--limit-queries", type=int, default=1000, help="first N judged queries per set")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
