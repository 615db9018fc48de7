"""Document encoding throughput: a MetaEmbed model vs sentence-transformers on the same backbone.

Both encode the same SciFact documents at the same max length (tokens), in one process,
alternating runs; the figure is documents per second (median of --repeats runs).

    python benchmarks/encode_throughput.py --model metaembed-minilm-l6 --docs 512 --max-length 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="MetaEmbed model (default: the embedded default)"
    )
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/scifact")
    )
    parser.add_argument("--docs", type=int, default=512, help="number of documents")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.data import load_beir
    from metaembed_rag.hub import resolve_backbone_path
    from metaembed_rag.model import DEFAULT_MODEL

    model = MetaEmbedModel.from_pretrained(args.model or DEFAULT_MODEL, device="cpu")
    backbone = resolve_backbone_path(model.config.backbone)
    st = SentenceTransformer(backbone, device="cpu")
    st.max_seq_length = args.max_length
    ds = load_beir(args.data, "test")
    texts = [ds.doc_text(d) for d in sorted(ds.corpus)[: args.docs]]

    def run_st() -> float:
        t0 = time.perf_counter()
        st.encode(texts, batch_size=args.batch_size, convert_to_tensor=True)
        return time.perf_counter() - t0

    def run_me() -> float:
        t0 = time.perf_counter()
        model.encode_documents(texts, batch_size=args.batch_size, max_length=args.max_length)
        return time.perf_counter() - t0

    run_st(), run_me()  # warm-up
    st_times, me_times = [], []
    for _ in range(args.repeats):
        st_times.append(run_st())
        me_times.append(run_me())
    st_rate = len(texts) / statistics.median(st_times)
    me_rate = len(texts) / statistics.median(me_times)
    meta = model.num_meta_tokens("document")
    with torch.no_grad():  # as encoding runs: an untrained (zero) map leaves the Meta tokens out
        skipped = model._meta_states_unused()
    print(
        f"{len(texts)} SciFact documents, max_length={args.max_length}, batch={args.batch_size}, "
        f"threads={torch.get_num_threads()}"
    )
    print(f"sentence-transformers ({Path(backbone).name}): {st_rate:8.1f} docs/s")
    how = "Meta tokens left out: zero map" if skipped else f"+{meta} Meta tokens"
    print(f"MetaEmbed ({how}): {me_rate:8.1f} docs/s")
    print(f"ratio: {me_rate / st_rate:.3f} (target >= 0.70)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "st_docs_per_s": st_rate,
                    "metaembed_docs_per_s": me_rate,
                    "ratio": me_rate / st_rate,
                    "docs": len(texts),
                    "max_length": args.max_length,
                    "batch_size": args.batch_size,
                    "meta_tokens": meta,
                    "meta_tokens_left_out": skipped,
                    "threads": torch.get_num_threads(),
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
