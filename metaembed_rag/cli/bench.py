"""``metaembed-rag bench``: list and run the repository's benchmark scripts."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .common import error_line

__all__ = ["add_parser", "run"]

logger = logging.getLogger("metaembed_rag.cli")


def _benchmarks_dir(explicit: str | None) -> Path:
    """The repository's ``benchmarks/`` folder (the scripts are not part of the package)."""
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--dir {explicit}: no such folder.")
        return folder
    candidates = [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.py")):
            return folder
    raise FileNotFoundError(
        "the benchmark scripts live in the repository's benchmarks/ folder, which this "
        "installation does not have: run from a clone (git clone the repository, pip install -e "
        "'.[bench]') or pass --dir PATH/TO/benchmarks."
    )


def _benchmarks(folder: Path) -> dict[str, tuple[Path, str]]:
    import ast

    out = {}
    for script in sorted(folder.glob("*.py")):
        if script.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, UnicodeDecodeError, OSError):
            doc = ""
        out[script.stem] = (script, doc.strip().split("\n", 1)[0])
    return out


def run(args: argparse.Namespace) -> int:
    import os
    import subprocess

    folder = _benchmarks_dir(args.dir)
    scripts = _benchmarks(folder)
    if not args.name:
        print(f"benchmarks in {folder} (run: metaembed-rag bench NAME [script options]):")
        for name, (_, doc) in scripts.items():
            print(f"  {name:20s} {doc}")
        return 0
    names = list(scripts) if args.name == "all" else [args.name]
    for name in names:
        if name not in scripts:
            raise ValueError(
                f"no benchmark {name!r} in {folder}; available: {', '.join(scripts)} (or all)."
            )
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for name in names:
        cmd = [sys.executable, str(scripts[name][0]), *extra]
        print(f"running: {' '.join(cmd)}", file=sys.stderr)
        rc = subprocess.call(cmd, env=env)
        if rc == 2:  # argparse's code for bad options: the script printed its own error line
            print(
                f"benchmark {name} stopped (exit code 2); its options: metaembed-rag bench "
                f"{name} --help",
                file=sys.stderr,
            )
            return rc
        if rc != 0:
            print(error_line(f"benchmark {name} exited with code {rc}"), file=sys.stderr)
            return rc
    return 0


def add_parser(sub: Any) -> None:
    """The ``bench`` subcommand."""
    be = sub.add_parser(
        "bench",
        help="list or run the benchmark scripts of a repository checkout (benchmarks/*.py)",
        description="Runs benchmarks/NAME.py from the repository with this Python; everything "
        "after NAME goes to the script. Without NAME, lists the benchmarks. 'all' runs every "
        "one with its defaults (long).",
    )
    be.add_argument("--dir", help="the benchmarks folder (default: the repository's)")
    be.add_argument("name", nargs="?", help="benchmark to run (omit to list)")
    be.add_argument("args", nargs=argparse.REMAINDER, help="options for the script")
    be.set_defaults(func=run)
