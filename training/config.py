"""Job parameters: typed, frozen, and strict about unknown keys (a typo is an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_NAME = "buyer-quality"
EXPERIMENT_NAME = "buyer-quality"


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SnapshotParams(_Params):
    """Where the as-of dates fall and how the label looks ahead."""

    horizon_days: int = Field(default=90, ge=1, description="H: refund requests in (T, T+H] count.")
    maturity_days: int = Field(
        default=30, ge=0, description="M: an abuse confirmation counts if it arrives before T+H+M."
    )
    frequency: str = Field(
        default="MS", description="pandas offset alias of the as-of dates (MS=monthly)."
    )

    min_history_days: int = Field(
        default=180,
        ge=0,
        description="Days of log before the first as-of date (buyers need history).",
    )
    test_dates: int = Field(
        default=1, ge=1, description="Newest matured as-of dates held out as test."
    )
    valid_dates: int = Field(
        default=1,
        ge=1,
        description="Validation: the newest as-of dates whose labels were known on the first "
        "test date (the dates between are purged, see split_by_time).",
    )

    @field_validator("frequency")
    @classmethod
    def _pandas_offset(cls, value: str) -> str:
        try:
            pd.tseries.frequencies.to_offset(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a pandas offset alias (MS monthly, W-MON weekly, D daily)"
            ) from None
        return value


class ModelParams(_Params):
    """LightGBM settings; the defaults suit tens of features and ~10^5-10^6 rows.

    One thread by default: on a shared 2-core machine (the API, other jobs) OpenMP threads
    that spin-wait for a descheduled sibling made a fit 5-10x slower than one thread
    (docs/benchmarks.md, Training). Pass 0 for every usable core on a quiet machine.
    """

    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2)
    min_data_in_leaf: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    num_boost_round: int = Field(default=2000, ge=1)
    early_stopping_rounds: int = Field(default=100, ge=1)
    seed: int = 42
    num_threads: int = Field(
        default=1, ge=0, description="0: every usable core (see ModelParams docstring)."
    )


class DataChecks(_Params):
    """The least data a model may be trained and judged on."""

    min_train_rows: int = Field(default=500, ge=1)
    min_eval_rows: int = Field(default=200, ge=1)
    min_positives: int = Field(default=10, ge=1, description="Bad buyers needed in each split.")


class TrainConfig(_Params):
    """Everything `python -m training train` needs."""

    data_dir: Path
    snapshots: SnapshotParams = SnapshotParams()
    model: ModelParams = ModelParams()
    checks: DataChecks = DataChecks()
    target_bad_rate: float = Field(default=0.01, gt=0, lt=1)
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME
    progress: bool = True
    matrix_dir: Path | None = Field(
        default=None,
        description="A prebuilt training matrix (training.matrix) to read instead of "
        "building the snapshots from data_dir.",
    )


class GateParams(_Params):
    """The promotion gate's tolerances (issue 3, section 2)."""

    max_auc_drop: float = Field(default=0.005, ge=0)
    max_calibration_error: float = Field(default=0.05, gt=0)
    min_distinct_scores: int = Field(default=10, ge=2)


class PromoteConfig(_Params):
    """Everything `python -m training promote` needs."""

    data_dir: Path | None = Field(
        default=None, description="Data to judge on; by default the challenger's training data."
    )
    force: bool = False
    reason: str = Field(default="", description="Why (recorded with the gate run and version).")
    gate: GateParams = GateParams()
    target_bad_rate: float | None = Field(
        default=None, gt=0, lt=1, description="By default the challenger's own target."
    )
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME
    expected_challenger: str | None = Field(
        default=None,
        description="The version @challenger must hold (retrain: the one it just trained).",
    )


class RetrainConfig(_Params):
    """The scheduled job: train, promote, refresh the online store."""

    train: TrainConfig
    gate: GateParams = GateParams()
    force: bool = Field(default=False, description="Run even if data and settings are unchanged.")
    force_promote: bool = False
    lock_path: Path = Path("mlruns/.retrain.lock")
    materialize: Literal["auto", "skip"] = "auto"
