"""Crash safety of the real server, a few rounds of benchmarks/reliability.py's `crash`.

`python -m serving run` under concurrent decisions is SIGKILLed mid-load and restarted;
every decision answered 200 must then be stored as answered, no refund_id twice, replays
the stored answers, and the velocity limits must count the approvals answered before the
kill. docs/reliability.md has the 20-round figures from the script.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability import World, build_world, crash_rounds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("reliability"), buyers=800)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sigkill_under_load_loses_no_answered_decision(
    world: World, tmp_path: Path, synchronous: str
) -> None:
    report = crash_rounds(world, tmp_path, rounds=2, synchronous=synchronous, threads=6)
    assert report.answered > 100 and report.approved_answered > 0, report  # load was real
    assert report.lost == 0 and report.changed == 0 and report.doubled == 0, report
    assert report.replays > 0 and report.replay_mismatches == 0, report
    assert report.velocity_missed == 0 and report.over_velocity == 0, report
    assert report.other_status == 0, report
