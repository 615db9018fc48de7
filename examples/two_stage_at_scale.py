"""Two-stage search at scale: real SciFact abstracts hidden among many distractor documents,
FAISS coarse recall + exact MaxSim rerank vs exhaustive MaxSim (latency and top-10 agreement).

Distractors are random unit multi-vectors (encoding 100k real documents takes hours on a small
CPU); they stress the index the same way for latency, and real documents must still come first.

Run: python examples/two_stage_at_scale.py --docs 300 --distractors 50000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metaembed_rag import MetaEmbedModel, MultiVectorIndex
from metaembed_rag.data import load_beir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--docs", type=int, default=300, help="real documents to encode")
    parser.add_argument("--distractors", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--fetch-k", type=int, default=200)
    parser.add_argument("--budget", default="16,64")
    args = parser.parse_args()

    model = MetaEmbedModel.from_pretrained("metaembed-minilm-l6")
    ds = load_beir(args.data, "test")
    qids = sorted(ds.qrels)[: args.queries]
    doc_ids = sorted({d for q in qids for d in ds.qrels[q]} | set(sorted(ds.corpus)[: args.docs]))
    index = MultiVectorIndex.for_model(model)
    index.add(doc_ids, model.encode_documents([ds.doc_text(d) for d in doc_ids]))
    gen = torch.Generator().manual_seed(0)
    for start in range(0, args.distractors, 10_000):  # in blocks to bound memory
        n = min(10_000, args.distractors - start)
        noise = F.normalize(torch.randn(n, 64, model.dim, generator=gen), dim=-1)
        index.add([f"distractor-{start + i}" for i in range(n)], noise)
    print(
        f"index: {index.num_rows:,} documents, {index.bytes_per_document:,} bytes each, "
        f"coarse {index.coarse_kind}"
    )

    queries = model.encode_queries([ds.queries[q] for q in qids])
    two, exh, agree = [], [], []
    for i in range(len(qids)):
        t0 = time.perf_counter()
        fast = index.search(queries[i : i + 1], k=10, fetch_k=args.fetch_k,
                            rerank_budget=args.budget)[0]  # fmt: skip
        t1 = time.perf_counter()
        exact = index.search(queries[i : i + 1], k=10, rerank_budget=args.budget,
                             mode="exhaustive")[0]  # fmt: skip
        t2 = time.perf_counter()
        two.append((t1 - t0) * 1e3)
        exh.append((t2 - t1) * 1e3)
        agree.append(len({h.id for h in fast} & {h.id for h in exact}) / 10)
    hits = sum(1 for i, q in enumerate(qids) if any(h.id in ds.qrels[q] for h in
               index.search(queries[i : i + 1], k=10, rerank_budget=args.budget)[0]))  # fmt: skip
    print(
        f"two-stage (fetch_k={args.fetch_k}, budget {args.budget}): "
        f"median {statistics.median(two):.1f} ms per query"
    )
    print(f"exhaustive MaxSim:                  median {statistics.median(exh):.1f} ms per query")
    print(f"top-10 agreement two-stage vs exhaustive: {statistics.mean(agree):.3f}")
    print(f"queries with a relevant abstract in the top 10: {hits}/{len(qids)}")


if __name__ == "__main__":
    main()
