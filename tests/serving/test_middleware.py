"""The ASGI middlewares and the error handlers: the body-size limit, the decision lane (chunks, auth
before the body, a root path, other methods) and 503 never 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import serving.middleware
from tests.serving.conftest import (
    ADMIN,
    DECIDER,
    URL,
    body,
)


def test_not_json_is_422_and_an_oversized_body_is_413(client: TestClient) -> None:
    headers = {**DECIDER, "content-type": "application/json"}
    assert client.post(URL, content=b"{not json", headers=headers).status_code == 422
    assert client.post(URL, content=b"[]", headers=headers).status_code == 422
    huge = b'{"refund_id": "' + b"x" * 3_000_000 + b'"}'
    assert client.post(URL, content=huge, headers=headers).status_code == 413

    def chunked(data: bytes) -> Iterator[bytes]:  # no Content-Length: the size is counted
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    assert client.post(URL, content=chunked(huge), headers=headers).status_code == 413
    # A FastAPI route (not the decision lane) reading a chunked body: 413 as well, not the
    # 400 FastAPI makes of an error while it reads the body.
    admin = {**ADMIN, "content-type": "application/json"}
    revoke = "/v1/admin/buyers/B_GOOD/revoke"
    response = client.post(revoke, content=chunked(huge), headers=admin)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def _asgi_post(client: TestClient, path: str, chunks: list[bytes], headers: list) -> list:
    """POST straight through the app's ASGI callable, the body in `chunks` (one ASGI message
    each, as a server delivers a body that arrives in pieces); returns the messages sent."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr]
    return sent


def test_a_body_in_many_chunks_is_read_whole(client: TestClient) -> None:
    data = json.dumps(body("CHUNKED")).encode()
    chunks = [data[start : start + 40] for start in range(0, len(data), 40)] + [b""]
    token = [(b"authorization", DECIDER["Authorization"].encode())]
    sent = _asgi_post(client, URL, chunks, token)
    start, answer = sent[0], json.loads(sent[1]["body"])
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    assert (answer["refund_id"], answer["decision"]) == ("CHUNKED", "auto_approve")


def test_behind_a_root_path_the_decision_routes_answer_through_fastapi(
    make_client: Callable[..., TestClient],
) -> None:
    # Under a root_path the paths do not match the decision lane's; FastAPI routes the same
    # requests to the same code.
    client = make_client()
    prefixed = TestClient(client.app, root_path="/refunds")
    url = f"/refunds{URL}"
    answer = prefixed.post(url, json=body("ROOT1"), headers=DECIDER)
    assert (answer.status_code, answer.json()["decision"]) == (200, "auto_approve")
    batch = prefixed.post(f"{url}/batch", json={"requests": [body("ROOT2")]}, headers=DECIDER)
    assert batch.json()["results"][0]["decision"]["decision"] == "auto_approve"
    assert prefixed.post(url, json=body("ROOT3")).status_code == 401
    assert prefixed.post(url, content=b"{", headers=DECIDER).status_code == 422


def test_an_unauthenticated_decision_is_refused_before_its_body_is_read(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    read = serving.middleware._body

    async def spy(receive: Any) -> bytes:
        asked.append(True)
        return await read(receive)

    monkeypatch.setattr(serving.middleware, "_body", spy)
    for path in (URL, f"{URL}/batch"):
        sent = _asgi_post(client, path, [b"{}"], [])
        assert sent[0]["status"] == 401
    assert asked == []
    token = [(b"authorization", DECIDER["Authorization"].encode())]
    assert _asgi_post(client, URL, [b"{}"], token)[0]["status"] == 422  # the spy can see reads
    assert asked == [True]


def test_an_unexpected_failure_on_a_decision_route_is_503_never_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(requests: object) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "decide", broken)
    monkeypatch.setattr(client.app.state.coalescer, "_decide", broken)  # type: ignore[attr-defined]
    for url, payload in ((URL, body("RF-BUG")), (f"{URL}/batch", {"requests": [body("RF-BUG")]})):
        response = client.post(url, json=payload, headers=DECIDER)
        assert response.status_code == 503
        assert "merchant review" in response.json()["detail"]


def test_other_methods_on_the_decision_paths_go_through_fastapi(client: TestClient) -> None:
    # GET .../batch is the stored-decision route for a refund called "batch".
    assert client.get(f"{URL}/batch", headers=DECIDER).status_code == 404
    assert client.get(URL, headers=DECIDER).status_code == 405
    slash = client.post(f"{URL}/", json=body(), headers=DECIDER, follow_redirects=False)
    assert slash.status_code == 307  # FastAPI's redirect to the path without the slash
