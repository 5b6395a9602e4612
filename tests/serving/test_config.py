"""The service's settings: tokens fit for the environment, malformed variables named without their
values."""

from __future__ import annotations

import pytest

import serving.app
from serving.config import ConfigError, Settings


def test_default_tokens_are_refused_outside_development() -> None:
    with pytest.raises(ConfigError, match="default development tokens"):
        Settings(environment="production").check_tokens()
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(
            environment="production", decider_tokens=["d" * 8], admin_tokens=["a" * 32]
        ).check_tokens()
    settings = Settings(
        environment="production",
        decider_tokens=["d" * 32],
        admin_tokens=["a" * 32],
    )
    settings.check_tokens()
    assert "d" * 32 not in repr(settings)
    with pytest.raises(ConfigError, match="default development tokens"):
        serving.app.create_app(Settings(environment="staging"))


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
