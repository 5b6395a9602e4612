"""The audit log's disk filling and turning read-only under load (benchmarks/reliability.py
`disk`): decisions become 503, nothing is answered that is not recorded, and the same server
process resumes when the disk is writable again.

The audit log lives on its own small ext4 file system, on a loop device over an image file
(root only: `mount` is needed; `disk_available` says why not otherwise):

- full: a filler file takes every free block (written until ENOSPC), held for a few seconds,
  then deleted: space returns;
- read-only: the kernel's own reaction to a disk error with `errors=remount-ro`, triggered
  through ext4's test hook (/sys/fs/ext4/DEV/trigger_fs_error); ext4 then refuses every write
  and a remount read-write, so the operator's recovery is done: unmount (lazily, the server
  still holds its files), `e2fsck -fy`, mount again at the same path. A plain
  `mount -o remount,ro` is refused while a file on it is open for writing (the server's log
  always is), which is why the read-only state is the kernel's.

One server (`python -m serving run`) serves every round; each fault is judged on the
requests started while it lasted, and recovery on the same process id.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

from benchmarks.reliability import (
    DECIDER,
    URL,
    Load,
    Sent,
    Server,
    World,
    export,
    request_for,
    server_env,
)


def disk_available() -> str:
    """Why the scenario cannot run here ("" when it can): it mounts a loop device."""
    if os.geteuid() != 0:
        return "needs root to mount a loop device for the audit log (not root here)"
    for tool in ("mount", "umount", "losetup", "mkfs.ext4", "e2fsck", "findmnt"):
        if shutil.which(tool) is None:
            return f"needs {tool} (not found)"
    if not Path("/dev/loop-control").exists():
        return "needs loop devices (/dev/loop-control is missing)"
    with tempfile.TemporaryDirectory(prefix="fastrefund-disk-probe-") as tmp:
        try:  # root may still be refused (a container without the capability)
            LoopDisk(Path(tmp) / "probe.img", Path(tmp) / "mnt", size_mb=8).close()
        except RuntimeError as exc:
            return f"cannot mount a loop device: {exc}"
    return ""


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


class LoopDisk:
    """A small ext4 file system on a loop device, mounted at `mount_dir`."""

    def __init__(self, image: Path, mount_dir: Path, size_mb: int = 200):
        self.image, self.mount_dir = image, mount_dir
        _run("truncate", "-s", f"{size_mb}M", str(image))
        # -m 0: no blocks reserved for root (the server runs as root here: it would use them).
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        mount_dir.mkdir(parents=True, exist_ok=True)
        self.mount()

    def mount(self) -> None:
        _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mount_dir))
        self.device = Path(_run("findmnt", "-no", "SOURCE", str(self.mount_dir))).name

    def fill(self) -> int:
        """Take every free block with a filler file; returns its size in bytes."""
        filler = self.mount_dir / "filler"
        written = 0
        with filler.open("wb", buffering=0) as out:
            for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
                block = b"\0" * chunk
                while True:
                    try:
                        written += out.write(block) or 0
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free(self) -> None:
        """Delete the filler: space returns."""
        (self.mount_dir / "filler").unlink()

    def fail(self) -> None:
        """A disk error as ext4 reports it: with errors=remount-ro it turns read-only."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("reliability run\n")

    def recover(self) -> None:
        """The operator's recovery: unmount (lazily: open files keep the old mount alive
        until closed), wait for the device to be let go of, check the file system, mount it
        again at the same path."""
        _run("umount", "-l", str(self.mount_dir))
        deadline = time.monotonic() + 20.0
        while _run("losetup", "-j", str(self.image)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the server closes its files at its next request
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, check=False)
        self.mount()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            _run("umount", "-l", str(self.mount_dir))
        with contextlib.suppress(RuntimeError):  # normally detached with the mount
            for device in _run("losetup", "-j", str(self.image)).splitlines():
                _run("losetup", "-d", device.split(":")[0])


