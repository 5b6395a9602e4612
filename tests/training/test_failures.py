"""What bad input gets: a clear message, a non-zero exit, nothing registered, no alias moved."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from mlflow import MlflowClient
from typer.testing import CliRunner

from training import registry
from training.__main__ import EXIT_LOCKED, app
from training.config import TrainConfig
from training.train import fit_and_evaluate, load_training_data, log_and_register

MODEL = "buyer-quality"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def registered_versions(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return len(client.search_model_versions(f"name = '{MODEL}'"))


def test_missing_data_directory(tracking: str, tmp_path: Path) -> None:
    result = run("train", "--data", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "nowhere: not a directory" in result.stderr
    assert registered_versions(tracking) == 0


def test_invalid_data_directory(tracking: str, small_world: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(small_world, bad)
    (bad / "buyers.parquet").unlink()
    (bad / "buyers.csv").write_text("buyer_id,registered_at\nB1,yesterday\n")
    result = run("train", "--data", str(bad))
    assert result.exit_code == 1
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


@pytest.mark.slow
def test_failed_alias_move_leaves_no_version(
    tracking: str, small_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = registry.connect()
    data = load_training_data(small_config)
    evaluation = fit_and_evaluate(data.split, small_config)

    def refuse(*args: object) -> None:
        raise RuntimeError("registry went away")

    monkeypatch.setattr(client, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry went away"):
        log_and_register(client, data, evaluation, small_config)
    assert registered_versions(tracking) == 0


def test_an_unknown_frequency_is_named(tracking: str, small_world: Path) -> None:
    result = run("train", "--data", str(small_world), "--frequency", "XYZ")
    assert result.exit_code == 2
    assert "--frequency: 'XYZ' is not a pandas offset alias" in result.stderr
    result = run("train", "--data", str(small_world), "--target-bad-rate", "0")
    assert result.exit_code == 2
    assert "--target-bad-rate: Input should be greater than 0" in result.stderr
    assert registered_versions(tracking) == 0


def test_a_tracking_server_with_credentials_is_reached_and_they_are_never_printed() -> None:
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from training.errors import TrackingUnavailableError
    from training.registry import _check_reachable

    expected = "Basic " + base64.b64encode(b"user:s3cret").decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            ok = self.path == "/health" and self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        _check_reachable(f"http://user:s3cret@127.0.0.1:{port}")  # answers 200: no error
        with pytest.raises(TrackingUnavailableError) as caught:
            _check_reachable(f"http://user:wrong-s3cret@127.0.0.1:{port}")
        assert "s3cret" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    finally:
        server.shutdown()


def test_a_registry_that_cannot_answer_is_not_read_as_no_champion() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from training.errors import RegistryError

    class Client:
        def __init__(self, code: int):
            self.code = code

        def get_model_version_by_alias(self, name: str, alias: str) -> None:
            raise MlflowException(f"{name}@{alias}", error_code=self.code)

    for absent in (codes.RESOURCE_DOES_NOT_EXIST, codes.INVALID_PARAMETER_VALUE):
        assert registry.version_by_alias(Client(absent), MODEL, "champion") is None
    with pytest.raises(RegistryError, match="the registry did not answer"):
        registry.version_by_alias(Client(codes.TEMPORARILY_UNAVAILABLE), MODEL, "champion")


@pytest.mark.slow
def test_promote_refuses_to_judge_another_version_than_the_one_expected(
    tracking: str, small_config: TrainConfig
) -> None:
    from training.config import PromoteConfig
    from training.errors import RegistryError
    from training.promote import promote

    client = registry.connect()
    data = load_training_data(small_config)
    log_and_register(client, data, fit_and_evaluate(data.split, small_config), small_config)
    with pytest.raises(RegistryError, match="moved to version 1 while this run trained version 7"):
        promote(PromoteConfig(expected_challenger="7"), client=client)
    assert registry.version_by_alias(client, MODEL, "champion") is None
