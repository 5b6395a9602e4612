"""`make fuzz`: schemathesis (every phase, `--checks all`) against `python -m serving run`.

Builds a simulated world with a real champion in a fresh MLflow (benchmarks/reliability.py),
starts the server on 127.0.0.1, and runs the schemathesis CLI with an admin token (admins may
call every route) and the document's custom format (benchmarks/schemathesis_hooks.py).
tests/serving/test_schemathesis.py runs the same command with fewer examples.

    .venv/bin/python benchmarks/fuzz.py --examples 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().with_name("schemathesis_hooks.py")
PHASES = "examples,coverage,fuzzing,stateful"


@dataclass
class FuzzReport:
    """What a schemathesis run tried and found (from its JSON report)."""

    returncode: int
    output: str
    cases: int
    failures: int
    errors: int
    operations: int
    phases: dict[str, str]
    seconds: float

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("output",)}


def run_schemathesis(
    base_url: str,
    authorization: str,
    work: Path,
    max_examples: int,
    executable: Path | None = None,
    seed: int = 1,
    timeout: float = 1800,
) -> FuzzReport:
    """Run `schemathesis run` on the server at `base_url`; the token never reaches the output
    (schemathesis filters the Authorization header)."""
    report = work / "schemathesis.json"
    command = [
        str(executable or Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--header",
        f"Authorization: {authorization}",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
        # Path ids are printable ASCII; with other codecs schemathesis sent a schema-valid id
        # as U+FFFD (lossy path encoding), a 422 that was its own doing.
        "--generation-codec",
        "ascii",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    done = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    if not report.is_file():
        return FuzzReport(done.returncode, output, 0, -1, -1, 0, {}, 0.0)
    data = json.loads(report.read_text())
    return FuzzReport(
        returncode=done.returncode,
        output=output,
        cases=data["test_cases"]["generated"],
        failures=data["test_cases"]["with_failures"],
        errors=data["test_cases"]["errored"] + len(data["errors"]),
        operations=data["operations"]["tested"],
        phases={name: phase["status"] for name, phase in data["phases"].items()},
        seconds=round(data["running_time"], 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="max examples an operation")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.reliability import ADMIN, Server, build_world, running, server_env

    with tempfile.TemporaryDirectory(prefix="fastrefund-fuzz-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        world = build_world(root)
        print(f"world built in {time.monotonic() - started:.0f} s")
        server = Server(server_env(world, root / "audit.db"), root / "server.log")
        with running(server):
            report = run_schemathesis(
                server.base, ADMIN["Authorization"], root, args.examples, seed=args.seed
            )
        print(report.output[-3000:])
        print(json.dumps(report.summary(), indent=2))
    sys.exit(0 if report.returncode == 0 and report.failures == 0 else 1)


if __name__ == "__main__":
    main()
