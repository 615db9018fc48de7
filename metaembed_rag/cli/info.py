"""``metaembed-rag info``: what an index holds, or a model's configuration."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from .common import DEFAULT_INDEX, INFO_MAX_FILES, load_model

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def _human_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    if args.model:
        model = load_model(args.model)
        cfg = model.config.to_dict()
        cfg["fingerprint"] = model.fingerprint()
        if args.json:
            print(json.dumps(cfg, indent=2, sort_keys=True))
            return 0
        print(f"Model {args.model}: {model!r}")
        for key in ("backbone", "backbone_type", "max_length", "projection_dim",
                    "append_both_sides", "has_lora", "fingerprint"):  # fmt: skip
            print(f"  {key:18s} {cfg.get(key)}")
        return 0

    from ..collection import Collection

    col = Collection.open(args.index, load_model=False)
    try:
        info = col.info()
        files = col.files
    finally:
        col.close()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    types = ", ".join(f"{k} {v}" for k, v in info["file_types"].items()) or "none"
    unit = info.get("chunk_unit") or "words"
    print(f"Index {info['folder']}")
    rows = [
        ("model", f"{info['model']} (fingerprint {info['model_fingerprint']})"),
        ("holds", f"{info['documents']} chunks from {info['files']} files ({types})"),
        ("vectors", f"{info['vectors_per_document']} per chunk, dim {info['dim']}, "
                    f"{info['dtype']} ({_human_size(info['bytes_per_document'])} per chunk)"),
        ("budgets", " ".join(f"({b})" for b in info["budgets"])),
        ("coarse stage", f"{info['coarse_vector']} vector, {info['coarse_kind']} FAISS index"),
        ("chunking", f"{info['chunk_size']} {unit}, {info['chunk_overlap']} shared"),
        ("on disk", _human_size(info["bytes_on_disk"])),
        ("created", str(info["created"])),
    ]  # fmt: skip
    for name, value in rows:
        print(f"  {name:13s} {value}")
    if files:
        entries = sorted(files.values(), key=lambda e: str(e.get("source")))
        shown = entries[:INFO_MAX_FILES]
        width = min(60, max(len(str(e.get("source"))) for e in shown))
        print(f"Files ({len(entries)}):")
        for e in shown:
            n = len(e.get("chunks", []))
            print(f"  {str(e.get('source')):{width}s}  {str(e.get('type')):8s} "
                  f"{n:5d} chunk{'s' if n != 1 else ' '}  {_human_size(e.get('size', 0)):>9s}")  # fmt: skip
        if len(entries) > len(shown):
            print(
                f"  ... and {len(entries) - len(shown)} more (all in {info['folder']}/files.json)"
            )
    return 0


def add_parser(sub: Any) -> None:
    """The ``info`` subcommand."""
    info = sub.add_parser(
        "info", help="what an index holds (--index) or a model's configuration (--model)"
    )
    which = info.add_mutually_exclusive_group()
    which.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="DIR",
        help=f"an index folder made by `metaembed-rag index` (default: {DEFAULT_INDEX})",
    )
    which.add_argument("--model", help="a MetaEmbed model folder or name (instead of an index)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    info.set_defaults(func=run)
