"""Recipe selection on held-out training pairs: nDCG@10 per source and budget on a dev split,
beside the backbone's own mean-pooled cosine on the same split.

Each source's dev queries retrieve among that source's dev positives (exact MaxSim at every
trained budget) and, in the *hard* variant, also among a seeded sample of that source's
training positives (``distractors``: same domain and style, never relevant to a dev query,
since :func:`~metaembed_rag.training.examples.split_dev` keeps every dev positive out of
training). The easy variant puts ~40-300 candidates before each query and cannot separate
recipes from the backbone; the hard one is what recipes are chosen on. The figures choose
between recipes; quality is reported on the zero-shot suite (``metaembed-rag eval``), never on
this split. ``scripts/dev_eval.py`` runs it for saved models.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import load_pairs
from ..evaluation import top_rankings
from ..metrics import evaluate
from ..model import MetaEmbedModel
from ..scoring import maxsim
from .examples import pair_examples, split_dev
from .trainer import TrainExample

__all__ = [
    "distractors_of", "evaluate_dev", "read_recipe", "recipe_dev_splits", "recipe_pairs_split",
    "source_collections",
]  # fmt: skip


def recipe_pairs_split(
    recipe: Mapping[str, Any], root: Path
) -> tuple[list[TrainExample], list[TrainExample]]:
    """(train, dev) of a recipe's ``pairs`` folders (paths relative to ``root``), sampled and
    split exactly as :func:`~metaembed_rag.training.recipe.run_recipe` does
    (``pairs_max_per_source``, ``dev_fraction``, ``training.seed``).

    Raises:
        ValueError: the recipe holds out no dev split.
    """
    seed = int(recipe.get("training", {}).get("seed", 0))
    fraction = float(recipe.get("dev_fraction", 0.0))
    if not fraction:
        raise ValueError("the recipe holds out no dev split (dev_fraction = 0)")
    examples: list[TrainExample] = []
    for folder in recipe.get("pairs", []):
        path = (Path(root) / folder).resolve()
        name = path.name if path.is_dir() else path.parent.name
        examples += pair_examples(load_pairs(path), name, recipe.get("pairs_max_per_source"), seed)
    return split_dev(examples, fraction, seed)


def recipe_dev_splits(
    recipe: Mapping[str, Any], root: Path, distractors: int
) -> tuple[list[TrainExample], dict[str, list[tuple[str, str]]]]:
    """``(dev, hard)``: a recipe's dev split (:func:`recipe_pairs_split`) and the hard
    variant's extra candidates, ``distractors`` training positives per source
    (:func:`distractors_of`, seeded by ``training.seed``).

    Raises:
        ValueError: the recipe holds out no dev split.
    """
    train, dev = recipe_pairs_split(recipe, root)
    seed = int(recipe.get("training", {}).get("seed", 0))
    return dev, distractors_of(train, distractors, seed)


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe TOML file as a dict."""
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))


def distractors_of(
    train: Sequence[TrainExample], per_source: int, seed: int = 0
) -> dict[str, list[tuple[str, str]]]:
    """``{source: [(id, text)]}``: a seeded sample of at most ``per_source`` distinct text
    training positives per source (the hard dev split's extra candidates)."""
    by_source: dict[str, dict[str, str]] = {}
    for ex in train:
        if isinstance(ex.positive, str):
            by_source.setdefault(ex.source, {}).setdefault(ex.positive_id, ex.positive)
    out: dict[str, list[tuple[str, str]]] = {}
    for source, docs in sorted(by_source.items()):
        rows = sorted(docs.items())
        if len(rows) > per_source:
            rows = random.Random(f"{seed}:{source}").sample(rows, per_source)
        out[source] = rows
    return out


def source_collections(
    dev: Sequence[TrainExample],
    distractors: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]]:
    """Per source of a dev split (sorted by name): its text queries ``{id: text}``, its
    candidate documents ``{id: text}`` (the dev positives, then ``distractors``' documents
    not among them) and the judgments ``{query id: {positive id: 1}}``. Non-text pairs are
    left out; a source may hold no query."""
    by_source: dict[str, list[TrainExample]] = {}
    for ex in dev:
        by_source.setdefault(ex.source, []).append(ex)
    out = {}
    for name, exs in sorted(by_source.items()):
        queries: dict[str, str] = {}
        docs: dict[str, str] = {}
        qrels: dict[str, dict[str, int]] = {}
        for ex in exs:
            if not isinstance(ex.query, str) or not isinstance(ex.positive, str):
                continue  # text pairs only
            queries.setdefault(ex.query_id, ex.query)
            docs.setdefault(ex.positive_id, ex.positive)
            qrels.setdefault(ex.query_id, {})[ex.positive_id] = 1
        for doc_id, text in (distractors or {}).get(name, ()):
            docs.setdefault(doc_id, text)
        out[name] = (queries, docs, qrels)
    return out


def evaluate_dev(
    model: MetaEmbedModel,
    dev: Sequence[TrainExample],
    *,
    batch_size: int = 32,
    mean_pool: bool = True,
    distractors: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """nDCG@10 of ``model`` on a dev split, per source and macro-averaged over sources.

    ``distractors`` (:func:`distractors_of`) adds each source's non-relevant candidates (the
    hard variant); ids that are also dev positives are ignored.

    Returns:
        ``{"sources": {name: {"budgets": {"r_q,r_c": ndcg}, "mean-pool": ndcg, "queries": n,
        "docs": n}}, "macro": {"budgets": {...}, "mean-pool": ndcg}}`` (``mean-pool`` only with
        ``mean_pool``: the backbone alone, see :class:`metaembed_rag.baselines.MeanPoolEncoder`).
    """
    encoder = None
    if mean_pool:
        from ..baselines import MeanPoolEncoder

        encoder = MeanPoolEncoder.from_backbone(
            model.config.backbone, device=model.device, trust_remote_code=False
        )
    sources: dict[str, Any] = {}
    for name, (queries, docs, qrels) in source_collections(dev, distractors).items():
        if len(docs) < 2:
            continue
        qids, doc_ids = sorted(queries), sorted(docs)
        q = model.encode_queries([queries[i] for i in qids], batch_size=batch_size)
        d = model.encode_documents([docs[i] for i in doc_ids], batch_size=batch_size)
        row: dict[str, Any] = {"budgets": {}, "queries": len(qids), "docs": len(doc_ids)}
        for budget in model.budgets:
            ranked = top_rankings(maxsim(q, d, budget), qids, doc_ids, k=10)
            row["budgets"][str(budget)] = evaluate(ranked, qrels, ks=(10,))["ndcg@10"]
        if encoder is not None:
            length = model.config.max_length
            qv = encoder.encode([queries[i] for i in qids], batch_size=batch_size)
            dv = encoder.encode(
                [docs[i] for i in doc_ids], batch_size=batch_size, max_length=length
            )
            row["mean-pool"] = evaluate(
                top_rankings(qv @ dv.T, qids, doc_ids, k=10), qrels, ks=(10,)
            )["ndcg@10"]
        sources[name] = row
    if not sources:
        raise ValueError("the dev split holds no text source with two or more documents")
    macro: dict[str, Any] = {
        "budgets": {
            str(b): sum(r["budgets"][str(b)] for r in sources.values()) / len(sources)
            for b in model.budgets
        }
    }
    if encoder is not None:
        macro["mean-pool"] = sum(r["mean-pool"] for r in sources.values()) / len(sources)
    return {"sources": sources, "macro": macro}
