"""Service configuration from the environment (prefix FASTREFUND_) or a `.env` file."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from modelcontract import CHAMPION, DEFAULT_TRACKING_URI, MODEL_NAME, TRACKING_URI_ENV, tracking_uri

DEV_DECIDER_TOKEN = "dev-decider-token"
DEV_ADMIN_TOKEN = "dev-admin-token"


class ConfigError(ValueError):
    """The service's configuration is unusable; the message never holds a secret."""


class Settings(BaseSettings):
    """Everything the decision API needs to know about its environment.

    Tokens are secrets: they are never logged and never shown in `repr` or in an error
    (`load`). Production unless told otherwise: the built-in development tokens exist only
    when FASTREFUND_ENVIRONMENT=development is set explicitly, and are refused anywhere else
    (`check_tokens`); development serves only on a loopback address (`check_host`).
    """

    model_config = SettingsConfigDict(
        env_prefix="FASTREFUND_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "staging", "production"] = Field(
        default="production",
        description="development (built-in tokens, loopback only, NORMAL audit commits) must "
        "be asked for; unset is production.",
    )
    decider_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens allowed to ask for decisions (JSON list); in development "
        f"{DEV_DECIDER_TOKEN} when unset.",
    )
    admin_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens allowed on admin routes, and to ask for decisions; in "
        f"development {DEV_ADMIN_TOKEN} when unset.",
    )
    store_path: Path = Field(
        default=Path("data/online.db"), description="The online store (SQLite)."
    )
    audit_path: Path = Field(default=Path("data/audit.db"), description="The audit log (SQLite).")
    audit_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="FULL",
        description="SQLite synchronous mode of the audit log: FULL (fsync on every commit; "
        "survives a power loss) or NORMAL (WAL; survives a process crash, an OS crash or a "
        "power loss can lose the last commits). Default: FULL, NORMAL in development.",
    )
    policy_path: Path | None = Field(
        default=None, description="Policy file; default: the packaged one."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description=f"MLflow tracking URI; default ${TRACKING_URI_ENV} or {DEFAULT_TRACKING_URI}",
    )
    model_name: str = MODEL_NAME
    model_alias: str = CHAMPION
    max_body_bytes: int = Field(
        default=2_000_000, gt=0, description="Larger request bodies get a 413."
    )
    coalesce_max: int = Field(
        default=64,
        ge=1,
        description="Most single requests decided together in one audit transaction when "
        "they arrive in the same event-loop turn (1: each alone).",
    )
    store_check_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often to look for the store when it is missing, or for a new file "
        "in its place (deleted and materialized anew, restored).",
    )
    model_check_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often to ask the registry where the champion alias points, and load "
        "the model it moved to (0: only at startup and on the admin reload).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/database: the audit log and the "
        "online store in PostgreSQL, shared by every instance (docs/postgres.md); unset: "
        "the SQLite files of store_path and audit_path.",
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        from serving.database import check_url

        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and value.strip() == "":
            return None  # set but empty: as unset
        if isinstance(value, str):
            return SecretStr(check_url(value.strip()))
        return value

    @model_validator(mode="before")
    @classmethod
    def _development_defaults(cls, data: Any) -> Any:
        # Only an explicit FASTREFUND_ENVIRONMENT=development gets the built-in tokens and
        # the cheaper commits: a forgotten variable must not open the admin routes.
        if isinstance(data, dict) and data.get("environment") == "development":
            data = {
                "decider_tokens": [DEV_DECIDER_TOKEN],
                "admin_tokens": [DEV_ADMIN_TOKEN],
                "audit_synchronous": "NORMAL",
                **data,
            }
        return data

    @field_validator("store_path", "audit_path", "policy_path")
    @classmethod
    def _no_uri_characters(cls, value: Path | None) -> Path | None:
        # SQLite files are opened as URIs (file:PATH?mode=ro): a "?" or "#" in PATH would end
        # it there, and another file would be opened (or created) without a word.
        if value is not None and any(c in str(value) for c in "?#"):
            raise ValueError(f"{value}: a path with '?' or '#' is refused (SQLite URI syntax)")
        return value

    @model_validator(mode="after")
    def _absolute_outside_development(self) -> Settings:
        # A relative path is read from the working directory: a cron job started elsewhere
        # would refresh another store, and succeed.
        if self.environment != "development":
            paths = {"FASTREFUND_POLICY_PATH": self.policy_path}
            if self.database_url is None:
                paths |= {
                    "FASTREFUND_STORE_PATH": self.store_path,
                    "FASTREFUND_AUDIT_PATH": self.audit_path,
                }
            relative = [
                f"{name}={path}" for name, path in paths.items() if path and not path.is_absolute()
            ]
            if relative:
                raise ValueError(
                    f"{self.environment}: paths must be absolute ({', '.join(relative)}); "
                    "relative ones are only for FASTREFUND_ENVIRONMENT=development"
                )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def load(cls) -> Settings:
        """Read the settings from the environment.

        Raises:
            ConfigError: A variable is malformed; the message names it and never shows its
                value (a token could be in it).
        """
        try:
            return cls()
        except SettingsError as exc:  # a value that is not the JSON its field needs
            raise ConfigError(f"{exc} (a list is JSON, e.g. '[\"token-1\"]')") from None
        except ValidationError as exc:
            problems = [
                f"FASTREFUND_{str(err['loc'][0]).upper()}: {err['msg']}"
                if err["loc"]
                else err["msg"].removeprefix("Value error, ")  # the whole: it names its variables
                for err in exc.errors(include_input=False, include_url=False)
            ]
            raise ConfigError("; ".join(problems)) from None

    def check_tokens(self) -> None:
        """Refuse a token in both lists; outside `development`, missing, default or short
        tokens too (the API's check; jobs that do not serve, such as materialize, do not
        need tokens).

        Raises:
            ConfigError: The tokens are not fit for this environment.
        """
        deciders = {t.get_secret_value() for t in self.decider_tokens}
        if any(t.get_secret_value() in deciders for t in self.admin_tokens):
            # Which role would it have? Each token has one; the message shows none.
            raise ConfigError(
                "a token is in both FASTREFUND_DECIDER_TOKENS and FASTREFUND_ADMIN_TOKENS"
            )
        if self.environment == "development":
            return
        tokens = [t.get_secret_value() for t in [*self.decider_tokens, *self.admin_tokens]]
        if not self.admin_tokens or not self.decider_tokens:
            raise ConfigError(f"{self.environment}: set FASTREFUND_DECIDER/ADMIN_TOKENS")
        if DEV_DECIDER_TOKEN in tokens or DEV_ADMIN_TOKEN in tokens:
            raise ConfigError(f"{self.environment}: the default development tokens are refused")
        if any(len(token) < 16 for token in tokens):
            raise ConfigError(f"{self.environment}: tokens must be at least 16 characters")

    def check_host(self, host: str) -> None:
        """In `development` (built-in tokens, printed in the README), listen only on a
        loopback address: 127.0.0.0/8, ::1 or localhost.

        Raises:
            ConfigError: Development on another interface.
        """
        if self.environment != "development" or host == "localhost":
            return
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"development serves only on a loopback address (127.0.0.1, ::1), not {host}: "
                "set FASTREFUND_ENVIRONMENT=production with tokens of your own"
            )

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the setting, else $MLFLOW_TRACKING_URI, else the default."""
        return tracking_uri(self.mlflow_tracking_uri)
