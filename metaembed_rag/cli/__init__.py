"""The ``metaembed-rag`` command line: one module per command (each has ``add_parser(sub)``
and ``run(args)``); this module builds the parser and runs a command with one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import bench, demo, evaluate, indexing, info, search, serve, train, train_scorer

__all__ = ["build_parser", "main"]

#: The commands, in the order ``--help`` lists them.
COMMANDS = (demo, info, indexing, search, bench, evaluate, train, train_scorer, serve)


def _quiet_dependencies() -> None:
    """Keep the command's output readable: no weight-loading progress bars from
    ``transformers`` and no deprecation warnings raised inside dependencies (the CLI only;
    the library leaves both alone)."""
    from ..model import ignore_peft_deprecation

    ignore_peft_deprecation()
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaembed-rag",
        description="MetaEmbed multi-vector retrieval: Meta tokens, budgeted MaxSim, two-stage search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command != "bench" and not args.verbose:
        _quiet_dependencies()
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError, OSError, ImportError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
