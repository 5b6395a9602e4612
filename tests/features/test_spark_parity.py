"""The Spark engine against the pandas engine: the same features, the same errors.

Spark runs in local[2] on a small simulated world; one session for the whole test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import FEATURE_COLUMNS, build_features, load_log, write_log
from features.__main__ import app
from features.engines import feature_columns, read_metadata
from features.engines.spark import SparkLog, SparkLogValidationError
from features.schema import LogValidationError
from features.simulate import simulate, write_world

DATES = ["2025-08-01", "2026-01-01"]
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # Spark jobs: seconds each


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("spark-world") / "log"
    write_world(simulate(buyers=400, shops=30, days=420, seed=11), directory)
    return directory


@pytest.fixture(scope="module")
def spark_features(spark, world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features at DATES built by `features build --engine spark` (the CLI, in process)."""
    out = tmp_path_factory.mktemp("spark-out") / "features"
    args = ["build", "--engine", "spark", "--data", str(world_dir), "--out", str(out)]
    args += [arg for d in DATES for arg in ("--as-of", d)]
    result = CliRunner().invoke(app, [*args, "--partitions", "3"])
    assert result.exit_code == 0, result.output
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["as_of", "buyer_id"], ignore_index=True)


def assert_same_features(spark_frame: pd.DataFrame, pandas_frame: pd.DataFrame) -> None:
    """Same columns in order, same dtypes, same (as_of, buyer_id) rows, values to 1e-9."""
    got, want = _sorted(spark_frame), _sorted(pandas_frame)
    assert list(got.columns) == ["buyer_id", "as_of", *FEATURE_COLUMNS]
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    assert got["buyer_id"].tolist() == want["buyer_id"].tolist()
    assert got["as_of"].tolist() == want["as_of"].tolist()
    for column in FEATURE_COLUMNS:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        assert np.allclose(a, b, rtol=0, atol=1e-9, equal_nan=True), column


def test_spark_features_equal_the_pandas_engine_column_by_column(
    world_dir: Path, spark_features: Path, tmp_path: Path
) -> None:
    pandas_out = tmp_path / "pandas.parquet"
    args = ["build", "--data", str(world_dir), "--out", str(pandas_out)]
    result = CliRunner().invoke(app, [*args, *[a for d in DATES for a in ("--as-of", d)]])
    assert result.exit_code == 0, result.output

    spark_frame = pd.read_parquet(spark_features)
    assert len(spark_frame) > 500  # both dates, hundreds of buyers
    assert spark_frame["as_of"].dtype == "datetime64[us, UTC]"
    assert_same_features(spark_frame, pd.read_parquet(pandas_out))
    meta = read_metadata(spark_features)
    assert meta["as_of"] == DATES and meta["engine"] == "spark"


def test_spark_features_as_of_d_equal_those_of_the_log_cut_at_d(
    world_dir: Path, spark_features: Path, tmp_path: Path
) -> None:
    """Point in time: nothing the Spark engine computes as of D depends on what came after."""
    log = load_log(world_dir)
    spark_frame = pd.read_parquet(spark_features)
    for day in DATES:
        known_at = pd.Timestamp(day, tz="UTC")
        cut_dir = tmp_path / f"cut-{day}"
        write_log(log.known_at(known_at), cut_dir, {"start": "2025-01-01", "end": day})
        on_cut = build_features(load_log(cut_dir), day)
        assert len(on_cut) > 100
        assert_same_features(spark_frame.loc[spark_frame["as_of"] == known_at], on_cut)


def test_spark_reads_a_csv_log_without_meta_json_as_pandas_does(
    spark, csv_log_dir: Path, tmp_path: Path
) -> None:
    """CSV: Spark reads text; each group parses it with the pandas engine's rules, and the
    span (no meta.json) is found by a scan."""
    job = partial(build_features, as_of_dates=["2025-06-01"], partitions=1)
    log = SparkLog(spark, csv_log_dir)
    want = load_log(csv_log_dir)
    assert (log.span.start, log.span.end) == (
        want.buyers["registered_at"].min().normalize(),
        want.end,
    )
    log.map_partitions(job, feature_columns(), tmp_path / "out")
    assert_same_features(pd.read_parquet(tmp_path / "out"), build_features(want, "2025-06-01"))


