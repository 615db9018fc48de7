"""Evaluation over several BEIR folders in one run: per set, the model at each budget and the
baselines on the same queries, corpus and qrels; then the macro average over the sets."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .baselines import MeanPoolEncoder, bm25_rankings
from .budget import BudgetLike
from .data import BeirDataset, DataError
from .evaluation import (
    QUALITY_METRICS,
    cached_corpus_vectors,
    evaluate_beir,
    ranking_metrics,
    top_rankings,
)
from .model import MetaEmbedModel

__all__ = [
    "read_suite_file",
    "dataset_names",
    "evaluate_baselines",
    "evaluate_dataset",
    "macro_average",
    "plot_suite",
]

logger = logging.getLogger(__name__)


def read_suite_file(path: str | Path) -> list[Path]:
    """The folders a suite file lists: one a line, ``#`` starts a comment, blank lines are
    skipped, relative paths are resolved against the file's folder.

    Raises:
        DataError: the file is missing or lists nothing, or a line names no folder (the
            message gives the file, the line and the fix).
    """
    suite = Path(path)
    if not suite.is_file():
        raise DataError(f"{suite}: suite file not found; pass a text file listing BEIR folders")
    folders: list[Path] = []
    for lineno, line in enumerate(suite.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        folder = Path(entry).expanduser()
        if not folder.is_absolute():
            folder = suite.parent / folder
        if not folder.is_dir():
            raise DataError(
                f"{suite}:{lineno}: {entry!r} is not a folder ({folder} does not exist); fix "
                "the path (relative paths are read from the suite file's folder) or remove the line"
            )
        folders.append(folder)
    if not folders:
        raise DataError(f"{suite}: lists no folders; write one BEIR folder a line")
    return folders


def dataset_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name, which keys its results.

    Raises:
        DataError: two folders share a name (rename one, or list each folder once).
    """
    names: dict[str, Path] = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in names:
            raise DataError(
                f"two data sets are named {name!r} ({names[name]} and {folder}); results are "
                "keyed by folder name: list each folder once, or rename one"
            )
        names[name] = Path(folder)
    return list(names)


def _mean_pool_rankings(
    enc: MeanPoolEncoder,
    ds: BeirDataset,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    max_length: int,
    batch_size: int,
    cache_dir: str | Path | None,
) -> dict[str, list[str]]:
    """Cosine rankings of the mean-pool baseline; document vectors cached by the backbone's
    identity, the corpus file's identity and the max length."""
    docs, _ = cached_corpus_vectors(
        ds,
        doc_ids,
        cache_dir,
        "meanpool",
        f"{enc.identity}|{max_length}",
        lambda texts: enc.encode(texts, batch_size=batch_size, max_length=max_length),
    )
    queries = enc.encode(
        [ds.queries[q] for q in query_ids], batch_size=batch_size, max_length=max_length
    )
    return top_rankings(queries @ docs.T, query_ids, doc_ids)


def evaluate_baselines(
    ds: BeirDataset,
    query_ids: Sequence[str],
    baselines: Sequence[str],
    *,
    mean_pool: MeanPoolEncoder | None = None,
    max_length: int = 256,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """The baselines' figures on ``ds`` (the same queries, documents and qrels as the model).

    Args:
        ds: the data set.
        query_ids: the queries to rank (those of the model's evaluation).
        baselines: names from :data:`metaembed_rag.baselines.BASELINES`.
        mean_pool: the backbone encoder (needed for ``"mean-pool"``).
        max_length: token limit for the mean-pool encoder (queries and documents).
        batch_size: mean-pool encoding batch size.
        cache_dir: where mean-pool document vectors are cached (``None``: not cached).

    Returns:
        ``{name: {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map"}}``.
    """
    doc_ids = sorted(ds.corpus)
    qrels = {q: ds.qrels[q] for q in query_ids}
    out: dict[str, dict[str, float]] = {}
    for name in baselines:
        if name == "bm25":
            ranked = bm25_rankings(
                doc_ids, [ds.doc_text(d) for d in doc_ids], [ds.queries[q] for q in query_ids]
            )
            rankings = dict(zip(query_ids, ranked, strict=True))
        elif name == "mean-pool":
            if mean_pool is None:
                raise ValueError("the mean-pool baseline needs a MeanPoolEncoder")
            rankings = _mean_pool_rankings(
                mean_pool, ds, query_ids, doc_ids, max_length, batch_size, cache_dir
            )
        else:
            raise ValueError(f"unknown baseline {name!r}")
        out[name] = ranking_metrics(rankings, qrels)
        logger.info("%s on %s: nDCG@10 %.4f", name, ds.folder, out[name]["ndcg@10"])
    return out


def evaluate_dataset(
    model: MetaEmbedModel,
    ds: BeirDataset,
    budgets: Sequence[BudgetLike],
    *,
    baselines: Sequence[str] = (),
    mean_pool: MeanPoolEncoder | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
    query_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`~metaembed_rag.evaluation.evaluate_beir`, plus ``"baselines"`` when asked for.

    The mean-pool baseline reads ``max_length`` tokens (the model's ``max_length`` when
    ``None``), as the model does for documents.
    """
    qids = sorted(ds.qrels) if query_ids is None else list(query_ids)
    res = evaluate_beir(
        model,
        ds,
        budgets,
        batch_size=batch_size,
        max_length=max_length,
        cache_dir=cache_dir,
        query_ids=qids,
    )
    if baselines:
        length = model.config.max_length if max_length is None else max_length
        res["baselines"] = evaluate_baselines(
            ds,
            qids,
            baselines,
            mean_pool=mean_pool,
            max_length=length,
            batch_size=batch_size,
            cache_dir=cache_dir,
        )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return res


def _mean_rows(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {m: statistics.fmean(r[m] for r in rows) for m in QUALITY_METRICS}


def macro_average(per_set: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over the sets of each quality figure, per budget and per baseline
    (a budget or baseline missing from a set is left out of the average)."""
    sets = list(per_set.values())
    out: dict[str, Any] = {"budgets": {}, "baselines": {}}
    for section in ("budgets", "baselines"):
        names = list(dict.fromkeys(n for s in sets for n in s.get(section, {})))
        for name in names:
            if all(name in s.get(section, {}) for s in sets):
                out[section][name] = _mean_rows([s[section][name] for s in sets])
    if not out["baselines"]:
        del out["baselines"]
    return out


def plot_suite(results: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """PNG of nDCG@10 against budget for each set and the macro average, the baselines' macro
    nDCG@10 as horizontal dashed lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'metaembed-rag[plot]'") from exc
    macro = results["macro"]
    names = list(macro["budgets"])
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for set_name, res in results["datasets"].items():
        ax.plot(x, [res["budgets"][n]["ndcg@10"] for n in names], "o-", lw=1, ms=3,
                alpha=0.6, label=set_name)  # fmt: skip
    ax.plot(x, [macro["budgets"][n]["ndcg@10"] for n in names], "o-", lw=2.5, color="black",
            label="macro")  # fmt: skip
    styles = {"bm25": "tab:red", "mean-pool": "tab:green"}
    for base, row in macro.get("baselines", {}).items():
        ax.axhline(row["ndcg@10"], ls="--", lw=1.5, color=styles.get(base, "gray"),
                   label=f"{base} (macro)")  # fmt: skip
    ax.set_xticks(x, [f"({n})" for n in names])
    ax.set_xlabel("budget (r_q, r_c)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title or "nDCG@10 by budget")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
