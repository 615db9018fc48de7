"""What several commands share: the default index folder, the --index option, model loading."""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_INDEX", "INFO_MAX_FILES", "index_option", "load_model", "search_hint"]

#: Where index / search / info / serve keep the index without --index (under the current folder).
DEFAULT_INDEX = ".metaembed/index"

#: Files listed by `info`.
INFO_MAX_FILES = 50


def index_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="DIR",
        help=f"the index folder{extra} (default: {DEFAULT_INDEX} in the current folder)",
    )


def search_hint(folder: str) -> str:
    flag = "" if folder == DEFAULT_INDEX else f" --index {folder}"
    return f'Search it with: metaembed-rag search "your question"{flag}'


def load_model(name: str | None, device: str | None = None):
    from ..hub import load_model

    return load_model(name or None, device)
