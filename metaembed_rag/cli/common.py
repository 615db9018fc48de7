"""What several commands share: the default index folder, the --index option, model loading."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = [
    "DEFAULT_INDEX",
    "INFO_MAX_FILES",
    "OneLineArgumentParser",
    "error_line",
    "index_option",
    "load_model",
    "qdrant_options",
    "rerank_options",
    "search_hint",
    "storage_of",
]

#: Where index / search / info / serve keep the index without --index (under the current folder).
DEFAULT_INDEX = ".metaembed/index"

#: Files listed by `info`.
INFO_MAX_FILES = 50


def error_line(message: object) -> str:
    """``message`` as the one line a command prints for an error: ``error: ...`` with any line
    breaks of the message folded into spaces."""
    return "error: " + " ".join(str(message).split())


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error: ...`` line (naming the
    command's ``--help``) and exit code 2, instead of the usage block plus ``prog: error:``.
    Subparsers made by ``add_subparsers`` are of the same class."""

    def error(self, message: str) -> NoReturn:
        print(f"{error_line(message)} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def index_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="DIR",
        help=f"the index folder{extra} (default: {DEFAULT_INDEX} in the current folder)",
    )


def qdrant_options(parser: argparse.ArgumentParser) -> None:
    """``--qdrant URL_OR_PATH --collection NAME``: the index in a Qdrant collection."""
    parser.add_argument(
        "--qdrant",
        metavar="URL_OR_PATH",
        default=None,
        help="keep the index in Qdrant: a server URL (http://host:6333; API key from "
        "QDRANT_API_KEY) or a local-mode folder (needs the qdrant extra); the --index folder "
        "then keeps only the collection config and file list",
    )
    parser.add_argument(
        "--collection", metavar="NAME", default=None, help="the Qdrant collection (with --qdrant)"
    )


def storage_of(args: argparse.Namespace) -> dict | None:
    """The Qdrant storage entry the options name (``None``: the index folder)."""
    qdrant, name = getattr(args, "qdrant", None), getattr(args, "collection", None)
    if qdrant is None and name is None:
        return None
    from ..collection.storage import qdrant_storage

    return qdrant_storage(qdrant or "", name or "")


def search_hint(folder: str) -> str:
    flag = "" if folder == DEFAULT_INDEX else f" --index {folder}"
    return f'Search it with: metaembed-rag search "your question"{flag}'


def load_model(name: str | None, device: str | None = None):
    from ..hub import load_model

    return load_model(name or None, device)


def rerank_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--rerank mllm:MODEL``, ``--rerank-candidates`` and ``--rerank-fusion`` (``search`` and
    ``serve``); ``what`` says whose top hits are reranked."""
    parser.add_argument(
        "--rerank",
        default=None,
        metavar="mllm:MODEL",
        help=f"rerank the top --rerank-candidates hits of {what} with a generative model's "
        "P(True) (MM-Embed; a transformers checkpoint, see docs/gpu-vlm.md)",
    )
    parser.add_argument(
        "--rerank-candidates", type=int, default=20, help="hits reranked (default 20)"
    )
    parser.add_argument(
        "--rerank-fusion", type=float, default=0.0,
        help="weight of the first-stage score fused with P(True), 0-1 (default 0)",
    )  # fmt: skip
