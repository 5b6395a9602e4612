"""The logistic regression's registered document scores as its scikit-learn pipeline does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from modelcontract.artifact import (
    LIGHTGBM_FAMILY,
    LINEAR_FAMILY,
    ArtifactError,
    linear_file,
    model_file,
)
from modelcontract.linear import LinearModel
from training.models import LogisticBaseline

COLUMNS = ["refunds", "disputes", "paid", "always_missing"]


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticBaseline, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = rng.exponential(4.0, size=(3000, len(COLUMNS)))
    rows[:, 2] *= np.where(rng.random(3000) < 0.3, -1, 1)  # signed values too
    rows[rng.random(rows.shape) < 0.15] = np.nan
    rows[:, 3] = np.nan  # a feature never seen: kept, filled with 0
    logit = -3 + 0.4 * np.nan_to_num(rows[:, 0]) - 0.2 * np.nan_to_num(rows[:, 1])
    bad = (rng.random(3000) < 1 / (1 + np.exp(-logit))).astype(int)
    model = LogisticBaseline(COLUMNS).fit(pd.DataFrame(rows, columns=COLUMNS), bad)
    return model, rows


def test_the_document_scores_every_row_as_the_pipeline(fitted) -> None:
    model, rows = fitted
    linear = LinearModel.from_json(model.to_spec().model_dump_json())
    expected = model.predict(pd.DataFrame(rows, columns=COLUMNS))
    np.testing.assert_allclose(linear.predict(rows), expected, rtol=1e-12, atol=1e-15)
    assert [linear.score_one(row) for row in rows[:5]] == pytest.approx(expected[:5], rel=1e-12)
    assert linear.feature_name() == COLUMNS and linear.num_feature() == len(COLUMNS)
    assert LinearModel.from_json(linear.to_json()).spec == linear.spec  # exact round trip


def test_the_terms_sum_to_the_log_odds(fitted) -> None:
    model, rows = fitted
    linear = LinearModel.from_json(model.to_spec().model_dump_json())
    for row in rows[:20]:
        terms = linear.contributions(row)
        assert terms.shape == (len(COLUMNS) + 1,)
        assert terms.sum() == pytest.approx(float(linear.raw_score(row)), abs=1e-9)
    # A buyer with many refunds: the refunds term is the one that raises the score most.
    risky = np.array([40.0, 0.0, 10.0, np.nan])
    assert int(np.argmax(linear.contributions(risky)[:-1])) == 0
    with pytest.raises(ValueError, match="expected 4 features"):
        linear.contributions(risky[:3])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"coef": [1.0]}, "coef has 1 values"),
        ({"scale": None}, "every scale must be positive"),
        ({"intercept": float("nan")}, "every number must be finite"),
        ({"missing_flags": "9 for the last"}, "out of range"),
        ({"format": "pickle"}, "format"),
        ({"code": "import os"}, "code"),
    ],
)
def test_an_inconsistent_document_is_refused(fitted, change: dict, message: str) -> None:
    document = json.loads(fitted[0].to_spec().model_dump_json())
    if change.get("scale", 1) is None:
        change = {"scale": [0.0] * len(document["scale"])}
    if isinstance(change.get("missing_flags"), str):
        change = {"missing_flags": [*document["missing_flags"][:-1], 9]}
    document.update(change)
    with pytest.raises(ValidationError, match=message):
        LinearModel.from_json(json.dumps(document))


def _folder(tmp_path: Path, flavours: dict, data: str = "linear.json") -> Path:
    (tmp_path / "MLmodel").write_text(json.dumps({"flavors": flavours}), encoding="utf-8")
    (tmp_path / data).write_text("{}", encoding="utf-8")
    return tmp_path


def test_the_linear_folder_is_checked_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    good = _folder(tmp_path / "good", {"fastrefund_linear": {"data": "linear.json"}})
    assert model_file(good) == (LINEAR_FAMILY, (good / "linear.json").resolve())
    assert linear_file(good) == (good / "linear.json").resolve()
    cases = {
        "pyfunc": ({"fastrefund_linear": {"data": "linear.json"}, "python_function": {}}, "beside"),
        "code": ({"fastrefund_linear": {"data": "linear.json", "code": "src"}}, "carries code"),
        "outside": ({"fastrefund_linear": {"data": "../x.json"}}, "not a file in the folder"),
        "none": ({"sklearn": {"pickled_model": "m.pkl"}}, "no lightgbm flavour"),
    }
    for name, (flavours, message) in cases.items():
        (tmp_path / name).mkdir()
        folder = _folder(tmp_path / name, flavours)
        with pytest.raises(ArtifactError, match=message):
            model_file(folder)
    (tmp_path / "booster").mkdir()
    booster = _folder(tmp_path / "booster", {"lightgbm": {"data": "model.lgb"}}, "model.lgb")
    assert model_file(booster) == (LIGHTGBM_FAMILY, (booster / "model.lgb").resolve())
