"""The score contract: raw MaxSim ``score`` and a calibrated 0-1 ``relevance``.

A search hit's ``score`` is the MaxSim sum at the rerank budget ``(r_q, r_c)``: a sum of
``r_q`` cosines, in ``[-r_q, r_q]``, comparable only between hits of one query at one budget.
A **relevance** is a probability-like value in ``[0, 1]`` that can be thresholded across
queries: ``relevance = sigmoid(slope_b * score + intercept_b)``, a logistic regression per
budget ``b`` fitted on held-out *training* pairs (never the evaluation suite) by
``scripts/calibrate_relevance.py`` and shipped beside the model as
``relevance_calibration.json`` (:data:`CALIBRATION_FILE`). ``0.5`` is where a hit is as likely
relevant as not, for hits like the ones a search returns (the fit's negatives are the hardest
in-domain non-matches); see ``docs/scores.md`` for the precision / recall of that threshold on
the zero-shot suite.

A model folder without a calibration (a model you trained yourself) gets the budget-normalised
fallback ``(score / r_q + 1) / 2`` (the mean cosine mapped to ``[0, 1]``; order-preserving but
not calibrated) and one warning naming the script that calibrates it.

>>> cal = RelevanceCalibration("abc", {Budget(1, 1): (10.0, -5.0)})
>>> [round(x, 3) for x in cal.relevance([0.5, 0.9], Budget(1, 1))]
[0.5, 0.982]
>>> [round(x, 3) for x in fallback_relevance([2.0, -4.0], Budget(4, 8))]
[0.75, 0.0]
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budget import Budget, BudgetLike

__all__ = [
    "CALIBRATION_FILE",
    "CalibrationError",
    "RelevanceCalibration",
    "fallback_relevance",
    "load_calibration",
    "relevance_scores",
]

logger = logging.getLogger(__name__)

#: File name of the calibration inside a model folder.
CALIBRATION_FILE = "relevance_calibration.json"
_FORMAT = "metaembed-relevance-calibration"


class CalibrationError(ValueError):
    """A calibration file that cannot be used (malformed, or made for another model)."""


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def fallback_relevance(scores: Iterable[float], budget: BudgetLike) -> list[float]:
    """Uncalibrated relevance: the mean cosine ``score / r_q`` mapped to ``[0, 1]`` (clipped
    against rounding of stored vectors)."""
    r_q = Budget.parse(budget).r_q
    return [min(1.0, max(0.0, (float(s) / r_q + 1.0) / 2.0)) for s in scores]


@dataclass(frozen=True)
class RelevanceCalibration:
    """Per-budget logistic maps from raw MaxSim to relevance.

    Attributes:
        fingerprint: the fingerprint of the model the calibration was fitted for.
        coefficients: ``Budget -> (slope, intercept)`` on the raw MaxSim score.
        info: what it was fitted on (data, counts, fit quality), for reports.
    """

    fingerprint: str
    coefficients: Mapping[Budget, tuple[float, float]]
    info: Mapping[str, Any] = field(default_factory=dict)

    def relevance(self, scores: Iterable[float], budget: BudgetLike) -> list[float]:
        """``sigmoid(slope * score + intercept)`` at ``budget``.

        Raises:
            KeyError: ``budget`` was not calibrated (the message lists the calibrated ones).
        """
        b = Budget.parse(budget)
        if b not in self.coefficients:
            have = ", ".join(str(x) for x in sorted(self.coefficients))
            raise KeyError(f"budget {b} is not calibrated (calibrated: {have})")
        slope, intercept = self.coefficients[b]
        return [_sigmoid(slope * float(s) + intercept) for s in scores]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": 1,
            "model_fingerprint": self.fingerprint,
            "budgets": {
                str(b): {"slope": s, "intercept": i}
                for b, (s, i) in sorted(self.coefficients.items())
            },
            "info": dict(self.info),
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically; returns its path."""
        from .index.persist import atomic_writer  # lazy: loading a model needs no index code

        target = Path(path)
        with atomic_writer(target) as f:
            f.write((json.dumps(self.to_json(), indent=2) + "\n").encode())
        return target

    @classmethod
    def from_json(cls, data: Any, where: str = "calibration") -> RelevanceCalibration:
        """Parse :meth:`to_json`'s output.

        Raises:
            CalibrationError: not a calibration, or a field of the wrong type.
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CalibrationError(f"{where}: not a relevance calibration (format {_FORMAT!r}).")
        try:
            coefficients = {
                Budget.parse(key): (float(v["slope"]), float(v["intercept"]))
                for key, v in data["budgets"].items()
            }
            fingerprint = str(data["model_fingerprint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"{where}: malformed calibration ({type(exc).__name__}: {exc}); re-run "
                "scripts/calibrate_relevance.py."
            ) from exc
        return cls(fingerprint, coefficients, dict(data.get("info") or {}))


def load_calibration(folder: str | Path, fingerprint: str) -> RelevanceCalibration | None:
    """The calibration in a model folder, or ``None`` when the folder has none.

    Raises:
        CalibrationError: the file is malformed or was fitted for another model (its
            fingerprint differs from ``fingerprint``).
    """
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path}: cannot read the calibration ({exc}).") from exc
    cal = RelevanceCalibration.from_json(data, str(path))
    if cal.fingerprint != fingerprint:
        raise CalibrationError(
            f"{path} was fitted for model {cal.fingerprint}, not this one ({fingerprint}); "
            "re-run scripts/calibrate_relevance.py for this model or delete the file."
        )
    return cal


_warned: set[int] = set()


def relevance_scores(model: Any, scores: Iterable[float], budget: BudgetLike) -> list[float]:
    """Relevance in ``[0, 1]`` of raw MaxSim ``scores`` at ``budget`` for ``model``.

    Uses the model's calibration (``model.relevance_calibration``, loaded with the model
    folder) when it covers ``budget``; otherwise :func:`fallback_relevance`, with one warning
    per model.
    """
    cal: RelevanceCalibration | None = getattr(model, "relevance_calibration", None)
    b = Budget.parse(budget)
    if cal is not None and b in cal.coefficients:
        return cal.relevance(scores, b)
    if id(model) not in _warned:
        _warned.add(id(model))
        why = "has no relevance calibration" if cal is None else f"has none for budget {b}"
        logger.warning(
            "The model %s: relevance is the uncalibrated (score / r_q + 1) / 2. Fit one with "
            "scripts/calibrate_relevance.py --model FOLDER (see docs/scores.md).",
            why,
        )
    return fallback_relevance(scores, b)
