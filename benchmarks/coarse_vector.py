"""Which coarse vector keeps two-stage search equal to exhaustive MaxSim, on real collections.

For each suite folder: the model's document vectors (through the eval's cache, so a set the
suite evaluation already encoded is not encoded again), the first ``--queries`` test queries,
and nDCG@10 of exhaustive MaxSim and of two-stage search (coarse FAISS stage + exact rerank)
with ``coarse_vector="first"`` (the (1,1) vector) and ``"mean"`` (renormalised mean of the K
vectors), at ``(1,1)`` and ``(16,64)``, for each ``--fetch-ks``.

    python benchmarks/coarse_vector.py --data ../shared/data/scifact ../shared/data/cacm
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from metaembed_rag import MetaEmbedModel
from metaembed_rag.data import load_beir
from metaembed_rag.evaluation import encode_corpus
from metaembed_rag.index import MultiVectorIndex, SearchParams
from metaembed_rag.metrics import evaluate
from metaembed_rag.vector_cache import default_cache_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", type=Path, required=True, help="BEIR-style folders")
    p.add_argument("--model", default="metaembed-minilm-l6")
    p.add_argument("--queries", type=int, default=300, help="first N test queries per set")
    p.add_argument("--fetch-ks", type=int, nargs="+", default=[100, 200])
    p.add_argument("--budgets", nargs="+", default=["1,1", "16,64"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = MetaEmbedModel.from_pretrained(args.model)
    rows = []
    for folder in args.data:
        ds = load_beir(folder)
        ids, docs, _ = encode_corpus(model, ds, cache_dir=default_cache_dir())
        qids = sorted(ds.qrels)[: args.queries]
        q = model.encode_queries([ds.queries[i] for i in qids])
        for coarse in ("first", "mean"):
            index = MultiVectorIndex.for_model(model, coarse_vector=coarse)
            index.add(ids, docs)
            for budget in args.budgets:
                runs = [("exhaustive", max(args.fetch_ks))]
                runs += [("two_stage", fk) for fk in args.fetch_ks]
                for mode, fetch_k in runs:
                    params = SearchParams.of(10, fetch_k=fetch_k, mode=mode, rerank_budget=budget)
                    hits = index.search(q, params=params)
                    rankings = {qid: [h.id for h in hs] for qid, hs in zip(qids, hits, strict=True)}
                    ndcg = evaluate(rankings, {qid: ds.qrels[qid] for qid in qids})["ndcg@10"]
                    row = {"set": folder.name, "coarse_vector": coarse, "budget": budget,
                           "mode": mode, "fetch_k": fetch_k if mode == "two_stage" else None,
                           "ndcg@10": round(ndcg, 4)}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
