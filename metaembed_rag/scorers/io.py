"""Saving and loading learned scorers (safetensors + JSON), and resolving ``--scorer`` values.

A saved scorer is a folder with ``scorer.safetensors`` (the weights) and ``scorer.json``
(``format``, ``kind``, the constructor arguments, the model fingerprint and name it was trained
for, and the training record). Loading with ``fingerprint=`` refuses a scorer trained for
another model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save

from .base import MaxSimScorer, PooledDotScorer, Scorer, ScorerMismatchError
from .learned import BilinearScorer, CrossAttentionScorer, LearnedScorer

__all__ = ["SCORER_NAMES", "load_scorer", "resolve_scorer", "save_scorer"]

FORMAT = 1
WEIGHTS = "scorer.safetensors"
CONFIG = "scorer.json"

_KINDS: dict[str, type[LearnedScorer]] = {
    BilinearScorer.kind: BilinearScorer,
    CrossAttentionScorer.kind: CrossAttentionScorer,
}

#: Scorers named on the command line (anything else given to ``--scorer`` is a saved folder).
SCORER_NAMES: dict[str, type[Scorer]] = {"maxsim": MaxSimScorer, "pooled": PooledDotScorer}


def save_scorer(
    scorer: LearnedScorer, folder: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``scorer`` into ``folder`` (weights first, the JSON last); returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in scorer.state_dict().items()}
    _write(out / WEIGHTS, save(tensors))
    meta = {
        "format": FORMAT,
        "kind": scorer.kind,
        "config": scorer.config(),
        "fingerprint": scorer.fingerprint,
        **(extra or {}),
    }
    _write(out / CONFIG, json.dumps(meta, indent=2, sort_keys=True).encode())
    return out


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_scorer(folder: str | os.PathLike[str], fingerprint: str | None = None) -> LearnedScorer:
    """A saved scorer; with ``fingerprint`` (the model's), refuse one trained for another model.

    Raises:
        FileNotFoundError: the folder lacks ``scorer.json`` / ``scorer.safetensors``.
        ValueError: an unknown kind or format (the file is from another version).
        ScorerMismatchError: trained for another model.
    """
    path = Path(folder).expanduser()
    if path.is_file() and path.name in (CONFIG, WEIGHTS):
        path = path.parent
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path}: no {name}; pass a folder written by metaembed-rag train-scorer, or a "
                f"scorer name ({', '.join(SCORER_NAMES)})"
            )
    meta = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("kind") not in _KINDS:
        raise ValueError(
            f"{path / CONFIG}: format {meta.get('format')!r} kind {meta.get('kind')!r} is not "
            f"a scorer this version reads (format {FORMAT}, kinds {sorted(_KINDS)})"
        )
    saved = meta.get("fingerprint")
    if fingerprint is not None and saved != fingerprint:
        raise ScorerMismatchError(
            f"{path}: the scorer was trained for model fingerprint {saved} "
            f"({meta.get('model', 'unknown model')}) but this model's is {fingerprint}; "
            "train one for this model with metaembed-rag train-scorer --model ..."
        )
    scorer = _KINDS[meta["kind"]](**meta["config"], fingerprint=saved)
    scorer.load_state_dict(load_file(str(path / WEIGHTS)))
    scorer.eval()
    return scorer


def resolve_scorer(spec: Scorer | str | os.PathLike[str] | None) -> Scorer:
    """A scorer from ``None`` (MaxSim), a name (``maxsim``, ``pooled``), a saved folder or a
    :class:`Scorer` (returned as is).

    Raises:
        ValueError: neither a name nor a saved scorer folder (the message lists the names).
    """
    if spec is None:
        return MaxSimScorer()
    if isinstance(spec, Scorer):
        return spec
    text = os.fspath(spec)
    if text in SCORER_NAMES:
        return SCORER_NAMES[text]()
    if Path(text).expanduser().exists():
        return load_scorer(text)
    raise ValueError(
        f"scorer {text!r} is neither a scorer name ({', '.join(SCORER_NAMES)}) nor a folder "
        "saved by metaembed-rag train-scorer (bilinear, cross-attention)"
    )
