"""The answer's pieces, against what they replace: decided_at and the audited JSON."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from serving.answers import iso_timestamp, json_text


def _datetime_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@pytest.mark.parametrize(
    "epoch",
    [
        0.0,
        1_750_000_000.0,
        1_750_000_000.9994999,
        1_750_000_000.9995,
        1_750_000_000.9999995,  # rounds up to the next second, as datetime does
        1_750_000_000.0000005,
        1_764_115_199.999,
        4_102_444_800.123,  # 2100
    ],
)
def test_decided_at_is_formatted_as_datetime_formats_it(epoch: float) -> None:
    assert iso_timestamp(epoch) == _datetime_iso(epoch)


def test_decided_at_matches_datetime_on_random_instants() -> None:
    rng = random.Random(7)
    instants = [rng.uniform(0, 4e9) for _ in range(20_000)]
    instants += [1_750_000_000 + i / 1e6 + 5e-7 for i in range(0, 2_000_000, 997)]  # near half µs
    assert [iso_timestamp(e) for e in instants] == [_datetime_iso(e) for e in instants]


def test_the_audited_feature_vector_writes_missing_values_as_null() -> None:
    text = json_text({"values": {"a": float("nan"), "b": 1.5, "c": float("inf")}})
    assert json.loads(text) == {"values": {"a": None, "b": 1.5, "c": None}}
