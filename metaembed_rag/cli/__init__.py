"""The ``metaembed-rag`` command line: one module per command (each has ``add_parser(sub)``
and ``run(args)``); this module builds the parser and runs a command with one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import bench, demo, evaluate, indexing, info, search, serve, train, train_scorer
from .common import OneLineArgumentParser, error_line

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
    parser = OneLineArgumentParser(
        prog="metaembed-rag",
        description="MetaEmbed multi-vector retrieval: Meta tokens, budgeted MaxSim, two-stage search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():
        _trust_options(command_parser)
    return parser


#: Errors a user can fix (bad paths, values, files, missing extras): ``error:`` and exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, OSError, ImportError, KeyError)


def _trust_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command: what a model folder, index or collection may never decide."""
    group = parser.add_argument_group("code from models")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run custom Python code shipped with a model's backbone (never on by a saved "
        "config alone; only for models you trust)",
    )
    group.add_argument(
        "--allow-package",
        action="append",
        default=[],
        metavar="MODULE",
        help="allow a model's saved 'package:MODULE' backbone to import MODULE (repeatable; "
        "the packaged default backbone is always allowed)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure is one ``error: ...`` line on stderr, never a traceback
    (``-v`` logs the traceback of an unexpected one): exit code 2 for errors, 130 for Ctrl-C;
    commands return 1 for "ran, but found nothing / some input was skipped"."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from ..hub import set_trust

    set_trust(trust_remote_code=args.trust_remote_code, allow_packages=args.allow_package)
    if args.command != "bench" and not args.verbose:
        _quiet_dependencies()
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(error_line(message), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: still one line, traceback on -v
        if args.verbose:
            logging.getLogger("metaembed_rag.cli").exception("%s failed", args.command)
        print(
            error_line(
                f"{args.command} failed unexpectedly: {type(exc).__name__}: {exc} (run with -v "
                "for the traceback)"
            ),
            file=sys.stderr,
        )
        return 2
