"""The OpenAPI document is valid and exact, and a client generated from it decides a refund."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from pydantic import ValidationError

from serving.schemas import AMOUNT_PATTERN, Order
from tests.serving.conftest import ADMIN, DECIDER, body

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture
def doc(client: TestClient) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _validator(doc: dict, schema: dict) -> Draft202012Validator:
    # The document's components beside the schema, so "#/components/..." resolves in it.
    return Draft202012Validator({**schema, "components": doc["components"]})


def test_the_document_is_valid_openapi_and_every_ref_resolves(doc: dict) -> None:
    validate(doc)
    refs = _refs(doc)
    assert "#/components/schemas/DecisionRequest" in refs
    assert all(ref.startswith("#/components/") for ref in refs), refs
    for ref in refs:
        _resolve(doc, ref)  # KeyError if it does not
    order = doc["components"]["schemas"]["Order"]
    assert order["properties"]["paid_amount"]["type"] == "string"
    assert order["properties"]["paid_amount"]["pattern"] == AMOUNT_PATTERN


# What each route can answer, from its code: the document must say exactly these.
STATUSES = {
    ("post", "/v1/refund-decisions"): {200, 401, 409, 413, 422, 503},
    ("post", "/v1/refund-decisions/batch"): {200, 401, 413, 422, 503},
    ("get", "/v1/refund-decisions/{refund_id}"): {200, 401, 404, 503},
    ("get", "/v1/admin/buyers/{buyer_id}"): {200, 401, 403, 422, 503},
    ("post", "/v1/admin/buyers/{buyer_id}/revoke"): {200, 401, 403, 413, 422, 503},
    ("post", "/v1/admin/buyers/{buyer_id}/restore"): {200, 401, 403, 413, 422, 503},
    ("get", "/v1/admin/shops/{shop_id}"): {200, 401, 403, 422, 503},
    ("put", "/v1/admin/shops/{shop_id}/eligibility"): {200, 401, 403, 413, 422, 503},
    ("post", "/v1/admin/model/reload"): {200, 401, 403, 503},
    ("get", "/healthz"): {200},
    ("get", "/readyz"): {200, 503},
    ("get", "/metrics"): {200},
}


def test_every_status_is_documented_with_its_body_and_an_example(doc: dict) -> None:
    operations = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert set(operations) == set(STATUSES)
    for key, operation in operations.items():
        assert {int(s) for s in operation["responses"]} == STATUSES[key], key
        for status, response in operation["responses"].items():
            ((media, content),) = response["content"].items()
            assert media == ("text/plain" if key[1] == "/metrics" else "application/json")
            assert "example" in content, (key, status)
            _validator(doc, content["schema"]).validate(content["example"])
        if "requestBody" in operation:
            content = operation["requestBody"]["content"]["application/json"]
            _validator(doc, content["schema"]).validate(content["example"])
        assert ("security" in operation) == key[1].startswith("/v1/"), key


def test_metrics_are_documented_and_served_as_text(client: TestClient, doc: dict) -> None:
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_the_documented_request_body_is_the_one_the_route_takes(doc: dict) -> None:
    schema = _validator(doc, {"$ref": "#/components/schemas/DecisionRequest"})
    assert schema.is_valid(body())
    for wrong in ({"paid_amount": 29999}, {"paid_amount": "0.00"}, {"is_virtual": 0}):
        payload = body()
        payload["order"].update(wrong)
        assert not schema.is_valid(payload), wrong


@given(st.from_regex(AMOUNT_PATTERN, fullmatch=True) | st.text(max_size=12))
def test_the_amount_pattern_is_exactly_what_the_api_accepts(text: str) -> None:
    order = {**body()["order"], "paid_amount": text}
    try:
        Order.model_validate(order)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (re.search(AMOUNT_PATTERN, text) is not None), text


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/v1/admin/buyers/B_GOOD/revoke", "post", ADMIN),
        ("/v1/admin/shops/S_OK/eligibility", "put", ADMIN),
        ("/v1/refund-decisions", "post", DECIDER),
        ("/v1/refund-decisions/batch", "post", DECIDER),
    ],
)
def test_a_body_that_is_not_utf8_json_is_a_422_naming_the_body(
    client: TestClient, path: str, method: str, headers: dict
) -> None:
    # FastAPI's own answer to this was a 400 "There was an error parsing the body".
    response = client.request(
        method,
        path,
        content=b'{"reason": "\xff\xfe"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_a_generated_client_makes_a_real_decision(
    client: TestClient, doc: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    (tmp_path / "config.yaml").write_text("post_hooks: []\nproject_name_override: refunds\n")
    done = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--config", "config.yaml"]
        + ["--output-path", "refunds_client", "--meta", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "Warning" not in done.stdout, done.stdout + done.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    api = importlib.import_module("refunds_client")
    decide = importlib.import_module("refunds_client.api.decisions.decide")
    models = importlib.import_module("refunds_client.models")

    generated = api.AuthenticatedClient(base_url="http://testserver", token="unused")
    client.headers.update(DECIDER)  # set_httpx_client: the client is used as it is
    generated.set_httpx_client(client)  # the real app, through the generated code
    request = models.DecisionRequest.from_dict(body("RF-generated"))
    answer = decide.sync(client=generated, body=request)
    assert isinstance(answer, models.DecisionResponse), answer
    assert answer.decision.value == "auto_approve" and answer.reasons == []
    assert answer.buyer.premium is True

    request.order.paid_amount = "300.00"
    request.refund_id = "RF-generated-2"
    answer = decide.sync(client=generated, body=request)
    assert answer.decision.value == "manual_review"
    assert [r.code for r in answer.reasons] == ["AMOUNT_NOT_BELOW_LIMIT"]
    conflict = decide.sync(client=generated, body=request.from_dict(body("RF-generated-2")))
    assert isinstance(conflict, models.ConflictBody) and conflict.refund_id == "RF-generated-2"
