"""The training matrix as a dataset: snapshots built by an engine, read back by training.

`build_matrix` runs `training.snapshots.build_snapshots` (features and labels at every
matured as-of date) on each buyer partition with the engine chosen (pandas in one process,
Spark on a cluster) and writes the rows into a Parquet dataset folder, with what they are:
the snapshot settings, the feature set version and the fingerprint of the log. A buyer's
label only reads that buyer's refunds and the log's end, so per partition it is the label
of the whole log, point-in-time exactly as in one process.

`read_matrix` gives `training train --matrix` those rows back, refusing a matrix built with
other settings, from other data or by other feature code: its labels would mean something
else than the run records.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

import features
from features.engines import DEFAULT_MASTER, feature_columns, open_log, read_metadata
from training.config import SnapshotParams
from training.errors import TrainingDataError
from training.snapshots import build_snapshots, snapshot_dates

MATRIX_KIND = "training-matrix"
# The settings that decide which rows a matrix holds and what their labels mean.
MATRIX_SETTINGS = ("horizon_days", "maturity_days", "frequency", "min_history_days")


@dataclass(frozen=True)
class MatrixReport:
    """What `build_matrix` wrote."""

    out: Path
    rows: int
    dates: list[pd.Timestamp]
    engine: str


def matrix_columns() -> dict[str, str]:
    """The matrix's columns: buyer_id, as_of, the features, and the label `bad` (int8)."""
    return {**feature_columns(), "bad": "int8"}


def _fingerprint(data_dir: Path) -> str:
    """The log's fingerprint; "" when its tables are not single files (a Spark-written log)."""
    try:
        return features.fingerprint(data_dir)
    except (features.LogFileError, OSError):
        return ""


def build_matrix(
    data_dir: Path,
    params: SnapshotParams,
    out: Path,
    engine: str = "pandas",
    master: str = DEFAULT_MASTER,
    partitions: int | None = None,
) -> MatrixReport:
    """Build the labelled snapshots of a log with an engine and write them to `out`.

    Raises:
        features.engines.EngineUnavailable: Spark cannot start.
        features.LogFileError, features.LogValidationError: The log cannot be used.
        TrainingDataError: No as-of date has a matured label.
    """
    data_dir = Path(data_dir)
    data_fingerprint = _fingerprint(data_dir)  # before reading, as training takes it
    log = open_log(data_dir, engine=engine, master=master, partitions=partitions)
    dates = snapshot_dates(log.span, params)
    if not dates:
        raise TrainingDataError(
            f"{data_dir}: no as-of date has both {params.min_history_days} days of history and "
            f"a matured label ({params.horizon_days}+{params.maturity_days} days) in the log"
        )
    metadata = {
        "kind": MATRIX_KIND,
        "feature_set_version": features.FEATURE_SET_VERSION,
        "data_dir": str(data_dir.resolve()),
        "data_fingerprint": data_fingerprint,
        "snapshots": {key: getattr(params, key) for key in MATRIX_SETTINGS},
        "dates": [d.date().isoformat() for d in dates],
        "engine": engine,
    }
    job = partial(build_snapshots, dates=dates, params=params)
    rows = log.map_partitions(job, matrix_columns(), Path(out), metadata)
    return MatrixReport(Path(out), rows, dates, engine)


def read_matrix(
    folder: Path, params: SnapshotParams, data_fingerprint: str = ""
) -> tuple[pd.DataFrame, dict]:
    """The rows of a matrix `build_matrix` wrote, as `build_snapshots` returns them.

    Args:
        folder: The matrix's dataset folder.
        params: The run's snapshot settings; the matrix must have been built with them.
        data_fingerprint: The fingerprint of the run's log ("" when it is not at hand);
            when both are known they must agree.

    Returns:
        The snapshots (sorted by as_of, buyer_id) and the matrix's metadata.

    Raises:
        TrainingDataError: Not a matrix, or one built with other settings, data or features.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"--matrix {folder}: not a folder")
    meta = read_metadata(folder)
    if meta.get("kind") != MATRIX_KIND:
        raise TrainingDataError(
            f"--matrix {folder}: not a training matrix (no _fastrefund.json of kind "
            f"{MATRIX_KIND!r}); build one with `python -m training snapshots`"
        )
    if meta.get("feature_set_version") != features.FEATURE_SET_VERSION:
        raise TrainingDataError(
            f"--matrix {folder}: built by feature set {meta.get('feature_set_version')!r}, "
            f"this code computes {features.FEATURE_SET_VERSION!r}: rebuild it"
        )
    built = meta.get("snapshots", {})
    differ = [
        f"{key}={built.get(key)!r} (this run: {getattr(params, key)!r})"
        for key in MATRIX_SETTINGS
        if built.get(key) != getattr(params, key)
    ]
    if differ:
        raise TrainingDataError(
            f"--matrix {folder}: built with other snapshot settings: {', '.join(differ)}; "
            "rebuild it or train with the same options"
        )
    recorded = meta.get("data_fingerprint", "")
    if data_fingerprint and recorded and recorded != data_fingerprint:
        raise TrainingDataError(
            f"--matrix {folder}: built from other data than --data (fingerprint "
            f"{recorded[:12]}, the log's is {data_fingerprint[:12]}): rebuild it"
        )
    frame = pd.read_parquet(folder)
    columns = list(matrix_columns())
    if list(frame.columns) != columns:
        raise TrainingDataError(f"--matrix {folder}: its columns are not the matrix's")
    return frame.sort_values(["as_of", "buyer_id"], ignore_index=True), meta
