"""Choose ``anchor_skip_title`` on titled training pairs (never the zero-shot suite).

    python scripts/title_study.py [--model metaembed-minilm-l6] \
        [--sources conditionalqa policyqa] [--units passages sentences] [--json titles.json]

The recipe's dev split has no titles (its pairs are bare texts), so it cannot tell how a model
should read a document's title. Two of the 15 training sources know their documents' titles:
``policyqa`` (a ``title`` field: the website whose privacy policy a passage is from) and
``conditionalqa`` (the gov.uk page of each evidence snippet, in ``url``; its title is the
page's address, ``masters-loan`` -> ``Masters loan``). Both repeat one title over several
candidates, as a web page's chunks do. For each source and unit, every distinct query of the
source ranks every distinct candidate:

* ``passages``: the pairs' positives (a query's relevant candidates: its positives);
* ``sentences``: the positives cut into sentences of 3 words or more, every one carrying its
  passage's title (relevant: every sentence of a query's positives), the shape of
  answer-sentence selection.

and the model is evaluated at every trained budget (nDCG@10) reading the candidates three ways:

* ``untitled``: the text alone;
* ``in segments``: ``"title text"`` as one string (the title is part of the segments);
* ``skip title``: ``{"title", "text"}`` with ``anchor_skip_title`` on (the same words; the
  title only in slot 0 and the whole-input mean).

The model is untrained on these pairs when its recipe has ``steps = 0`` (the default);
otherwise the sources' training queries are part of its training data. Prints one table per
source and unit and the macro over them; about 10 minutes on a 2-core CPU for the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT.parent / "shared" / "data" / "pairs"
SOURCES = ("conditionalqa", "policyqa")
logger = logging.getLogger("title_study")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def title_of(source: str, row: dict[str, Any]) -> str:
    """A pair's document title: ``title``, or the last part of ``url`` as words."""
    if row.get("title"):
        return str(row["title"]).strip()
    if row.get("url"):
        slug = str(row["url"]).rstrip("/").rsplit("/", 1)[-1]
        return slug.replace("-", " ").replace("_", " ").strip().capitalize()
    raise ValueError(f"{source}: a pair without 'title' or 'url'; this source has no titles")


def collection(
    source: str, rows: list[dict[str, Any]], unit: str
) -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, dict[str, int]]]:
    """(queries, candidates as (title, text), qrels) of one source, deduplicated."""
    queries: dict[str, str] = {}
    docs: dict[tuple[str, str], str] = {}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    qid_of: dict[str, str] = {}
    for row in rows:
        qid = qid_of.setdefault(row["query"], f"q{len(qid_of)}")
        queries[qid] = row["query"]
        title = title_of(source, row)
        parts = [row["positive"]] if unit == "passages" else _SENTENCE.split(row["positive"])
        for part in parts:
            part = part.strip()
            if unit == "sentences" and len(part.split()) < 3:
                continue
            did = docs.setdefault((title, part), f"d{len(docs)}")
            qrels[qid][did] = 1
    candidates = {did: key for key, did in docs.items()}
    return queries, candidates, {q: r for q, r in qrels.items() if r}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="metaembed-minilm-l6")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--units", nargs="+", choices=("passages", "sentences"),
                    default=["passages", "sentences"])  # fmt: skip
    ap.add_argument("--pairs", type=Path, default=PAIRS, help="the shared pairs folder")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.evaluation import top_rankings
    from metaembed_rag.metrics import evaluate
    from metaembed_rag.scoring import maxsim

    model = MetaEmbedModel.from_pretrained(args.model)
    model.eval()
    if model.config.anchor != "segments":
        print(f"error: {args.model}: anchor_skip_title needs anchor='segments'", file=sys.stderr)
        return 2
    if not model.adapter.marks_titles:
        print(f"error: the {model.adapter.family} adapter marks no titles", file=sys.stderr)
        return 2
    budgets = model.budgets
    results: dict[str, dict[str, list[float]]] = {}
    for source in args.sources:
        path = args.pairs / source / "pairs.jsonl"
        if not path.is_file():
            print(f"error: {path}: not found (pass --pairs)", file=sys.stderr)
            return 2
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for unit in args.units:
            queries, docs, qrels = collection(source, rows, unit)
            qids, dids = sorted(qrels), sorted(docs)
            logger.info("%s %s: %d queries, %d candidates, %d titles", source, unit, len(qids),
                        len(dids), len({t for t, _ in docs.values()}))  # fmt: skip
            q = model.encode_queries([queries[i] for i in qids], batch_size=args.batch_size)
            reads: dict[str, tuple[bool, list[Any]]] = {
                "untitled": (False, [docs[i][1] for i in dids]),
                "in segments": (False, [f"{docs[i][0]} {docs[i][1]}" for i in dids]),
                "skip title": (True, [{"title": docs[i][0], "text": docs[i][1]} for i in dids]),
            }
            row: dict[str, list[float]] = {}
            saved = model.config.anchor_skip_title
            try:
                for name, (skip, items) in reads.items():
                    model.config.anchor_skip_title = skip
                    d = model.encode_documents(items, batch_size=args.batch_size)
                    row[name] = [
                        evaluate(top_rankings(maxsim(q, d, b), qids, dids, k=10), qrels,
                                 ks=(10,))["ndcg@10"]
                        for b in budgets
                    ]  # fmt: skip
            finally:
                model.config.anchor_skip_title = saved
            results[f"{source} {unit}"] = row
    head = " ".join(f"{str(b):>8s}" for b in budgets)
    macro = {name: [sum(r[name][i] for r in results.values()) / len(results)
                    for i in range(len(budgets))] for name in next(iter(results.values()))}  # fmt: skip
    for label, table in [*results.items(), ("macro", macro)]:
        print(f"\n{label}\n{'':14s} {head}")
        for name, cells in table.items():
            print(f"{name:14s} " + " ".join(f"{v:8.4f}" for v in cells))
    if args.json is not None:
        payload = {"model": args.model, "budgets": [str(b) for b in budgets],
                   "sets": results, "macro": macro}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
