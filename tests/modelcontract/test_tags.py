"""A model version's tags: what training writes is what serving and the gate read back, and
a version that breaks the contract is refused with the tag named."""

from __future__ import annotations

import pytest

from modelcontract import GATE_VERDICTS, GateTags, ModelVersionTags, TagError

WRITTEN = ModelVersionTags(
    threshold=0.0371,
    feature_columns=("orders_total", "refunds_90d"),
    feature_set_version="buyer-features-v3",
    data_window="2025-01-01/2025-12-01",
    target_bad_rate=0.01,
    data_fingerprint="ab" * 32,
    label_horizon_days=90,
    label_maturity_days=30,
)


def test_tags_are_text_that_reads_back_as_the_same_values() -> None:
    text = WRITTEN.to_tags()
    assert all(isinstance(value, str) for value in text.values())
    assert text["threshold"] == "0.0371" and text["target_bad_rate"] == "0.01"
    assert text["feature_columns"] == '["orders_total", "refunds_90d"]'
    assert ModelVersionTags.parse(text) == WRITTEN
    # A float keeps every digit: premium iff score <= threshold, to the last bit.
    exact = ModelVersionTags(threshold=0.1 + 0.2, feature_columns=("a",))
    assert ModelVersionTags.parse(exact.to_tags()).threshold == 0.1 + 0.2


def test_what_a_version_need_not_carry_is_left_unset_and_other_tags_are_ignored() -> None:
    tags = ModelVersionTags.parse(
        {"threshold": "0.05", "feature_columns": '["a"]', "gate_verdict": "refused", "x": "y"}
    )
    assert (tags.feature_set_version, tags.target_bad_rate, tags.data_window) == ("", None, None)
    assert set(tags.to_tags()) == {"threshold", "feature_columns", "feature_set_version"}


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ({}, "tag threshold: missing; tag feature_columns: missing"),
        ({"threshold": "0.05"}, "tag feature_columns: missing"),
        ({"threshold": "", "feature_columns": '["a"]'}, "tag threshold: Input should be a valid"),
        (
            {"threshold": "inf", "feature_columns": '["a"]'},
            "tag threshold: Input should be a finite",
        ),
        (
            {"threshold": "nan", "feature_columns": '["a"]'},
            "tag threshold: Input should be a finite",
        ),
        ({"threshold": "0.05", "feature_columns": "a,b"}, "tag feature_columns: not JSON"),
        ({"threshold": "0.05", "feature_columns": '{"a": 1}'}, "feature_columns: not a list of"),
        ({"threshold": "0.05", "feature_columns": '["a", 1]'}, "feature_columns: not a list of"),
        ({"threshold": "0.05", "feature_columns": "[]"}, "tag feature_columns: an empty list"),
        (
            {"threshold": "0.05", "feature_columns": '["a"]', "target_bad_rate": "1.5"},
            "tag target_bad_rate: Input should be less than 1",
        ),
        (
            {"threshold": "0.05", "feature_columns": '["a"]', "label_horizon_days": "ninety"},
            "tag label_horizon_days: Input should be a valid integer",
        ),
    ],
)
def test_a_version_that_breaks_the_contract_is_refused_naming_the_tag(
    tags: dict[str, str], problem: str
) -> None:
    with pytest.raises(TagError) as caught:
        ModelVersionTags.parse(tags, "buyer-quality version 7")
    assert str(caught.value).startswith("buyer-quality version 7: ")
    assert problem in str(caught.value)


SHA = "ab" * 32


def test_the_gate_records_its_verdict_reason_and_model_digest_on_the_version() -> None:
    tags = GateTags(
        gate_verdict="forced", gate_run_id="r1", gate_reason="incident 42", model_sha256=SHA
    )
    assert tags.to_tags() == {
        "gate_verdict": "forced",
        "gate_run_id": "r1",
        "gate_reason": "incident 42",
        "model_sha256": SHA,
    }
    assert GateTags.parse({**tags.to_tags(), "threshold": "0.05"}) == tags
    refused = GateTags(gate_verdict="refused", gate_run_id="r2", model_sha256=SHA)
    assert "gate_reason" not in refused.to_tags()
    assert set(GATE_VERDICTS) == {"promoted", "forced", "refused"}
    with pytest.raises(TagError, match="tag gate_verdict"):
        GateTags.parse({"gate_verdict": "maybe", "gate_run_id": "r3", "model_sha256": SHA})
    with pytest.raises(TagError, match="tag model_sha256: missing"):
        GateTags.parse({"gate_verdict": "promoted", "gate_run_id": "r3"})
    with pytest.raises(TagError, match="tag model_sha256"):
        GateTags.parse({"gate_verdict": "promoted", "gate_run_id": "r3", "model_sha256": "x"})