def test_a_failed_job_names_its_cause_and_leaves_the_previous_output(
    spark, world_dir: Path, tmp_path: Path
) -> None:
    from features.engines.spark_session import SparkJobError

    out = tmp_path / "features"
    SparkLog(spark, world_dir, partitions=2).map_partitions(
        partial(build_features, as_of_dates=DATES[0], partitions=1), feature_columns(), out
    )
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(SparkJobError, match="MemoryError: simulated"):
        SparkLog(spark, world_dir, partitions=4).map_partitions(
            _always_fail, feature_columns(), out
        )
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["features"]


def _always_fail(log) -> pd.DataFrame:
    """A job that fails in the executors (a worker's bug, a lost node)."""
    raise MemoryError("simulated: the worker ran out of memory")


def _broken_copy(world_dir: Path, target: Path, change) -> Path:
    log = load_log(world_dir)
    orders = change(log.orders.copy())
    write_log(
        type(log)(log.buyers, log.shops, orders, log.refunds, log.start, log.end),
        target,
        {"start": "2025-01-01", "end": log.end.isoformat()},
    )
    return target


def test_a_contract_breach_names_file_column_rule_and_ids_and_leaves_no_output(
    spark, world_dir: Path, tmp_path: Path
) -> None:
    def zero_price(orders: pd.DataFrame) -> pd.DataFrame:
        orders.loc[7, "paid_fen"] = 0
        return orders

    broken = _broken_copy(world_dir, tmp_path / "broken", zero_price)
    bad_id = load_log(broken, validate=False).orders.loc[7, "order_id"]
    out = tmp_path / "features"
    (out).mkdir()
    (out / "part-old.parquet").write_bytes(b"the previous run")
    job = partial(build_features, as_of_dates=DATES, partitions=1)
    with pytest.raises(SparkLogValidationError) as caught:
        SparkLog(spark, broken, partitions=3).map_partitions(job, feature_columns(), out)
    message = str(caught.value)
    assert "orders.parquet: column 'paid_fen'" in message
    assert "greater_than_or_equal_to(1)" in message
    assert f"order_id {bad_id}" in message
    assert sorted(p.name for p in out.iterdir()) == ["part-old.parquet"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_order_id_repeated_across_buyers_is_refused(
    spark, world_dir: Path, tmp_path: Path
) -> None:
    """Two buyers' orders land in different groups: the driver checks ids across the log."""

    def repeat_id(orders: pd.DataFrame) -> pd.DataFrame:
        other = orders.index[orders["buyer_id"] != orders.loc[0, "buyer_id"]][0]
        orders.loc[other, "order_id"] = orders.loc[0, "order_id"]
        return orders

    broken = _broken_copy(world_dir, tmp_path / "broken", repeat_id)
    repeated = load_log(broken, validate=False).orders.loc[0, "order_id"]
    with pytest.raises(SparkLogValidationError, match=f"order_id repeated: {repeated}"):
        SparkLog(spark, broken, partitions=2).check_unique_ids()


def test_a_missing_column_is_named_before_any_job(spark, world_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(world_dir, tmp_path / "broken", lambda o: o.drop(columns="paid_fen"))
    with pytest.raises(LogValidationError, match="orders.parquet: column 'paid_fen'"):
        SparkLog(spark, broken)


def test_an_unreachable_master_fails_at_once_naming_it(world_dir: Path, tmp_path: Path) -> None:
    args = ["build", "--engine", "spark", "--master", "spark://127.0.0.1:1"]
    args += ["--data", str(world_dir), "--as-of", DATES[0], "--out", str(tmp_path / "f")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Spark master spark://127.0.0.1:1 cannot be reached" in result.output
    assert not (tmp_path / "f").exists()


def _cli(args: list[str], env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom features.__main__ import app\napp()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_without_java_the_spark_engine_says_how_to_install_it(
    world_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"PATH": str(tmp_path)}
    args = ["build", "--engine", "spark", "--data", str(world_dir), "--as-of", DATES[0]]
    result = _cli([*args, "--out", str(tmp_path / "f")], env)
    assert result.returncode == 2, result.stderr
    assert "Spark engine needs Java 17+" in result.stderr
    assert "install one" in result.stderr


def test_without_the_spark_extra_the_error_says_how_to_install_it(
    world_dir: Path, tmp_path: Path
) -> None:
    args = ["build", "--engine", "spark", "--data", str(world_dir), "--as-of", DATES[0]]
    prelude = "import sys; sys.modules['pyspark'] = None"  # as if pyspark were not installed
    result = _cli([*args, "--out", str(tmp_path / "f")], dict(os.environ), prelude)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: Spark engine needs the spark extra: pip install -e '.[spark]'"
    )
