"""FASTREFUND_DATABASE_URL: a malformed one is exit 2 naming the variable, never its password;
a wrong password is one line; `python -m serving migrate` brings the schema up, once, and a
schema ahead of this code is refused."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from serving.__main__ import app
from serving.config import ConfigError, Settings
from serving.database import (
    SchemaError,
    ensure_schema,
    latest_version,
    migrate,
    redact,
)
from tests.pg import PgCluster

SECRET = "Sup3rS3cret-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{SECRET}@h/db",  # not PostgreSQL
        f"postgresql://u:{SECRET}@h:99999/db",  # port out of range
        f"postgresql://u:{SECRET}@h:port/db",  # port not a number
        f"postgresql://u:{SECRET}@/db",  # no host
        f"postgresql://u:{SECRET}@h:5432/",  # no database
        f"postgresql://u:{SECRET}@h:5432/db?sslmode=sometimes&x",  # libpq cannot parse it
        f"u:{SECRET}@h/db",  # no scheme
    ],
)
def test_a_malformed_url_names_the_variable_and_hides_the_password(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTREFUND_DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert "FASTREFUND_DATABASE_URL" in str(caught.value)
    assert SECRET not in str(caught.value)
    result = CliRunner().invoke(app, ["run", "--port", "1"])
    assert result.exit_code == 2
    assert "FASTREFUND_DATABASE_URL" in result.output
    assert SECRET not in result.output


def test_redact_and_settings_never_show_the_password() -> None:
    url = f"postgresql://app:{SECRET}@db.internal:5432/refunds?sslpassword={SECRET}"
    assert redact(url) == "postgresql://***@db.internal:5432/refunds?***"
    settings = Settings(database_url=url)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert Settings(database_url="").database_url is None  # set but empty: SQLite


def test_a_wrong_password_is_one_line_without_it(pg_cluster: PgCluster) -> None:
    bad = pg_cluster.url(password=SECRET)
    result = CliRunner().invoke(app, ["migrate"], env={"FASTREFUND_DATABASE_URL": bad})
    assert result.exit_code == 2
    assert SECRET not in result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert "password authentication failed" in result.output


def test_migrate_once_then_nothing_then_refuse_a_schema_ahead(pg_url: str) -> None:
    env = {"FASTREFUND_DATABASE_URL": pg_url}
    first = CliRunner().invoke(app, ["migrate"], env=env)
    assert first.exit_code == 0, first.output
    assert f"from version 0 to {latest_version()}" in first.output
    assert pg_url.split(":")[2].split("@")[0] not in first.output  # the password
    again = CliRunner().invoke(app, ["migrate"], env=env)
    assert again.exit_code == 0 and "nothing to do" in again.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
        assert {"decisions", "overrides", "store_buyers", "store_current"} <= tables
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(SchemaError, match="ahead of this code"):
        ensure_schema(pg_url)
    with pytest.raises(SchemaError, match="9999"):
        migrate(pg_url)
    ahead = CliRunner().invoke(app, ["migrate"], env=env)
    assert ahead.exit_code == 2 and "ahead" in ahead.output


def test_ensure_schema_migrates_a_new_database(pg_url: str) -> None:
    assert ensure_schema(pg_url) == latest_version()
    assert ensure_schema(pg_url) == latest_version()
