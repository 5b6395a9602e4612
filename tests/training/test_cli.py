"""`python -m training`: its options are the configuration's, and bad input gets a clear
message, the documented exit status, nothing registered and no alias moved."""

from __future__ import annotations

import shutil
import signal
import sys
import types
from pathlib import Path

import pytest
import typer
from filelock import FileLock
from mlflow import MlflowClient
from typer.testing import CliRunner

from modelcontract import MODEL_NAME
from training.__main__ import (
    EXIT_LOCKED,
    PROMOTE_OPTIONS,
    RETRAIN_OPTIONS,
    TRAIN_OPTIONS,
    app,
)
from training.config import PromoteConfig, RetrainConfig, TrainConfig
from training.options import EXIT_BAD_INPUT, field_of

COMMANDS = {
    "train": (TrainConfig, TRAIN_OPTIONS),
    "promote": (PromoteConfig, PROMOTE_OPTIONS),
    "retrain": (RetrainConfig, RETRAIN_OPTIONS),
}
# Each configuration with only what it requires: every other field at its default.
DEFAULTS = {
    "train": TrainConfig(data_dir=Path("x")),
    "promote": PromoteConfig(),
    "retrain": RetrainConfig(train=TrainConfig(data_dir=Path("x"))),
}


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def registered_versions(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return len(client.search_model_versions(f"name = '{MODEL_NAME}'"))


def test_every_cli_option_has_help_text() -> None:
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.name} has no help text"
        assert sub.help, f"{name} has no help"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_options_are_the_configuration_fields(name: str) -> None:
    """Name, default and help of every option come from the config model, written once."""
    model, options = COMMANDS[name]
    params = {p.name: p for p in typer.main.get_command(app).commands[name].params}
    for option in options:
        field = field_of(model, option.path)
        param = params[option.name]
        assert param.help == field.description, option.path
        if option.flags:
            assert param.opts == list(option.flags)
        if field.is_required():
            assert param.required, option.path
        elif option.path != "train.progress":  # retrain's one default of its own
            value = DEFAULTS[name]
            for part in option.path.split("."):
                value = getattr(value, part)
            assert param.default == value, option.path
    assert set(params) == {option.name for option in options}
    if "progress" in params:
        assert params["progress"].default is (name == "train")  # no bar in cron's mail


def test_help_lists_every_option_with_its_help() -> None:
    for name in ("train", "retrain"):
        wide = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # one line per option
        result = CliRunner().invoke(app, [name, "--help"], env=wide)
        assert result.exit_code == 0
        for option in COMMANDS[name][1]:
            line = next(line for line in result.output.splitlines() if f" {option.flag} " in line)
            assert field_of(COMMANDS[name][0], option.path).description in line, option.flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--frequency", "XYZ"], "--frequency: 'XYZ' is not a pandas offset alias"),
        (["train", "--target-bad-rate", "0"], "--target-bad-rate: Input should be greater than 0"),
        (["retrain", "--horizon-days", "0"], "--horizon-days: Input should be greater than or"),
        (["retrain", "--learning-rate", "2"], "--learning-rate: Input should be less than or"),
        (["promote", "--target-bad-rate", "1"], "--target-bad-rate: Input should be less than 1"),
        # A search budget of zero or below: nothing is trained or registered.
        (["train", "--search-trials", "0"], "--search-trials: Input should be greater than 0"),
        (["train", "--search-seconds", "-5"], "--search-seconds: Input should be greater than 0"),
    ],
)
def test_a_value_the_settings_refuse_is_exit_2_naming_the_option(
    tracking: str, small_world: Path, args: list[str], message: str
) -> None:
    data = [] if args[0] == "promote" else ["--data", str(small_world)]
    result = run(*args, *data)
    assert result.exit_code == EXIT_BAD_INPUT
    assert message in result.stderr
    assert registered_versions(tracking) == 0


