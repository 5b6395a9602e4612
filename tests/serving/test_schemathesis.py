"""schemathesis against the real app served by uvicorn: every phase, every check, 0 failures.

A bounded run (`SCHEMATHESIS_EXAMPLES` examples an operation) so it stays within the test
budget; `make fuzz` runs the same command longer (benchmarks/fuzz.py, docs/reliability.md).
test_fuzz.py keeps the property tests of what may be approved; this one holds the API to its
document: status codes, bodies, content types, auth, and no 5xx.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from benchmarks.fuzz import run_schemathesis
from serving.app import create_app
from serving.config import Settings
from tests.serving.conftest import ADMIN

SCHEMATHESIS_EXAMPLES = 12


@pytest.fixture
def base_url(settings: Settings, champion_loader: object) -> Iterator[str]:
    """The app (hand-made store, stub champion) behind a real uvicorn on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.slow
def test_schemathesis_finds_no_failure_in_any_phase(base_url: str, tmp_path: Path) -> None:
    report = run_schemathesis(
        base_url,
        ADMIN["Authorization"],
        tmp_path,
        max_examples=SCHEMATHESIS_EXAMPLES,
        executable=Path(sys.executable).with_name("schemathesis"),
    )
    assert report.returncode == 0 and report.failures == 0, report.output
    assert report.cases >= 200, report.output  # the run did test something
    assert set(report.phases) >= {"examples", "coverage", "fuzzing", "stateful"}, report.phases
    print(json.dumps(report.summary()))
