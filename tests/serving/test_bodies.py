"""Bounded work per body: O(n) duplicate keys, keys per object, objects, errors per item."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from serving.bodies import MAX_ERRORS, MAX_KEYS, MAX_OBJECTS, shape_problem
from tests.serving.conftest import DECIDER, URL, body

HEADERS = {**DECIDER, "content-type": "application/json"}
TWO_MB = 1_990_000  # under FASTREFUND_MAX_BODY_BYTES (2,000,000)


def _largest(make: Callable[[int], str]) -> str:
    """`make(n)` for the largest n whose text stays under TWO_MB (its length is linear in n)."""
    step = len(make(1001)) - len(make(1000))
    n = 1000 + (TWO_MB - len(make(1000))) // step
    while len(make(n)) >= TWO_MB:
        n -= 1
    return make(n)


def _keys(n: int, prefix: str = "k") -> str:
    return ",".join(f'"{prefix}{i:07d}":1' for i in range(n))  # fixed width: linear length


ADVERSARIAL = {
    # The old check counted every key for each key until the repeated one: quadratic, and
    # the repeated key is the last one here (minutes of event loop for 2 MB).
    "repeated last key": lambda n: '{"requests":[{' + _keys(n) + f',"k{n - 1:07d}":2' + "}]}",
    # One error per unknown key: ~180,000 errors turned into Python, a 14 MB answer.
    "unknown keys in an order": lambda n: (
        ('{"requests":[' + json.dumps(body(), separators=(",", ":"))[:-2] + "," + _keys(n, "x"))
        + "}}]}"
    ),
    "unknown keys in the envelope": lambda n: '{"requests":[{}],' + _keys(n) + "}",
    "objects without end": lambda n: '{"requests":[{"a":[' + ",".join(["{}"] * n) + "]}]}",
}


def _answered_within(client: TestClient, content: bytes, seconds: float) -> tuple[bool, object]:
    """Whether the batch route answers `content` within `seconds`, and the answer.

    In a thread, so that code that would take minutes fails the test instead of hanging it.
    """
    answers: list[object] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            client.post(f"{URL}/batch", content=content, headers=HEADERS)
        ),
        daemon=True,
    )
    started = time.perf_counter()
    worker.start()
    worker.join(seconds)
    return bool(answers) and time.perf_counter() - started <= seconds, answers[
        0
    ] if answers else None


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_a_2mb_adversarial_batch_is_answered_within_a_second(
    client: TestClient, shape: str
) -> None:
    content = _largest(ADVERSARIAL[shape]).encode()
    assert len(content) > 1_900_000
    # ~0.05-0.2 s expected: 1 s is a bound, not a benchmark. The best of three tries, since
    # a noisy machine can only add time; old code took minutes.
    for _ in range(3):
        answered, response = _answered_within(client, content, 1.0)
        if answered:
            break
    assert answered, f"{shape}: not answered within 1 s"
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert len(response.content) < 1_000  # type: ignore[attr-defined]


def test_a_repeated_key_is_found_in_linear_time_and_named() -> None:
    keys = ",".join(f'"k{i}":1' for i in range(MAX_KEYS - 1))
    problem = shape_problem(f'{{{keys},"k{MAX_KEYS - 2}":2}}'.encode())
    assert problem == {
        "loc": ["body", f"k{MAX_KEYS - 2}"],
        "msg": "key repeated in one object",
        "type": "duplicate_key",
    }
    assert shape_problem(f"{{{keys}}}".encode()) is None


def test_a_huge_integer_does_not_hide_a_repeated_key() -> None:
    # Valid JSON, over Python's int-conversion limit: the check must still read the body.
    text = '{"n":' + "9" * 5000 + ',"is_virtual":true,"is_virtual":false}'
    assert shape_problem(text.encode())["type"] == "duplicate_key"  # type: ignore[index]


@pytest.mark.parametrize("route", [URL, f"{URL}/batch"])
def test_an_object_of_too_many_keys_is_refused_whole(client: TestClient, route: str) -> None:
    request = body("KEYS-1")
    request["order"].update({f"x{i}": 1 for i in range(MAX_KEYS + 1 - len(request["order"]))})
    payload = request if route == URL else {"requests": [body("KEYS-0"), request]}
    response = client.post(route, json=payload, headers=DECIDER)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_many_keys"
    del request["order"]["x0"]  # MAX_KEYS keys: each unknown key is the item's own 422
    response = client.post(f"{URL}/batch", json={"requests": [request]}, headers=DECIDER)
    assert response.json()["results"][0]["status"] == 422
    assert client.get(f"{URL}/KEYS-0", headers=DECIDER).status_code == 404


def test_a_body_of_too_many_objects_is_refused_whole(client: TestClient) -> None:
    filler = {"requests": [body("OBJ-0"), {"a": [{}] * MAX_OBJECTS}]}
    response = client.post(f"{URL}/batch", json=filler, headers=DECIDER)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_many_objects"
    filler["requests"][1] = {"a": [{}] * (MAX_OBJECTS - 4)}  # the envelope and OBJ-0: 3
    response = client.post(f"{URL}/batch", json=filler, headers=DECIDER)
    assert [r["status"] for r in response.json()["results"]] == [200, 422]


def test_errors_are_capped_per_item_and_counted(client: TestClient) -> None:
    item = {f"k{i}": 1 for i in range(30)}  # 30 unknown keys and 4 missing fields
    response = client.post(f"{URL}/batch", json={"requests": [item, item]}, headers=DECIDER)
    for result in response.json()["results"]:
        errors = result["error"]
        assert len(errors) == MAX_ERRORS + 1
        assert errors[-1] == {
            "loc": [],
            "msg": f"{34 - MAX_ERRORS} more errors",
            "type": "too_many_errors",
        }
    single = client.post(URL, json=item, headers=DECIDER).json()["detail"]
    assert len(single) == MAX_ERRORS + 1
    assert single[-1]["loc"] == ["body"]
