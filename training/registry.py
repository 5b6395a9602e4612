"""The MLflow adapter of training: tracking store, experiment, model versions and aliases.

Everything in training that talks to MLflow lives here, so the rest of `training` is plain
Python. The names it writes and reads (model, aliases, tags, the default URI) are the
contract's (`modelcontract`), shared with serving. Nothing happens at import: the tracking
URI is resolved and set when a job connects.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import lightgbm as lgb
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from modelcontract import CHAMPION, PREVIOUS, ModelVersionTags, TagError, redact_uri, tracking_uri
from modelcontract.artifact import LINEAR_FAMILY, ArtifactError, file_sha256, model_file
from modelcontract.linear import LinearModel
from training.errors import RegistryError, TrackingUnavailableError

ARTIFACT_ROOT = Path("mlruns")


def _check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    shown = redact_uri(uri)  # a password or token in the URI is never printed
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        # urllib does not read user info from a URL: it goes in a header, as requests does.
        health = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))
        request = urllib.request.Request(f"{health.rstrip('/')}/health")
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            request.add_header("Authorization", "Basic " + b64encode(user.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                if reply.status != 200:
                    raise TrackingUnavailableError(
                        f"tracking server {shown} answered {reply.status}"
                    )
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailableError(
                f"tracking server {shown} cannot be reached ({exc}); check MLFLOW_TRACKING_URI"
            ) from exc
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            raise TrackingUnavailableError(
                f"tracking database {path}: folder {path.parent} does not exist"
            )
    elif uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        raise TrackingUnavailableError(
            f"tracking URI {uri!r} is MLflow's plain-file store, which this project does not "
            "use; set MLFLOW_TRACKING_URI to sqlite:///PATH or a tracking server's http(s) URL"
        )


def connect(uri: str | None = None) -> MlflowClient:
    """Point MLflow at the tracking store and prove it answers.

    Raises:
        TrackingUnavailableError: The store cannot be reached or is the plain-file store.
    """
    uri = uri or tracking_uri()
    _check_reachable(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means no usable store
        # e.g. a database URI whose driver is not installed (ModuleNotFoundError)
        raise TrackingUnavailableError(
            f"tracking store {redact_uri(uri)} does not answer: {type(exc).__name__}: "
            + str(exc).replace(uri, redact_uri(uri))
        ) from exc
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it with artifacts under mlruns/NAME beside a SQLite store.

    A tracking server keeps its own artifact root; a SQLite store gets an explicit one in
    the database's folder (./mlruns for the default ./mlflow.db), so its artifacts never land
    in whatever the working directory is. MLflow records that root as an absolute path: a
    copied or moved folder's database still points at the original's artifacts (share runs
    through a tracking server instead).
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_location = None
    uri = mlflow.get_tracking_uri()  # what connect() set
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        artifact_location = (database.parent / ARTIFACT_ROOT / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


# What MLflow answers for a model or alias that does not exist (SQL store and REST alike).
_ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def version_by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when the model or alias does not exist.

    Raises:
        RegistryError: The registry could not say (locked, unreachable): "no champion" read
            from a passing error would promote a challenger without comparing it.
    """
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise RegistryError(f"{model_name}@{alias}: the registry did not answer: {exc}") from exc


def _model_file(model_name: str, version: str, folder: str) -> tuple[str, Path]:
    """Download a version's artifacts into `folder`; its family and model file, checked."""
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version}", dst_path=folder
    )
    return model_file(local)


def load_model(model_name: str, version: str) -> lgb.Booster | LinearModel:
    """A registered version's model, read from its file after its `MLmodel` is checked
    (`modelcontract.artifact.model_file`): a native LightGBM Booster from its text model
    file, or a logistic regression from its JSON document. Never unpickled.

    Raises:
        RegistryError: Its files are missing, unreadable or neither shape.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="fastrefund-gate-") as folder:
            family, path = _model_file(model_name, version, folder)
            if family == LINEAR_FAMILY:
                return LinearModel.from_json(path.read_bytes())
            return lgb.Booster(model_file=str(path))
    except (
        MlflowException,
        OSError,
        ArtifactError,
        ValidationError,
        lgb.basic.LightGBMError,
    ) as exc:
        raise RegistryError(f"{model_name} version {version}: model not loadable: {exc}") from exc


def model_sha256(model_name: str, version: str) -> str:
    """The sha256 of a registered version's model file (the Booster's or the linear
    document; the gate records it and serving checks it at load).

    Raises:
        RegistryError: Its files are missing, unreadable or neither shape.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="fastrefund-gate-") as folder:
            return file_sha256(_model_file(model_name, version, folder)[1])
    except (MlflowException, OSError, ArtifactError) as exc:
        raise RegistryError(f"{model_name} version {version}: model not readable: {exc}") from exc


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version with the tags serving relies on, read back and checked."""

    version: ModelVersion
    tags: ModelVersionTags

    @property
    def number(self) -> str:
        """The version number as MLflow spells it."""
        return str(self.version.version)

    @property
    def threshold(self) -> float:
        """Its premium threshold: premium iff score <= threshold."""
        return self.tags.threshold

    @property
    def feature_columns(self) -> list[str]:
        """Its input columns, in the Booster's order."""
        return list(self.tags.feature_columns)

    @property
    def target_bad_rate(self) -> float | None:
        """The bad rate its threshold was chosen for, when recorded."""
        return self.tags.target_bad_rate


def read_registered(version: ModelVersion) -> RegisteredModel:
    """Parse a version's tags as serving would (the contract's `ModelVersionTags`).

    Raises:
        RegistryError: A tag serving needs is missing or unreadable: serving could not load
            this version, so the gate cannot judge it.
    """
    try:
        tags = ModelVersionTags.parse(version.tags, f"{version.name} version {version.version}")
    except TagError as exc:
        raise RegistryError(str(exc)) from exc
    return RegisteredModel(version, tags)


def move_champion(client: MlflowClient, model_name: str, version: str) -> str | None:
    """Give `version` the champion alias; the old champion keeps `previous`.

    Returns:
        The previous champion's version, if there was one.
    """
    old = version_by_alias(client, model_name, CHAMPION)
    if old is not None and str(old.version) != str(version):
        client.set_registered_model_alias(model_name, PREVIOUS, str(old.version))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return None if old is None else str(old.version)
