"""Wall time of N questions from the shell: N one-off `metaembed-rag search` commands (each
loads the model) vs one `search --interactive` vs N `search --server` against a running serve.

Indexes ``--docs`` (default examples/sample_docs) with the default model into a temporary
folder, then times each way of asking the same ``--n`` questions (the serve's own start-up,
which loads the model once, is reported apart). Every command runs in a fresh Python process,
as a user's would.

Usage::

    python benchmarks/cli_search.py            # 3 questions
    python benchmarks/cli_search.py --n 5 --json bench-results/cli_search.json
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How far is the Moon?",
    "What is late interaction?",
    "How do plants turn light into sugar?",
    "What are Meta tokens?",
    "What does a retrieval budget choose?",
]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args: str, stdin: str | None = None) -> float:
    """Seconds one `python -m metaembed_rag.cli ...` takes (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "metaembed_rag.cli", *args], input=stdin, text=True,
                   check=True, capture_output=True, env=ENV)  # fmt: skip
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    from metaembed_rag.cli.common import OneLineArgumentParser

    parser = OneLineArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docs", default=str(ROOT / "examples" / "sample_docs"))
    parser.add_argument("--n", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    questions = QUESTIONS[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        index = str(Path(tmp) / "index")
        _cli("index", args.docs, "--index", index, "--no-progress")
        one_off = [
            _cli("search", q, "--index", index, "--k", "3", "--no-server") for q in questions
        ]
        interactive = _cli("search", "-i", "--index", index, "--k", "3", "--no-server",
                           stdin="\n".join(questions) + "\n")  # fmt: skip
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "metaembed_rag.cli", "serve", "--index", index, "--port",
             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        try:
            while True:
                try:
                    with urllib.request.urlopen(url + "/api/info", timeout=5):
                        break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > 600:
                        raise SystemExit("error: the server did not start") from None
                    time.sleep(0.2)
            serve_start = time.perf_counter() - t0
            served = [_cli("search", q, "--server", url, "--k", "3") for q in questions]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = {
        "questions": len(questions),
        "one_off_s": round(sum(one_off), 2),
        "interactive_s": round(interactive, 2),
        "server_s": round(sum(served), 2),
        "serve_start_s": round(serve_start, 2),
        "load": round(os.getloadavg()[0], 2),
    }
    print(f"{len(questions)} questions, wall time of the commands (load average {out['load']}):")
    print(f"  {len(questions)} one-off `search` commands:    {out['one_off_s']:6.1f} s")
    print(f"  one `search --interactive`:         {out['interactive_s']:6.1f} s")
    print(f"  {len(questions)} `search --server` commands:   {out['server_s']:6.1f} s"
          f"  (+ serve start-up {out['serve_start_s']:.1f} s, once)")  # fmt: skip
    print(f"Command: python benchmarks/cli_search.py {' '.join(sys.argv[1:])}".rstrip())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
