"""The service's settings: tokens fit for the environment, malformed variables named without their
values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import serving.app
from serving.__main__ import app as cli
from serving.config import DEV_ADMIN_TOKEN, DEV_DECIDER_TOKEN, ConfigError, Settings

# Outside development the paths must be absolute (the files are not opened here).
_ABSOLUTE = {
    "store_path": Path("/srv/fastrefund/online.db"),
    "audit_path": Path("/srv/fastrefund/audit.db"),
}


def test_default_tokens_are_refused_outside_development() -> None:
    with pytest.raises(ConfigError, match="default development tokens"):
        Settings(
            **_ABSOLUTE,
            environment="production",
            decider_tokens=[DEV_DECIDER_TOKEN],
            admin_tokens=["a" * 32],
        ).check_tokens()
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(
            **_ABSOLUTE, environment="production", decider_tokens=["d" * 8], admin_tokens=["a" * 32]
        ).check_tokens()
    settings = Settings(
        **_ABSOLUTE,
        environment="production",
        decider_tokens=["d" * 32],
        admin_tokens=["a" * 32],
    )
    settings.check_tokens()
    assert "d" * 32 not in repr(settings)
    with pytest.raises(ConfigError, match="set FASTREFUND_DECIDER/ADMIN_TOKENS"):
        serving.app.create_app(Settings(**_ABSOLUTE, environment="staging"))


def test_production_is_the_default_and_has_no_built_in_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FASTREFUND_ENVIRONMENT")
    for name, path in _ABSOLUTE.items():
        monkeypatch.setenv(f"FASTREFUND_{name.upper()}", str(path))
    settings = Settings.load()
    assert settings.environment == "production"
    assert settings.decider_tokens == [] and settings.admin_tokens == []
    assert settings.audit_synchronous == "FULL"
    with pytest.raises(ConfigError, match="set FASTREFUND_DECIDER/ADMIN_TOKENS"):
        settings.check_tokens()
    # The built-in tokens only when development is set explicitly.
    monkeypatch.setenv("FASTREFUND_ENVIRONMENT", "development")
    development = Settings.load()
    assert [t.get_secret_value() for t in development.admin_tokens] == [DEV_ADMIN_TOKEN]
    assert development.audit_synchronous == "NORMAL"
    development.check_tokens()


def test_serving_run_refuses_the_default_environment_without_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FASTREFUND_ENVIRONMENT")
    for name, path in _ABSOLUTE.items():
        monkeypatch.setenv(f"FASTREFUND_{name.upper()}", str(path))
    result = CliRunner().invoke(cli, ["run", "--port", "1"])
    assert result.exit_code == 2
    assert "production: set FASTREFUND_DECIDER/ADMIN_TOKENS" in result.output


def test_a_token_in_both_lists_is_refused_in_every_environment() -> None:
    for environment in ("development", "production"):
        settings = Settings(
            **_ABSOLUTE,
            environment=environment,
            decider_tokens=["s" * 32],
            admin_tokens=["a" * 32, "s" * 32],
        )
        with pytest.raises(ConfigError, match="in both") as caught:
            settings.check_tokens()
        assert "s" * 32 not in str(caught.value)


@pytest.mark.parametrize(
    ("environment", "host", "refused"),
    [
        ("development", "127.0.0.1", False),
        ("development", "127.0.0.2", False),
        ("development", "::1", False),
        ("development", "localhost", False),
        ("development", "0.0.0.0", True),
        ("development", "::", True),
        ("development", "10.1.2.3", True),
        ("development", "example.com", True),
        ("production", "0.0.0.0", False),
    ],
)
def test_development_serves_only_on_a_loopback_address(
    environment: str, host: str, refused: bool
) -> None:
    settings = Settings(**_ABSOLUTE, environment=environment)  # type: ignore[arg-type]
    if refused:
        with pytest.raises(ConfigError, match="loopback"):
            settings.check_host(host)
    else:
        settings.check_host(host)


def test_serving_run_in_development_on_every_interface_is_exit_2() -> None:
    result = CliRunner().invoke(cli, ["run", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "loopback" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        (
            "FASTREFUND_DECIDER_TOKENS",
            '["S3cretS3cretS3cret", 123456789123456789]',
            "DECIDER_TOKENS",
        ),
        ("FASTREFUND_ADMIN_TOKENS", '{"a": "S3cretS3cretS3cret"}', "ADMIN_TOKENS"),
        ("FASTREFUND_DECIDER_TOKENS", "S3cretS3cretS3cret", "decider_tokens"),  # not JSON
        ("FASTREFUND_LOG_LEVEL", "verbose", "LOG_LEVEL"),
    ],
)
def test_a_malformed_setting_is_named_and_its_value_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert named in message
    assert "S3cret" not in message and "123456789" not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is not None
