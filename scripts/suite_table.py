"""Markdown tables of a suite evaluation (``metaembed-rag eval --suite ... --json F``).

    python scripts/suite_table.py F.json [--metric ndcg@10] [--against BASE.json]

Prints one row per data set and the macro average: the model's figure at every budget, then
the baselines'. With ``--against``, a second table gives the difference of each budget to
the same budget of another run (e.g. before / after domain adaptation). Then checks the
default model's targets (docs/default-model.md) and prints met / missed for each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _rows(res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [*res["datasets"].items(), ("**macro**", res["macro"])]


def table(res: dict[str, Any], metric: str) -> str:
    budgets = list(res["macro"]["budgets"])
    bases = list(res["macro"].get("baselines", {}))
    head = ["set", *(f"({b})" for b in budgets), *bases]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, row in _rows(res):
        cells = [f"{row['budgets'][b][metric]:.4f}" for b in budgets]
        cells += [f"{row['baselines'][b][metric]:.4f}" for b in bases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(res: dict[str, Any], base: dict[str, Any], metric: str) -> str:
    budgets = list(res["macro"]["budgets"])
    head = ["set", *(f"({b})" for b in budgets)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(budgets) + "|"]
    other = dict(_rows(base))
    for name, row in _rows(res):
        if name not in other:
            continue
        cells = [
            f"{row['budgets'][b][metric] - other[name]['budgets'][b][metric]:+.4f}" for b in budgets
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(res: dict[str, Any], metric: str) -> list[str]:
    """The default model's suite targets (issue: a general-purpose default model)."""
    macro = res["macro"]
    budgets = list(macro["budgets"])
    curve = [macro["budgets"][b][metric] for b in budgets]
    top, first = curve[-1], curve[0]
    bases = macro.get("baselines", {})
    out = []
    if bases:
        best = max(v[metric] for v in bases.values())
        out.append(
            f"macro ({budgets[-1]}) {top:.4f} >= max(baselines) {best:.4f} + 0.02: "
            f"{'met' if top >= best + 0.02 else 'missed'} ({top - best:+.4f})"
        )
    if "mean-pool" in bases:
        worst = min(
            (row["budgets"][budgets[-1]][metric] - row["baselines"]["mean-pool"][metric], name)
            for name, row in res["datasets"].items()
        )
        out.append(
            f"every set ({budgets[-1]}) >= mean-pool - 0.01: "
            f"{'met' if worst[0] >= -0.01 else 'missed'} (worst {worst[1]} {worst[0]:+.4f})"
        )
    out.append(
        f"macro ({budgets[-1]}) - ({budgets[0]}) >= +0.015: "
        f"{'met' if top - first >= 0.015 else 'missed'} ({top - first:+.4f})"
    )
    drop = max((max(curve[:i]) - curve[i] for i in range(1, len(curve))), default=0.0)
    out.append(
        f"macro non-decreasing within 0.003: {'met' if drop <= 0.003 else 'missed'} "
        f"(largest drop below a smaller budget {drop:.4f})"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--against", type=Path, default=None)
    args = parser.parse_args()
    res = json.loads(args.json.read_text())
    if "datasets" not in res:
        raise SystemExit(f"error: {args.json} holds one data set, not a suite evaluation")
    print(table(res, args.metric))
    if args.against is not None:
        print()
        print(diff_table(res, json.loads(args.against.read_text()), args.metric))
    print()
    for line in targets(res, args.metric):
        print("- " + line)


if __name__ == "__main__":
    main()
