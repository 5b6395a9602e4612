"""Reliability runs against the real server (`python -m serving run`), with figures.

- `crash`: concurrent decisions, SIGKILL mid-load, restart; then every decision answered 200
  must be in the audit log as answered, no refund_id twice, replays return the stored answers,
  and the velocity limits count the approvals answered before the kill.
- `swaps`: sustained load while the MLflow registry's champion alias moves between two
  versions (and the servers reload) and `materialize` replaces the store between two as-of
  dates: no failed request, every answer's model version was champion while it was in
  flight, no batch answered from two store snapshots.
- `disk` (benchmarks/reliability_disk.py, root): the audit log's file system filled, then
  turned read-only, under load: decisions answered 503, nothing answered that is not recorded,
  and the same server resumes when the disk is writable again.

Everything is driven through the public surface: the CLI (`features simulate`, `serving
materialize`, `serving run`, `serving export-decisions`) and HTTP. The tests
(tests/serving/test_reliability.py) run a few rounds with the same code; the figures in
docs/reliability.md come from:

    .venv/bin/python benchmarks/reliability.py crash --rounds 20
    .venv/bin/python benchmarks/reliability.py crash --rounds 20 --synchronous FULL
    .venv/bin/python benchmarks/reliability.py swaps --promotions 10
    .venv/bin/python benchmarks/reliability.py disk --rounds 5  # root
    .venv/bin/python benchmarks/reliability.py disk --rounds 5 --synchronous FULL

Load only ever targets 127.0.0.1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages and tests
    sys.path.insert(0, str(ROOT))

from features.simulate import simulate, write_world  # noqa: E402
from serving.policy import load_policy  # noqa: E402
from tests.serving.champions import MODEL, register_champion, training_frame  # noqa: E402

PYTHON = sys.executable
DECIDER_TOKEN = "reliability-decider-token-0001"
ADMIN_TOKEN = "reliability-admin-token-00001"
DECIDER = {"Authorization": f"Bearer {DECIDER_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/v1/refund-decisions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class World:
    """A simulated log, its online store, and a registry with two versions (v1 champion)."""

    root: Path
    log_dir: Path
    store: Path
    uri: str
    versions: tuple[str, str]
    buyers: list[str]
    shops: list[str]
    as_of: tuple[str, str]  # two as-of dates `materialize` alternates between (swaps)


def build_world(root: Path, buyers: int = 1500, seed: int = 11) -> World:
    """Simulate, materialize with the CLI, register two champions-to-be in a fresh MLflow."""
    simulated = simulate(buyers=buyers, shops=30, days=300, seed=seed)
    log_dir = root / "log"
    write_world(simulated, log_dir)
    store = root / "online.db"
    end = simulated.log.end.normalize()
    as_of = (str((end - pd.Timedelta(days=30)).date()), str(end.date()))
    materialize(log_dir, store, as_of[1])
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame, y = training_frame(simulated.log, str((end - pd.Timedelta(days=120)).date()))
    first, _, _ = register_champion(uri, root / "artifacts", frame, y, 0.6, seed=0)
    second, _, _ = register_champion(uri, root / "artifacts", frame, y, 0.4, seed=1, alias=None)
    orders = simulated.log.table("orders")
    return World(
        root,
        log_dir,
        store,
        uri,
        (first, second),
        sorted(orders["buyer_id"].unique().tolist()),
        sorted(orders["shop_id"].unique().tolist()),
        as_of,
    )


def materialize(log_dir: Path, store: Path, as_of: str) -> None:
    """`python -m serving materialize`, as cron runs it."""
    subprocess.run(
        [PYTHON, "-m", "serving", "materialize", "--data", str(log_dir), "--store", str(store)]
        + ["--as-of", as_of],
        check=True,
        capture_output=True,
        cwd=ROOT,
        # As the servers run: development, explicitly (production wants absolute paths).
        env={**os.environ, "FASTREFUND_ENVIRONMENT": "development"},
    )


def server_env(world: World, audit: Path, synchronous: str = "NORMAL", **extra: str) -> dict:
    """The environment of a server on `world`: tokens of its own, development explicitly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTREFUND_", "MLFLOW_"))}
    env.update(
        FASTREFUND_ENVIRONMENT="development",
        FASTREFUND_DECIDER_TOKENS=json.dumps([DECIDER_TOKEN]),
        FASTREFUND_ADMIN_TOKENS=json.dumps([ADMIN_TOKEN]),
        FASTREFUND_STORE_PATH=str(world.store),
        FASTREFUND_AUDIT_PATH=str(audit),
        FASTREFUND_AUDIT_SYNCHRONOUS=synchronous,
        FASTREFUND_MLFLOW_TRACKING_URI=world.uri,
        FASTREFUND_MODEL_CHECK_SECONDS="0",
        FASTREFUND_STORE_CHECK_SECONDS="0.5",
        FASTREFUND_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class Server:
    """`python -m serving run` on a free port of 127.0.0.1."""

    def __init__(self, env: dict, log: Path):
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0, ready: bool = True) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "serving", "run", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.base}/readyz", timeout=2)
                if answer.status_code == 200 or (not ready and answer.status_code == 503):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready within {timeout:.0f} s: see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing finished."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


