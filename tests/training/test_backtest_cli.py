"""The backtest commands' bad input: exit 2, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from features import write_log
from features.simulate import simulate
from training.__main__ import app


def test_a_model_version_that_does_not_exist_and_a_shop_absent_from_the_log(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = tmp_path / "log"
    world = simulate(buyers=200, shops=4, days=60, seed=1)
    write_log(world.log, data, world.meta)
    runner = CliRunner()
    args = ["backtest", "--data", str(data), "--policy", "serving/policy.yaml"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), "--model", "99"])
    assert result.exit_code == 2, result.output
    assert "99" in result.output
    assert not (tmp_path / "out").exists()
    result = runner.invoke(
        app, ["merchant-report", "--shop", "NO-SUCH", "--data", str(data), "--out", "x.html"]
    )
    assert result.exit_code == 2, result.output
    assert "NO-SUCH" in result.output
