"""Where the MLflow tracking store and registry are, and how such a URI may be shown."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# SQLite in the working directory (the project root under make): MLflow 3's plain-file
# store is legacy and errors by default, so it is never the default.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str | None = None) -> str:
    """The tracking URI: `configured` when given, else `$MLFLOW_TRACKING_URI`, else SQLite.

    Args:
        configured: A URI set in a job's or the service's own settings, if any.
    """
    return configured or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI


def redact_uri(uri: str) -> str:
    """A URI as it may be shown in a log, an error or a metric: user info and query (where
    passwords and tokens go) masked: "postgresql://u:secret@h/db?sslkey=k" as
    "postgresql://***@h/db?***"."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc and not parts.query:
        return uri  # as it is: urlunsplit would also turn "sqlite:///x" into "sqlite:/x"
    netloc = "***@" + parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))