@dataclass
class Probe:
    """/readyz polled every 0.2 s: (monotonic time, status or None)."""

    base: str
    seen: list[tuple[float, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self._stop.wait(0.2):
                try:
                    status: int | None = client.get("/readyz").status_code
                except httpx.HTTPError:
                    status = None
                self.seen.append((time.monotonic(), status))


@dataclass
class Phase:
    """One fault: when it began, when it was cleared, when service came back."""

    kind: str  # "full" or "read-only"
    began: float
    cleared: float = 0.0
    resumed_at: float | None = None  # first fresh decision answered 200 after clearing
    ready_at: float | None = None  # first /readyz 200 after clearing


@dataclass
class DiskReport:
    rounds: int = 0
    synchronous: str = "NORMAL"
    requests: int = 0  # every request sent (singles and batches)
    decisions_answered: int = 0  # decisions in the 200 answers (a batch counts its items)
    full_requests: int = 0  # started while the disk was full
    full_503: int = 0
    full_recorded: int = 0  # answered 200 while full, and in the log as answered
    read_only_requests: int = 0
    read_only_503: int = 0
    read_only_recorded: int = 0
    other_status: int = 0  # neither 200 nor 503 (or no answer), any time
    unexpected_503: int = 0  # answered 503 with no fault in force
    lost: int = 0  # answered 200, absent from the log or recorded otherwise
    # Where the lost were answered: in a fault, or before one (kind and seconds before it).
    lost_where: dict[str, int] = field(default_factory=dict)
    lost_most_seconds_before_fault: float = 0.0
    doubled: int = 0
    refused_recorded: int = 0  # answered 503 and yet found in the log (probed by GET)
    refused_probed: int = 0
    retried: int = 0  # refused requests sent again after recovery
    retried_decided: int = 0  # ... decided afresh (200, not a replay)
    not_ready_during_fault: int = 0  # phases whose fault /readyz reported (503)
    phases: int = 0
    phases_resumed: int = 0  # decisions and /readyz back, same server process
    exited: int = 0  # 1 if the server process ended during the run (it is never restarted)
    resume_seconds: list[float] = field(default_factory=list)
    ready_seconds: list[float] = field(default_factory=list)
    records: int = 0
    filler_mb: float = 0.0


def disk_rounds(
    world: World,
    work: Path,
    rounds: int,
    synchronous: str = "NORMAL",
    hold_seconds: float = 3.0,
    threads: int = 4,
    seed: int = 0,
    size_mb: int = 200,
    settle_seconds: tuple[float, float] = (0.5, 1.5),
    refused_probes: int = 60,
) -> DiskReport:
    """`rounds` times, under load: the audit log's disk full, then read-only; each cleared."""
    reason = disk_available()
    if reason:
        raise RuntimeError(f"disk scenario unavailable: {reason}")
    rng = random.Random(seed)
    report = DiskReport(synchronous=synchronous)
    disk = LoopDisk(work / "audit.img", work / "audit-disk", size_mb)
    audit = disk.mount_dir / "audit.db"
    server = Server(server_env(world, audit, synchronous), work / "server.log")
    phases: list[Phase] = []
    sent: list[Sent] = []
    most = 1_000_000  # requests a load sends at most (bounded, as every loop here)
    try:
        server.start()
        assert server.process is not None
        with (
            Probe(server.base) as probe,
            # 503s are quick: room for far more requests than the crash run's default.
            Load(world, server.base, threads, prefix=f"D{seed}", max_requests=most) as singles,
            Load(world, server.base, 1, batch=10, prefix=f"DB{seed}", max_requests=most) as batches,
        ):
            for _ in range(rounds):
                for kind in ("full", "read-only"):
                    time.sleep(rng.uniform(*settle_seconds))  # decisions before the fault
                    phase = Phase(kind, time.monotonic())
                    if kind == "full":
                        report.filler_mb = disk.fill() / 2**20
                    else:
                        disk.fail()
                    time.sleep(hold_seconds)
                    if kind == "full":
                        disk.free()
                    else:
                        disk.recover()
                    phase.cleared = time.monotonic()
                    phases.append(phase)
                    _await_recovery(server, phase, world, rng)
                report.rounds += 1
            time.sleep(0.5)
        sent = singles.sent + batches.sent
        report.exited = int(server.process.poll() is not None)
        _refused_probes(server, sent, report, refused_probes)
        server.stop()
        frame = export(audit, work / "decisions.csv")
    finally:
        server.stop()
        disk.close()
    _judge(report, sent, phases, probe.seen, frame)
    return report


def _await_recovery(server: Server, phase: Phase, world: World, rng: random.Random) -> None:
    """Wait (at most 30 s) for a fresh decision answered 200 and /readyz 200."""
    deadline = phase.cleared + 30.0
    with httpx.Client(base_url=server.base, headers=DECIDER, timeout=10) as client:
        while time.monotonic() < deadline and (phase.resumed_at is None or phase.ready_at is None):
            if phase.resumed_at is None:
                answer = client.post(URL, json=request_for(world, rng, "DR"))
                if answer.status_code == 200 and not answer.json().get("replayed"):
                    phase.resumed_at = time.monotonic()
            if phase.ready_at is None and client.get("/readyz").status_code == 200:
                phase.ready_at = time.monotonic()
            time.sleep(0.1)


def _during(sent: Sent, phases: list[Phase]) -> Phase | None:
    """The fault a request was in flight in (from the fault until decisions resumed)."""
    for phase in phases:
        if sent.ended >= phase.began and sent.started <= (phase.resumed_at or phase.cleared):
            return phase
    return None


def _refused_probes(server: Server, sent: list[Sent], report: DiskReport, count: int) -> None:
    """Refused singles: not in the log (GET 404), then decided afresh when sent again."""
    refused = [s for s in sent if s.status == 503 and "refund_id" in s.payload]
    sample = random.Random(1).sample(refused, min(len(refused), count))
    with httpx.Client(base_url=server.base, headers=DECIDER, timeout=10) as client:
        for s in sample:
            report.refused_probed += 1
            stored = client.get(f"{URL}/{s.payload['refund_id']}")
            report.refused_recorded += stored.status_code != 404
            again = client.post(URL, json=s.payload)
            report.retried += 1
            report.retried_decided += again.status_code == 200 and not again.json()["replayed"]


def _attribute(report: DiskReport, sent: Sent, phases: list[Phase]) -> None:
    """Say where a lost answer was given: during a fault, or the last seconds before one."""
    during = _during(sent, phases)
    if during is not None:
        where = f"during {during.kind}"
    else:
        after = [p for p in phases if p.began > sent.ended]
        if not after:
            where = "after the last fault"
        else:
            where = f"before {after[0].kind}"
            before = after[0].began - sent.ended
            report.lost_most_seconds_before_fault = round(
                max(report.lost_most_seconds_before_fault, before), 2
            )
    report.lost_where[where] = report.lost_where.get(where, 0) + 1


def _judge(
    report: DiskReport,
    sent: list[Sent],
    phases: list[Phase],
    readiness: list[tuple[float, int | None]],
    frame: pd.DataFrame,
) -> None:
    report.records = len(frame)
    report.doubled = int(frame["refund_id"].duplicated().sum())
    recorded = frame.drop_duplicates("refund_id").set_index("refund_id")["decision"]
    for s in sent:
        report.requests += 1
        phase = _during(s, phases)
        if s.status == 503:
            if phase is not None and phase.kind == "full":
                report.full_503 += 1
            elif phase is not None:
                report.read_only_503 += 1
            else:
                report.unexpected_503 += 1
        elif s.status != 200:
            report.other_status += 1
        if phase is not None:
            if phase.kind == "full":
                report.full_requests += 1
            else:
                report.read_only_requests += 1
        if s.status != 200:
            continue
        if "results" in s.answer:  # a batch: each item {"index", "status", "decision"}
            answers = [r["decision"] for r in s.answer["results"] if "decision" in r]
            report.other_status += len(s.answer["results"]) - len(answers)
        else:
            answers = [s.answer]
        intact = True
        for answer in answers:
            report.decisions_answered += 1
            if recorded.get(answer["refund_id"]) != answer["decision"]:
                report.lost += 1
                intact = False
                _attribute(report, s, phases)
        if phase is not None and intact:
            if phase.kind == "full":
                report.full_recorded += 1
            else:
                report.read_only_recorded += 1
    for phase in phases:
        report.phases += 1
        report.not_ready_during_fault += any(
            phase.began <= t <= phase.cleared and status == 503 for t, status in readiness
        )
        if phase.resumed_at is not None and phase.ready_at is not None and not report.exited:
            report.phases_resumed += 1
            report.resume_seconds.append(round(phase.resumed_at - phase.cleared, 2))
            report.ready_seconds.append(round(phase.ready_at - phase.cleared, 2))