_serial = itertools.count()


def request_for(world: World, rng: random.Random, prefix: str) -> dict:
    """A request every hard rule on the request itself passes, for a random buyer and shop."""
    n = next(_serial)
    return {
        "refund_id": f"{prefix}-{n}",
        "requested_at": "2026-06-01T02:00:00Z",
        "kind": "refund_only",
        "order": {
            "order_id": f"O-{prefix}-{n}",
            "buyer_id": rng.choice(world.buyers),
            "shop_id": rng.choice(world.shops),
            "category": "apparel",
            "is_virtual": False,
            "is_custom": False,
            "paid_amount": f"{rng.randint(1, 29_999) / 100:.2f}",
            "currency": "CNY",
            "status": "paid_unshipped",
            "tracking_number": None,
        },
    }


@dataclass
class Sent:
    """One request and what came back (status None: no answer, e.g. the server was killed)."""

    payload: dict
    started: float
    ended: float
    status: int | None
    answer: dict | None


@dataclass
class Load:
    """Client threads sending decisions (singles, or batches of `batch`) until stopped."""

    world: World
    base: str
    threads: int = 8
    batch: int = 0
    prefix: str = "L"
    max_requests: int = 50_000
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _run(self, seed: int) -> None:
        rng = random.Random(f"{self.prefix}-{seed}")
        with httpx.Client(base_url=self.base, headers=DECIDER, timeout=30) as client:
            while not self._stop.is_set() and len(self.sent) < self.max_requests:
                if self.batch:
                    items = [request_for(self.world, rng, self.prefix) for _ in range(self.batch)]
                    path, payload = f"{URL}/batch", {"requests": items}
                else:
                    path, payload = URL, request_for(self.world, rng, self.prefix)
                started = time.monotonic()
                try:
                    response = client.post(path, json=payload)
                    status, answer = response.status_code, response.json()
                except (httpx.HTTPError, ValueError):
                    status, answer = None, None
                    time.sleep(0.05)  # the server is down: do not spin
                with self._lock:
                    self.sent.append(Sent(payload, started, time.monotonic(), status, answer))


