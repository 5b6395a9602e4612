"""What the service logs: JSON lines in every worker, never a token, never a credential."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.__main__ import app as serving_cli
from serving.__main__ import worker_app
from serving.config import Settings
from serving.logs import JsonFormatter
from tests.serving.conftest import (
    URL,
    body,
    decide,
)


def test_tokens_are_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="serving"):
        decide(client, body("LOG1"))
        client.post(URL, json=body(), headers={"Authorization": "Bearer secret-wrong"})
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "dev-decider-token" not in text and "secret-wrong" not in text
    assert "decider#0" in text


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        ("postgresql://u:S3cretPw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("https://S3cretPw@mlflow.internal", "https://***@mlflow.internal"),
        ("https://mlflow.internal/?token=S3cretPw", "https://mlflow.internal/?***"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_a_tracking_uri_is_logged_without_its_credentials(
    make_client: Callable[..., TestClient],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    uri: str,
    logged: str,
) -> None:
    with caplog.at_level("INFO", logger="serving"):
        make_client(settings.model_copy(update={"mlflow_tracking_uri": uri}))
    # The startup line as the JSON formatter writes it to stderr.
    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    started = [line for line in lines if line["event"] == "serving"]
    assert len(started) == 1 and started[0]["tracking_uri"] == logged
    everything = caplog.text + " ".join(JsonFormatter().format(r) for r in caplog.records)
    assert "S3cretPw" not in everything


def test_each_worker_process_logs_json_lines(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serving run --workers N`: uvicorn starts each worker afresh and builds the app there.
    for name, value in (
        ("FASTREFUND_STORE_PATH", settings.store_path),
        ("FASTREFUND_AUDIT_PATH", settings.audit_path),
        ("FASTREFUND_LOG_LEVEL", "WARNING"),
        ("MLFLOW_CONFIGURE_LOGGING", "false"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
    ):
        monkeypatch.setenv(name, str(value))
    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    loggers = [
        logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "mlflow", "alembic")
    ]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        result = CliRunner().invoke(serving_cli, ["run", "--workers", "2"])
        assert result.exit_code == 0, result.output
        assert started["app"] == "serving.__main__:worker_app" and started["factory"] is True
        root = logging.getLogger()
        root.handlers[:] = []  # what a fresh worker process starts with
        worker_app()
        assert [type(handler.formatter) for handler in root.handlers] == [JsonFormatter]
        assert root.level == logging.WARNING
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
