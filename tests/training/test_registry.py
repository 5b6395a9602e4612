"""Training's MLflow adapter: it reaches the tracking store without showing credentials, tells
an absent alias from a registry that cannot answer, and reads tags as serving would."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from modelcontract import MODEL_NAME as MODEL
from training import registry
from training.errors import RegistryError, TrackingUnavailableError


def test_a_tracking_server_with_credentials_is_reached_and_they_are_never_printed() -> None:
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
        registry._check_reachable(f"http://user:s3cret@127.0.0.1:{port}")  # answers 200: no error
        with pytest.raises(TrackingUnavailableError) as caught:
            registry._check_reachable(f"http://user:wrong-s3cret@127.0.0.1:{port}")
        assert "s3cret" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    finally:
        server.shutdown()


def test_a_registry_that_cannot_answer_is_not_read_as_no_champion() -> None:
    class Client:
        def __init__(self, code: int):
            self.code = code

        def get_model_version_by_alias(self, name: str, alias: str) -> None:
            raise MlflowException(f"{name}@{alias}", error_code=self.code)

    for absent in (codes.RESOURCE_DOES_NOT_EXIST, codes.INVALID_PARAMETER_VALUE):
        assert registry.version_by_alias(Client(absent), MODEL, "champion") is None
    with pytest.raises(RegistryError, match="the registry did not answer"):
        registry.version_by_alias(Client(codes.TEMPORARILY_UNAVAILABLE), MODEL, "champion")


def version(tags: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(name=MODEL, version="3", tags=tags)


def test_a_version_is_read_with_the_contract_serving_loads_it_with() -> None:
    model = registry.read_registered(
        version({"threshold": "0.04", "feature_columns": '["a", "b"]', "target_bad_rate": "0.01"})
    )
    assert (model.number, model.threshold, model.feature_columns) == ("3", 0.04, ["a", "b"])
    assert model.target_bad_rate == 0.01
    assert registry.read_registered(version(model.tags.to_tags())).tags == model.tags


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({"feature_columns": '["a"]'}, "tag threshold: missing"),
        (
            {"threshold": "nan", "feature_columns": '["a"]'},
            "tag threshold: Input should be a finite",
        ),
        ({"threshold": "0.1", "feature_columns": "[]"}, "tag feature_columns: an empty list"),
        ({"threshold": "0.1", "feature_columns": "a,b"}, "tag feature_columns: not JSON"),
    ],
)
def test_a_version_serving_could_not_load_is_a_registry_error_naming_the_tag(
    tags: dict[str, str], named: str
) -> None:
    with pytest.raises(RegistryError, match=f"buyer-quality version 3: {named}"):
        registry.read_registered(version(tags))