@pytest.mark.parametrize("command", [["train"], ["retrain", "--no-materialize"]])
def test_a_data_folder_that_is_not_there_is_exit_2_as_in_features_and_serving(
    tracking: str, tmp_path: Path, command: list[str]
) -> None:
    result = run(*command, "--data", str(tmp_path / "nowhere"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "nowhere: not a directory" in result.stderr
    assert registered_versions(tracking) == 0


def test_an_invalid_log_is_exit_2(tracking: str, small_world: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(small_world, bad)
    (bad / "buyers.parquet").unlink()
    (bad / "buyers.csv").write_text("buyer_id,registered_at\nB1,yesterday\n")
    for command in (["train"], ["retrain", "--no-materialize"]):
        result = run(*command, "--data", str(bad))
        assert result.exit_code == EXIT_BAD_INPUT, command
        assert "error: " in result.stderr and "registered_at" in result.stderr
    assert registered_versions(tracking) == 0


def test_too_few_positives(tracking: str, small_world: Path) -> None:
    result = run(
        "train",
        "--data",
        str(small_world),
        "--min-history-days",
        "90",
        "--min-positives",
        "100000",
        "--no-progress",
    )
    assert result.exit_code == 1
    assert "too little data" in result.stderr and "bad buyers" in result.stderr
    assert registered_versions(tracking) == 0


def test_too_few_matured_dates(tracking: str, small_world: Path) -> None:
    result = run("train", "--data", str(small_world), "--min-history-days", "300", "--no-progress")
    assert result.exit_code == 1
    assert "as-of date" in result.stderr
    assert registered_versions(tracking) == 0


def test_unreachable_tracking_server(
    small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    for args in (
        ["train", "--data", str(small_world)],
        ["promote"],
        ["retrain", "--data", str(small_world)],
    ):
        result = run(*args)
        assert result.exit_code == 1, args
        assert "cannot be reached" in result.stderr


def test_plain_file_store_is_refused(
    small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    result = run("train", "--data", str(small_world))
    assert result.exit_code == 1
    assert "plain-file store" in result.stderr
    assert not (tmp_path / "mlruns").exists()


def test_promote_without_a_challenger(tracking: str) -> None:
    result = run("promote")
    assert result.exit_code == 1
    assert "run train first" in result.stderr


def test_overlapping_retrain_waits_its_turn(
    tracking: str, small_world: Path, tmp_path: Path
) -> None:
    lock_path = tmp_path / "mlruns" / ".retrain.lock"
    lock_path.parent.mkdir()
    with FileLock(str(lock_path)):
        result = run("retrain", "--data", str(small_world))
    assert result.exit_code == EXIT_LOCKED
    assert "another retraining run" in result.stderr
    assert registered_versions(tracking) == 0


def test_sigterm_waits_until_a_database_call_has_returned(monkeypatch) -> None:
    """Raised inside SQLAlchemy's commit, the SystemExit would skip MLflow's rollback and keep
    SQLite's write lock, so the runs could not be marked FAILED: it is tried again later."""
    from training import __main__ as cli

    timers: list[float] = []
    monkeypatch.setattr(signal, "setitimer", lambda _which, seconds: timers.append(seconds))
    code = compile(
        "frame = sys._getframe()", "/venv/site-packages/sqlalchemy/orm/session.py", "exec"
    )
    namespace: dict = {"sys": sys}
    exec(code, namespace)  # a frame whose code is SQLAlchemy's, as a signal would find it
    inside: types.FrameType = namespace["frame"]
    cli._stop(signal.SIGTERM, inside)  # deferred: no exception, a retry armed
    assert timers == [cli._DEFER_SECONDS] and cli._pending == [signal.SIGTERM]
    with pytest.raises(SystemExit) as stopped:
        cli._stop_deferred(signal.SIGALRM, sys._getframe())  # the call returned: unwind now
    assert stopped.value.code == 143 and cli._pending == []
