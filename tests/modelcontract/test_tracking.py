"""Where the registry is, and a URI shown without the secrets it may carry."""

from __future__ import annotations

import pytest

from modelcontract import DEFAULT_TRACKING_URI, redact_uri, tracking_uri


def test_the_tracking_uri_is_the_setting_else_the_environment_else_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal")
    assert tracking_uri() == "http://mlflow.internal"
    assert tracking_uri("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # set but empty: not a URI
    assert tracking_uri() == DEFAULT_TRACKING_URI


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://u:secret@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("https://token@mlflow.internal", "https://***@mlflow.internal"),
        ("https://mlflow.internal/?token=abc", "https://mlflow.internal/?***"),
        ("postgresql://u:p@h/db?sslkey=k", "postgresql://***@h/db?***"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),  # nothing to hide: unchanged
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_a_uri_is_shown_without_user_info_or_query(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
