"""Budget sweep: retrieval quality and latency of the default model at every trained budget, on a
SciFact subset, with a plot (what `metaembed-rag eval` does on the full corpus).

Run: python examples/budget_sweep.py --queries 100 --docs 600 --plot budget_sweep.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaembed_rag import MetaEmbedModel
from metaembed_rag.data import BeirDataset, load_beir
from metaembed_rag.evaluation import evaluate_beir, plot_budgets

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def subset(ds: BeirDataset, n_queries: int, n_docs: int) -> BeirDataset:
    """The first ``n_queries`` test queries (sorted ids), their relevant documents and the first
    other documents by sorted id up to ``n_docs`` in all."""
    qids = sorted(ds.qrels)[:n_queries]
    keep = {d for q in qids for d in ds.qrels[q]}
    for doc_id in sorted(ds.corpus):
        if len(keep) >= n_docs:
            break
        keep.add(doc_id)
    return BeirDataset(
        corpus={d: ds.corpus[d] for d in sorted(keep)},
        queries={q: ds.queries[q] for q in qids},
        qrels={q: ds.qrels[q] for q in qids},
        folder=ds.folder,
        split=ds.split,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DATA), help="a BEIR folder (default: SciFact)")
    parser.add_argument("--model", default="metaembed-minilm-l6")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--plot", default="budget_sweep.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    model = MetaEmbedModel.from_pretrained(args.model)
    ds = subset(load_beir(args.data, "test"), args.queries, args.docs)
    res = evaluate_beir(model, ds, model.budgets, latency_queries=20)
    print(f"{len(ds.queries)} queries, {len(ds.corpus)} documents, exact MaxSim per budget")
    print(f"{'budget':>8} {'nDCG@10':>8} {'R@100':>7} {'query ms':>9} {'score ms':>9}")
    for name, row in res["budgets"].items():
        print(
            f"{'(' + name + ')':>8} {row['ndcg@10']:8.4f} {row['recall@100']:7.4f} "
            f"{row['query_ms']:9.2f} {row['score_ms']:9.3f}"
        )
    plot_budgets(res, args.plot, title=f"{args.model}, SciFact subset")
    print(f"plot written to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
