"""``metaembed-rag index``: index files and folders into a collection (resumable)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .common import index_option, qdrant_options, search_hint, storage_of

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def _remove_created(folder: Path, first_new: Path | None) -> None:
    """Undo a failed run's new index: the folders it created, or the contents of the empty
    folder it was given."""
    import shutil

    if first_new is not None:
        shutil.rmtree(first_new, ignore_errors=True)
    elif folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _print_problems(report: object) -> None:
    for name, reason in getattr(report, "skipped", []):
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for where, reason in getattr(report, "bad_records", []):
        print(f"skipped record {where}: {reason}", file=sys.stderr)


def _json_report(action: str, report: Any, info: dict[str, Any], load_s: float) -> dict[str, Any]:
    """What ``index --json`` prints: ``{"action": "created" | "updated", "report": the
    IngestReport's fields + "summary", "index": Collection.info(), "model_load_s"}``
    (``model_load_s`` is null for an update, which loads the model only when needed)."""
    from dataclasses import asdict

    fields = asdict(report)
    fields["skipped"] = [{"path": str(p), "reason": str(r)} for p, r in report.skipped]
    fields["bad_records"] = [{"where": str(w), "reason": str(r)} for w, r in report.bad_records]
    fields["summary"] = report.summary()
    return {
        "action": action.lower(),
        "report": fields,
        "index": info,
        "model_load_s": round(load_s, 3) if action == "Created" else None,
    }


def run(args: argparse.Namespace) -> int:
    from ..chunking import check_options
    from ..collection import Collection
    from ..collection.folder import CONFIG_FILE, _model_reference, creatable
    from ..collection.folder import _load_model as load_collection_model
    from ..ingest import SUPPORTED_SUFFIXES, discover_files

    # Everything that can be checked without the model is, before anything is loaded or written.
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise FileNotFoundError(f"{p}: no such file or folder; check the path.")
    check_options(args.chunk_size, args.chunk_overlap)
    storage = storage_of(args)
    folder = Path(args.index).expanduser()
    exists = (folder / CONFIG_FILE).is_file()
    if not exists and not creatable(folder):  # a half-created folder of ours is finished
        raise FileExistsError(
            f"{folder} exists and is not an empty folder or an index; choose a new or empty "
            "folder with --index."
        )
    files, ignored = discover_files(args.paths, exclude=folder)
    if not files and not exists:
        names = ", ".join(p.name for p in ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        found = f" (only {len(ignored)} unsupported: {names})" if ignored else ""
        print(
            f"error: no supported files in {' '.join(args.paths)}{found}; supported: "
            f"{' '.join(sorted(SUPPORTED_SUFFIXES))}",
            file=sys.stderr,
        )
        return 1

    first_new: Path | None = None
    if not exists and not folder.exists():
        first_new = folder  # the outermost folder this run creates (removed if it fails)
        while not first_new.parent.exists():
            first_new = first_new.parent
    action = "Updated" if exists else "Created"
    col = None
    t0 = time.perf_counter()
    try:
        if exists:  # the model loads only if a file needs encoding
            col = Collection.open(folder, model=args.model, device=args.device, load_model=False,
                                  storage=storage)  # fmt: skip
            for flag, wanted, stored in (
                ("--storage", args.storage, col.index.dtype),
                ("--stored-vectors", args.stored_vectors, col.index.stored_vectors),
            ):
                if wanted is not None and wanted != stored:
                    raise ValueError(
                        f"{folder} was created with {flag} {stored}; the storage is chosen "
                        f"when an index is created: leave {flag} out, or index into a new "
                        "folder."
                    )
        else:
            model = load_collection_model(args.model, args.device)
            if args.pdf_images and not model.supports_images:
                raise ValueError(
                    f"--pdf-images needs a vision-language model (Qwen2-VL, Idefics3, ...); "
                    f"{args.model or 'the default model'} reads text only: leave --pdf-images "
                    "out or pass --model with a VLM MetaEmbed folder."
                )
            col = Collection.create(
                folder, model, model_name=_model_reference(args.model),
                chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, storage=storage,
                **({"dtype": args.storage} if args.storage else {}),
                **({"stored_vectors": args.stored_vectors} if args.stored_vectors else {}),
            )  # fmt: skip
        load_s = time.perf_counter() - t0
        if args.ray is not None:  # encode on a Ray cluster; this process reads and writes
            from ..distributed import RayEncoder

            ref = col.config.get("model")
            if ref is None:
                raise ValueError("--ray needs the collection's model by name or folder (--model).")
            col.encoder = RayEncoder(ref, address=None if args.ray == "local" else args.ray,
                                     num_workers=args.ray_workers)  # fmt: skip
        report = col.add_paths(
            args.paths,
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
            pdf_page_images=args.pdf_images,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            prune=not args.no_prune,
        )
    except KeyboardInterrupt:
        if col is None:  # nothing indexed yet
            if not exists:
                _remove_created(folder, first_new)
            print("interrupted: nothing was indexed", file=sys.stderr)
            return 130
        col.close()
        print(
            f"interrupted: files finished so far are saved in {folder}; run the same command "
            "again to index the rest.",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        if col is not None:
            drop = getattr(col.index.backend, "drop", None)
            if not exists and storage is not None and drop is not None:
                drop()  # the Qdrant collection this failed run created
            col.close()
        if not exists:
            _remove_created(folder, first_new)
        raise
    info = col.info()
    col.close()
    _print_problems(report)
    if report.files_indexed == 0 and report.files_removed == 0:
        if action == "Created":
            _remove_created(folder, first_new)
        why = (
            f"none of the {len(report.skipped)} file(s) could be indexed (reasons above)"
            if report.skipped
            else f"no supported files in {' '.join(args.paths)}"
        )
        print(f"error: {why}" + ("; no index was created" if action == "Created" else ""),
              file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(json.dumps(_json_report(action, report, info, load_s), indent=2))
    else:
        print(report.summary())
        loaded = f" (loaded in {load_s:.1f} s)" if action == "Created" else ""
        print(
            f"{action} index {folder}: {info['documents']} chunks from {info['files']} file(s), "
            f"model {info['model']}{loaded}."
        )
        print(search_hint(args.index))
    problems = [
        f"{len(report.skipped)} file(s)" if report.skipped else "",
        f"{len(report.bad_records)} JSONL record(s)" if report.bad_records else "",
    ]
    if any(problems) and args.strict:
        what = " and ".join(p for p in problems if p)
        print(f"error: {what} could not be indexed (--strict)", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any) -> None:
    """The ``index`` subcommand."""
    ix = sub.add_parser(
        "index",
        help="index files and folders (.txt .md .html .jsonl .pdf, images) into an index folder",
        description="Index documents into DIR (created if needed). Re-running adds only new or "
        "changed files and removes the chunks of files deleted from the indexed folders. Exit "
        "code 0 when the files were indexed or already up to date (unreadable ones are skipped "
        "and listed); 1 when no file could be indexed (or any was skipped, with --strict); 2 on "
        "errors.",
    )
    ix.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    index_option(ix)
    ix.add_argument(
        "--model",
        help="model name or folder for a new index (default: the "
        "embedded default model); an existing index uses the model it was built with",
    )
    ix.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="tokens per chunk, in the model's tokenizer (default: what the model reads whole "
        "minus 8: 246 for the default model; words, default 180, for a model without a "
        "tokenizer); saved as the index's setting",
    )
    ix.add_argument(
        "--chunk-overlap",
        type=int,
        default=None,
        help="tokens (or words) shared by consecutive chunks (default 40, or 30 words); saved",
    )
    ix.add_argument(
        "--storage",
        default=None,
        help="how a new index stores chunk vectors: bfloat16 (default), float16, float32, int8, "
        "residual4, residual2, residual1, tiered (compressed; see docs/storage.md); chosen once, "
        "when "
        "the index is created",
    )
    ix.add_argument(
        "--stored-vectors",
        type=int,
        default=None,
        metavar="R_C",
        help="a new index keeps only the first R_C vectors per chunk (searches with a larger "
        "r_c are refused)",
    )
    ix.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    ix.add_argument(
        "--pdf-images",
        action="store_true",
        help="also index each PDF page as an image (vision-language models only)",
    )
    ix.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    ix.add_argument(
        "--no-prune",
        action="store_true",
        help="keep the chunks of files deleted from the indexed folders",
    )
    qdrant_options(ix)
    ix.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="encode on a Ray cluster (needs the ray extra): --ray alone starts a local one, "
        "--ray auto / ray://HEAD:10001 joins one; one model per worker, a GPU each if present",
    )
    ix.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray workers (default: the cluster's GPUs, else its CPUs)",
    )
    ix.add_argument("--no-progress", action="store_true", help="no progress bars")
    ix.add_argument(
        "--json", action="store_true",
        help="print the report and the index's figures as JSON instead of the summary",
    )  # fmt: skip
    ix.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    ix.set_defaults(func=run)