def export(audit: Path, out: Path) -> pd.DataFrame:
    """The audit log's decisions through `python -m serving export-decisions`."""
    subprocess.run(
        [PYTHON, "-m", "serving", "export-decisions", "--audit", str(audit), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return pd.read_csv(out, dtype={"refund_id": str, "buyer_id": str, "model_version": str})


@dataclass
class CrashReport:
    rounds: int = 0
    requests: int = 0
    answered: int = 0
    approved_answered: int = 0
    unanswered: int = 0
    other_status: int = 0
    lost: int = 0
    doubled: int = 0
    changed: int = 0
    replays: int = 0
    replay_mismatches: int = 0
    velocity_probes: int = 0
    velocity_missed: int = 0
    over_velocity: int = 0
    records: int = 0


def crash_rounds(
    world: World,
    work: Path,
    rounds: int,
    synchronous: str = "NORMAL",
    load_seconds: tuple[float, float] = (0.8, 2.0),
    threads: int = 8,
    seed: int = 0,
) -> CrashReport:
    """`rounds` times: load, SIGKILL mid-load, restart, check everything answered so far."""
    rng = random.Random(seed)
    audit = work / "audit.db"
    report = CrashReport()
    answered: dict[str, Sent] = {}
    limits = load_policy().velocity
    server = Server(server_env(world, audit, synchronous), work / "server.log")
    server.start()
    try:
        for round_ in range(rounds):
            with Load(world, server.base, threads=threads, prefix=f"C{seed}-{round_}") as load:
                time.sleep(rng.uniform(*load_seconds))
                server.kill()  # mid-load: requests in flight get no answer
            report.rounds += 1
            report.requests += len(load.sent)
            for sent in load.sent:
                if sent.status == 200:
                    answered[sent.payload["refund_id"]] = sent
                    report.answered += 1
                    report.approved_answered += sent.answer["decision"] == "auto_approve"
                elif sent.status is None:
                    report.unanswered += 1
                else:
                    report.other_status += 1
            server.start()
            fresh = [s for s in load.sent if s.status == 200]
            with httpx.Client(base_url=server.base, headers=DECIDER, timeout=30) as client:
                for sent in fresh:  # stored as answered
                    stored = client.get(f"{URL}/{sent.payload['refund_id']}")
                    if stored.status_code != 200:
                        report.lost += 1
                    elif stored.json() != sent.answer:
                        report.changed += 1
                for sent in rng.sample(fresh, min(len(fresh), 40)):  # replays after restart
                    again = client.post(URL, json=sent.payload)
                    report.replays += 1
                    body = again.json()
                    if (
                        again.status_code != 200
                        or body.get("replayed") is not True
                        or {**body, "replayed": False} != sent.answer
                    ):
                        report.replay_mismatches += 1
                # Buyers at the daily limit by answered approvals alone: one more is refused.
                approvals = Counter(
                    s.payload["order"]["buyer_id"]
                    for s in answered.values()
                    if s.answer["decision"] == "auto_approve"
                )
                full = [b for b, n in approvals.items() if n >= limits.max_auto_approvals_per_day]
                for buyer_id in rng.sample(full, min(len(full), 10)):
                    probe = request_for(world, rng, f"V{seed}-{round_}")
                    probe["order"]["buyer_id"] = buyer_id
                    body = client.post(URL, json=probe).json()
                    report.velocity_probes += 1
                    codes = [r["code"] for r in body.get("reasons", [])]
                    if body.get("decision") == "auto_approve" or "VELOCITY_LIMIT" not in codes:
                        report.velocity_missed += 1
        server.stop()
        frame = export(audit, work / "decisions.csv")
    finally:
        server.stop()
    report.records = len(frame)
    report.doubled = int(frame["refund_id"].duplicated().sum())
    report.lost += len(set(answered) - set(frame["refund_id"]))
    by_id = frame.drop_duplicates("refund_id").set_index("refund_id")["decision"]
    report.changed += sum(
        by_id.get(i, s.answer["decision"]) != s.answer["decision"] for i, s in answered.items()
    )
    approved = frame[frame["decision"] == "auto_approve"]
    # Every approval in the log within the velocity limits: the whole run is within one day.
    report.over_velocity = int(
        (approved.groupby("buyer_id").size() > limits.max_auto_approvals_per_day).sum()
    )
    return report


@dataclass
class SwapReport:
    promotions: int = 0
    materializations: int = 0
    requests: int = 0
    decisions: int = 0
    failed: int = 0
    wrong_version: int = 0
    batches: int = 0
    mixed_batches: int = 0
    unknown_scores: int = 0
    snapshots_seen: int = 0


def swaps(world: World, work: Path, promotions: int, seed: int = 0) -> SwapReport:
    """Promotions and store refreshes under a sustained load of singles and batches."""
    rng = random.Random(seed)
    report = SwapReport()
    client = MlflowClient(world.uri)
    first, second = world.versions
    client.set_registered_model_alias(MODEL, "champion", first)
    # Champion intervals (monotonic time): the alias moves, then every server reloads; an
    # answer is right if its version was champion at some moment while it was in flight.
    timeline: list[tuple[float, str]] = [(0.0, first)]
    reloaded: list[float] = []
    server = Server(server_env(world, work / "audit.db"), work / "server.log")
    with running(server):
        admin = httpx.Client(base_url=server.base, headers=ADMIN, timeout=60)
        with (
            Load(world, server.base, threads=3, prefix=f"S{seed}") as singles,
            Load(world, server.base, threads=2, batch=20, prefix=f"B{seed}") as batches,
        ):
            for i in range(promotions):
                time.sleep(rng.uniform(0.3, 1.0))
                version = second if i % 2 == 0 else first
                client.set_registered_model_alias(MODEL, "champion", version)
                moved = time.monotonic()
                reload = admin.post("/v1/admin/model/reload")
                assert reload.status_code == 200, reload.text
                # The old version may answer until the reload is done; the new one from the move.
                timeline.append((moved, version))
                reloaded.append(time.monotonic())
                report.promotions += 1
                if i % 3 == 2:  # a store refresh between promotions, under the same load
                    as_of = world.as_of[report.materializations % 2]
                    materialize(world.log_dir, world.store, as_of)
                    report.materializations += 1
            time.sleep(1.0)
        admin.close()
    champion_at = _intervals(timeline, reloaded)
    for sent in singles.sent + batches.sent:
        report.requests += 1
        if sent.status != 200:
            report.failed += 1
            continue
        answers = (
            [r.get("decision") for r in sent.answer["results"]]
            if "results" in sent.answer
            else [sent.answer]
        )
        if "results" in sent.answer:
            report.batches += 1
            if any(a is None for a in answers):
                report.failed += 1
                continue
        for answer in answers:
            report.decisions += 1
            version = answer["model"]["version"]
            if not any(
                v == version and start <= sent.ended and end >= sent.started
                for start, end, v in champion_at
            ):
                report.wrong_version += 1
    report.snapshots_seen, report.mixed_batches, report.unknown_scores = _snapshots(
        world, work, batches.sent
    )
    return report


def _intervals(
    timeline: list[tuple[float, str]], reloaded: list[float]
) -> list[tuple[float, float, str]]:
    """(from, until, version): champion from its alias move until the next reload is done."""
    ends = [*reloaded, float("inf")]
    return [(start, end, v) for (start, v), end in zip(timeline, ends, strict=True)]


def _snapshots(world: World, work: Path, sent: list[Sent]) -> tuple[int, int, int]:
    """(snapshots seen, batches decided with more than one snapshot, scores from neither).

    The audit log records the store snapshot each decision was made with; a batch is one
    transaction, so all its records must name the same one.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(work / "audit.db")) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(decisions)")]
        column = "snapshot" if "snapshot" in columns else None
        if column is None:
            return 0, 0, 0
        snapshot = dict(conn.execute(f"SELECT refund_id, {column} FROM decisions"))
    mixed = 0
    for s in sent:
        if s.status != 200:
            continue
        ids = [item["refund_id"] for item in s.payload["requests"]]
        mixed += len({snapshot.get(i) for i in ids}) > 1
    return len(set(snapshot.values())), mixed, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    crash = sub.add_parser("crash", help="SIGKILL under load, restart, check")
    crash.add_argument("--rounds", type=int, default=20)
    crash.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    swap = sub.add_parser("swaps", help="promotions and materialize under load")
    swap.add_argument("--promotions", type=int, default=10)
    disk = sub.add_parser("disk", help="the audit log's disk full, then read-only, under load")
    disk.add_argument("--rounds", type=int, default=5)
    disk.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastrefund-reliability-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        world = build_world(root)
        print(f"world built in {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        if args.what == "crash":
            result: object = crash_rounds(world, root, args.rounds, args.synchronous)
        elif args.what == "disk":
            from benchmarks.reliability_disk import disk_rounds  # it imports this module

            result = disk_rounds(world, root, args.rounds, args.synchronous)
        else:
            result = swaps(world, root, args.promotions)
        print(f"{args.what} ({time.monotonic() - started:.0f} s):")
        print(json.dumps(result.__dict__, indent=2))


if __name__ == "__main__":
    main()
