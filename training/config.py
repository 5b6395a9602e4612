"""Job parameters: typed, frozen, and strict about unknown keys (a typo is an error).

Each field's `description` is also its command-line help (`training/options.py` builds the
options of `python -m training` from these models), so say there what a user needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.engines import DEFAULT_MASTER
from modelcontract import MODEL_NAME

EXPERIMENT_NAME = "buyer-quality"


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SnapshotParams(_Params):
    """Where the as-of dates fall and how the label looks ahead."""

    horizon_days: int = Field(
        default=90, ge=1, description="Label horizon H in days: refund requests in (T, T+H] count."
    )
    maturity_days: int = Field(
        default=30,
        ge=0,
        description="Label maturity M in days: an abuse confirmation counts if it arrives "
        "before T+H+M.",
    )
    frequency: str = Field(
        default="MS",
        description="Spacing of the as-of dates, a pandas offset alias (MS = monthly).",
    )

    min_history_days: int = Field(
        default=180,
        ge=0,
        description="Days of log before the first as-of date, so buyers have history.",
    )
    test_dates: int = Field(
        default=1, ge=1, description="Newest matured as-of dates held out as test."
    )
    valid_dates: int = Field(
        default=1,
        ge=1,
        description="As-of dates used for validation: the newest whose labels were known on "
        "the first test date (the dates between are purged).",
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

    learning_rate: float = Field(default=0.05, gt=0, le=1, description="LightGBM learning rate.")
    num_leaves: int = Field(default=31, ge=2, description="Most leaves per tree.")
    min_data_in_leaf: int = Field(default=100, ge=1, description="Fewest rows in a leaf.")
    feature_fraction: float = Field(
        default=0.9, gt=0, le=1, description="Share of the features each tree may use."
    )
    bagging_fraction: float = Field(
        default=0.8, gt=0, le=1, description="Share of the rows each tree is fit on."
    )
    lambda_l2: float = Field(default=1.0, ge=0, description="L2 regularization of leaf values.")
    num_boost_round: int = Field(
        default=2000, ge=1, description="Most boosting rounds (early stopping cuts it)."
    )
    early_stopping_rounds: int = Field(
        default=100,
        ge=1,
        description="Stop after this many rounds without validation improvement.",
    )
    seed: int = Field(default=42, description="Random seed; same data and seed, same model.")
    num_threads: int = Field(
        default=1,
        ge=0,
        description="LightGBM threads (0 = every usable core; 1 is steadiest on a busy box).",
    )


class SearchParams(_Params):
    """The model search's budget (`training.search`): LightGBM trials and a time cap.

    The trials are drawn by a seeded TPE sampler (the seed is the model's), so the same data,
    seed and trial budget give the same search; the seconds cap is a safety net on a slow
    machine and, when it cuts a search short, the trials run before it are kept.
    """

    trials: int = Field(
        default=12,
        gt=0,
        description="LightGBM settings tried by the search (the first is the --learning-rate, "
        "--num-leaves... given); logistic regression is always a candidate too.",
    )
    # 60 s: on the default world (20,000 buyers, one thread) a trial takes 3-25 s, and this
    # keeps `train` within twice its time before the search (docs/benchmarks.md).
    seconds: float = Field(
        default=60.0,
        gt=0,
        description="Wall-clock cap of the search in seconds: no trial starts that would end "
        "past it (the first always runs); the trials finished are kept.",
    )


class DataChecks(_Params):
    """The least data a model may be trained and judged on."""

    min_train_rows: int = Field(default=500, ge=1, description="Fewest labelled training rows.")
    min_eval_rows: int = Field(
        default=200, ge=1, description="Fewest labelled validation or test rows."
    )
    min_positives: int = Field(
        default=10, ge=1, description="Fewest bad buyers each split must hold to train or judge."
    )


class TrainConfig(_Params):
    """Everything `python -m training train` needs."""

    data_dir: Path = Field(description="Data directory: buyers, shops, orders, refunds tables.")
    snapshots: SnapshotParams = SnapshotParams()
    model: ModelParams = ModelParams()
    search: SearchParams = SearchParams()
    checks: DataChecks = DataChecks()
    target_bad_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Highest bad rate tolerated among premium buyers (validation).",
    )
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME
    progress: bool = Field(
        default=True, description="Show a progress bar while snapshots are built."
    )
    matrix_dir: Path | None = Field(
        default=None,
        description="A prebuilt training matrix (training.matrix) to read instead of "
        "building the snapshots from data_dir.",
    )


class MatrixConfig(_Params):
    """Everything `python -m training snapshots` needs: the training matrix built by an engine."""

    data_dir: Path = Field(description="Data directory: buyers, shops, orders, refunds tables.")
    out: Path = Field(description="The matrix's dataset folder (replaced whole).")
    engine: Literal["pandas", "spark"] = Field(
        default="pandas", description="pandas (one process) or spark (Spark reads the log itself)."
    )
    master: str = Field(
        default=DEFAULT_MASTER,
        description="Spark master URL with --engine spark: local[*], spark://host:7077.",
    )
    partitions: int | None = Field(
        default=None, ge=1, description="Buyer partitions (default: the engine's rule)."
    )
    snapshots: SnapshotParams = SnapshotParams()


class GateParams(_Params):
    """The promotion gate's tolerances (issue 3, section 2)."""

    max_auc_drop: float = Field(default=0.005, ge=0)
    max_calibration_error: float = Field(default=0.05, gt=0)
    min_distinct_scores: int = Field(default=10, ge=2)
    bootstrap_rounds: int = Field(
        default=1000,
        ge=100,
        description="Resamples of the gate month's buyers for the paired bootstrap intervals.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Coverage of the bootstrap intervals; a challenger whose interval of the "
        "AUC or coverage difference lies wholly below zero is significantly worse.",
    )
    bootstrap_seed: int = Field(default=0, description="Seed of the bootstrap's resamples.")


class PromoteConfig(_Params):
    """Everything `python -m training promote` needs."""

    data_dir: Path | None = Field(
        default=None, description="Data to judge on (default: the challenger's own data)."
    )
    force: bool = Field(default=False, description="Promote even if the gate refuses (recorded).")
    reason: str = Field(
        default="", description="Why (e.g. for --force): kept with the gate run and the version."
    )
    gate: GateParams = GateParams()
    target_bad_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Bad rate for coverage-at-target (default: the challenger's).",
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
    force: bool = Field(
        default=False, description="Retrain even if data and settings are unchanged."
    )
    force_promote: bool = Field(default=False, description="Promote even if the gate refuses.")
    lock_path: Path = Field(
        default=Path("mlruns/.retrain.lock"),
        description="Lock file that keeps two runs from overlapping.",
    )
    materialize: bool = Field(
        default=True, description="Refresh serving's online store after promotion."
    )
