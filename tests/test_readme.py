"""The README's commands work as written: the walkthrough, the server and the curl examples."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def console_commands() -> list[str]:
    """Every `$ ` line of the README's console blocks, in order."""
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.DOTALL)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def _run(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_shows_the_two_commands_first() -> None:
    first_block = re.search(r"```console\n(.*?)```", README, flags=re.DOTALL)
    assert first_block is not None
    assert first_block.group(1).split()[:2] == ["make", "demo"]
    assert "make test" in first_block.group(1)


@pytest.mark.slow
def test_walkthrough_server_and_curl_examples_run_as_written(tmp_path: Path) -> None:
    commands = console_commands()
    python = [c for c in commands if c.startswith(".venv/bin/python -m ") and " run " not in c]
    exports = [c for c in python if "export-decisions" in c]  # need the decisions made below
    walkthrough = [c for c in python if c not in exports]
    server = next(c for c in commands if c.startswith(".venv/bin/python -m serving run"))
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(walkthrough) >= 7 and len(curls) >= 4
    port = int(re.search(r"--port (\d+)", server).group(1))
    if not _port_free(port):
        pytest.skip(f"port {port} is busy: the README's server cannot start here")

    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTREFUND_", "MLFLOW_"))}
    # `$ export NAME=value` lines hold for the commands after them, as in one shell.
    env.update(re.findall(r"^export (\w+)=(\S+)$", "\n".join(commands), flags=re.MULTILINE))
    for command in walkthrough:
        _run(command, tmp_path, env)
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "data" / "online.db").is_file()

    process = subprocess.Popen(
        shlex.split(server),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the README's server did not become ready")
        answers = [json.loads(_run(command, tmp_path, env)) for command in curls]
    finally:
        process.terminate()
        process.wait(timeout=20)
    decision, replay, revoked, ready = answers
    assert exports and all("1 decision, " in _run(command, tmp_path, env) for command in exports)
    assert decision["decision"] in {"auto_approve", "manual_review"}
    assert decision["model"]["name"] == "buyer-quality"
    assert replay["refund_id"] == "RF-readme-1" and replay["decision"] == decision["decision"]
    assert revoked["revoked"] is True
    assert ready["ready"] is True and ready["checks"]["model"].startswith("ok")


def test_the_mlflow_ui_command_exists() -> None:
    ui = next(c for c in console_commands() if "mlflow ui" in c)
    assert (ROOT / ui.split()[0]).exists()
