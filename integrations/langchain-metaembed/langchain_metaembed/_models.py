"""Loading ``MetaEmbedModel`` once per process and parsing budgets given as pydantic fields."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from metaembed_rag import Budget, MetaEmbedModel
from metaembed_rag.hub import BUILTIN_MODELS

logger = logging.getLogger(__name__)

_CACHE: dict[tuple[str, str | None, str | None], MetaEmbedModel] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(
    name: str, device: str | None, dtype: str | None
) -> tuple[str, str | None, str | None]:
    """Key a model by its folder when it is local (so a built-in name and its folder share one
    load), otherwise by the name as given."""
    path = Path(name).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
    elif name in BUILTIN_MODELS:
        folder = str(Path(BUILTIN_MODELS[name]).resolve())
    else:
        folder = name
    return folder, device, dtype


def load_model(
    name: str, device: str | None, dtype: str | None, *, cache: bool = True
) -> MetaEmbedModel:
    """``MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)``.

    With ``cache=True`` the loaded model is kept in a process-wide table keyed by (model
    folder, device, dtype) and shared by every ``MetaEmbedEmbeddings`` asking for the same
    thing: the model is only used for inference, so sharing it is safe and saves a load
    (seconds) and a copy of the weights per instance.
    """
    if not cache:
        return MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)
    key = _cache_key(name, device, dtype)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            logger.info("loading MetaEmbed model %s (device=%s, dtype=%s)", name, device, dtype)
            model = MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)
            _CACHE[key] = model
        return model


def clear_model_cache() -> None:
    """Forget every model loaded with ``cache=True`` (the next instance loads again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def parse_budget(value: Any, what: str) -> Budget | None:
    """``None`` stays ``None``; a ``Budget``, ``(r_q, r_c)`` pair or ``"r_q,r_c"`` string
    becomes a :class:`~metaembed_rag.Budget`.

    Raises:
        ValueError: the value is not a budget (the message names ``what`` and the forms).
    """
    if value is None:
        return None
    try:
        return Budget.parse(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what}={value!r} is not a budget: write it as (r_q, r_c), e.g. (8, 16), or "
            f"'8,16'. ({exc})"
        ) from exc


def check_budget(value: Any, valid: Iterable[Budget], what: str, owner: str) -> Budget | None:
    """:func:`parse_budget`, then check the budget is one of ``valid`` (``None`` stays ``None``).

    Args:
        value: the budget as given (``None``, ``Budget``, ``(r_q, r_c)`` or ``"r_q,r_c"``).
        valid: the trained budgets it must be one of.
        what: the field or argument name, for the message (``"budget"``, ``"recall_budget"``).
        owner: what the budgets belong to, for the message (``"this store's model (...)"``).

    Raises:
        ValueError: not a budget, or not one of ``valid`` (the message names ``what`` and
            ``owner`` and lists the valid budgets).
    """
    budget = parse_budget(value, what)
    if budget is None:
        return None
    groups = sorted(set(valid))
    if budget not in groups:
        names = ", ".join(f"({b.r_q},{b.r_c})" for b in groups)
        raise ValueError(
            f"{what}=({budget.r_q},{budget.r_c}) is not a budget of {owner}. Valid budgets: "
            f"{names}; pick one, or None for the default."
        )
    return budget
