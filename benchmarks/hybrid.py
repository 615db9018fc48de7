"""nDCG@10 of dense (multi-vector), BM25 and hybrid search on every set of a suite.

For each set: the model's document vectors from the evaluation's cache (the same
``cached_corpus_vectors`` key as ``metaembed-rag eval``, so a suite already evaluated encodes
only its queries), exact MaxSim over the whole corpus at (16,64) and at (1,1), BM25 from the
index's lexical sidecar (:class:`metaembed_rag.index.lexical.LexicalIndex`, the settings of
the ``bm25`` baseline) over the whole corpus, and both fusions of
:mod:`metaembed_rag.index.fusion` as ``MultiVectorIndex.search(hybrid=...)`` runs them: the
union of each signal's top ``--depth`` documents (the default ``fetch_k``, 200), both signals
scored on all of them, fused, ranked. Dense here is exhaustive, i.e. the index's
``mode="exhaustive"`` (two-stage search reaches 0.999 top-10 overlap with it on SciFact).

Usage::

    python benchmarks/hybrid.py --suite benchmarks/zero-shot-suite.txt --json bench-results/hybrid.json

Prints one row per set and the macro average (the table in ``docs/hybrid-search.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed_rag.data import load_beir
from metaembed_rag.evaluation import encode_corpus, ranking_metrics
from metaembed_rag.hub import load_model
from metaembed_rag.index.fusion import fuse
from metaembed_rag.index.hits import stable_topk
from metaembed_rag.index.lexical import BM25_SETTINGS, LexicalIndex
from metaembed_rag.index.params import DEFAULT_FETCH_K, DEFAULT_HYBRID_WEIGHT
from metaembed_rag.scoring import maxsim
from metaembed_rag.suite import dataset_names, read_suite_file
from metaembed_rag.vector_cache import default_cache_dir

logger = logging.getLogger("benchmarks.hybrid")

COLUMNS = ("dense (16,64)", "dense (1,1)", "bm25", "hybrid rrf", "hybrid weighted")


def ranking(scores: np.ndarray, k: int = 1000) -> list[int]:
    """Columns of the ``k`` best scores, ties by column order."""
    cols = np.arange(scores.size)
    return cols[stable_topk(scores.astype(np.float64), cols, k)].tolist()


def fused_ranking(
    dense: np.ndarray, lexical: np.ndarray, depth: int, method: str, weight: float
) -> list[int]:
    """The documents (columns) hybrid search returns, best first, for one query: union of
    each signal's top ``depth`` (BM25: positive scores only), both signals on the union,
    fused (what :func:`metaembed_rag.index.hybrid.hybrid_rows` does on an index)."""
    top_d = ranking(dense, depth)
    pos = np.flatnonzero(lexical > 0)
    top_l = pos[stable_topk(lexical[pos].astype(np.float64), pos, depth)]
    union = np.union1d(top_d, top_l)
    valid = np.ones((1, union.size), dtype=bool)
    fused = fuse(method, dense[union][None].astype(np.float64),  # type: ignore[arg-type]
                 lexical[union][None].astype(np.float64), valid, weight)[0]  # fmt: skip
    return union[stable_topk(fused, union, union.size)].tolist()


def evaluate_set(model: Any, folder: Path, depth: int, weight: float, limit: int | None) -> dict:
    ds = load_beir(folder, "test")
    qids = sorted(ds.qrels)[:limit] if limit else sorted(ds.qrels)
    doc_ids, docs, encode_s = encode_corpus(model, ds, cache_dir=default_cache_dir())
    t0 = time.perf_counter()
    queries = model.encode_queries([ds.queries[q] for q in qids], show_progress_bar=True)
    query_s = time.perf_counter() - t0
    lex = LexicalIndex()
    lex.add(doc_ids, [ds.doc_text(d) for d in doc_ids])
    assert lex.ids == doc_ids
    bm25 = lex.scores([ds.queries[q] for q in qids])
    dense = {b: maxsim(queries, docs, b).numpy() for b in ((16, 64), (1, 1))}
    qrels = {q: ds.qrels[q] for q in qids}

    def figures(rows: list[list[int]]) -> float:
        ranked = {q: [doc_ids[c] for c in r] for q, r in zip(qids, rows, strict=True)}
        return ranking_metrics(ranked, qrels)["ndcg@10"]

    d, n = dense[(16, 64)], range(len(qids))
    row = {
        "dense (16,64)": figures([ranking(d[i]) for i in n]),
        "dense (1,1)": figures([ranking(dense[(1, 1)][i]) for i in n]),
        "bm25": figures([ranking(bm25[i]) for i in n]),
        "hybrid rrf": figures([fused_ranking(d[i], bm25[i], depth, "rrf", weight) for i in n]),
        "hybrid weighted": figures(
            [fused_ranking(d[i], bm25[i], depth, "weighted", weight) for i in n]
        ),
    }
    logger.info("%s: %s", folder.name, {k: round(v, 4) for k, v in row.items()})
    return {"ndcg@10": row, "num_queries": len(qids), "num_docs": len(doc_ids),
            "doc_encode_s": encode_s, "query_encode_s": query_s}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default=str(Path(__file__).with_name("zero-shot-suite.txt")))
    ap.add_argument("--model", default=None, help="model (default: the embedded default)")
    ap.add_argument("--depth", type=int, default=DEFAULT_FETCH_K, help="per-signal depth")
    ap.add_argument("--weight", type=float, default=DEFAULT_HYBRID_WEIGHT,
                    help="multi-vector share of the weighted fusion")  # fmt: skip
    ap.add_argument("--limit-queries", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    folders = read_suite_file(args.suite)
    names = dataset_names(folders)
    per_set = {n: evaluate_set(model, f, args.depth, args.weight, args.limit_queries)
               for n, f in zip(names, folders, strict=True)}  # fmt: skip
    macro = {c: statistics.fmean(r["ndcg@10"][c] for r in per_set.values()) for c in COLUMNS}
    print(f"{'set':<14}" + "".join(f"{c:>17}" for c in COLUMNS))
    for name, res in [*per_set.items(), ("macro", {"ndcg@10": macro})]:
        print(f"{name:<14}" + "".join(f"{res['ndcg@10'][c]:17.4f}" for c in COLUMNS))
    if args.json:
        out = {"datasets": per_set, "macro": macro, "depth": args.depth, "weight": args.weight,
               "model": args.model or "default", "bm25": BM25_SETTINGS,
               "limit_queries": args.limit_queries}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
