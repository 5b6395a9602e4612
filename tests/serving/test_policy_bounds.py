"""The policy's closed list of covered categories and its bound on the store's age; paths
absolute outside development."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from features.simulate.params import CATEGORIES
from serving.config import ConfigError, Settings
from serving.decision import snapshot_too_old
from serving.policy import load_policy
from serving.routes.health import NOT_READY
from tests.serving.conftest import DAY, NOW, Clock, body, codes, decide

POLICY = load_policy()


def _production(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "environment": "production",
            "decider_tokens": [SecretStr("d" * 32)],
            "admin_tokens": [SecretStr("a" * 32)],
        }
    )


@pytest.mark.parametrize(
    ("category", "codes_expected"),
    [
        ("apparel", []),
        (" Apparel ", []),
        ("\uff41\uff50\uff50\uff41\uff52\uff45\uff4c", []),  # full width: the same code
        ("\u0441ustom", ["CATEGORY_NOT_COVERED"]),  # a Cyrillic с: looks like custom
        ("custom-made", ["CATEGORY_NOT_COVERED"]),
        ("game top up", ["CATEGORY_NOT_COVERED"]),
        ("\u0430pparel", ["CATEGORY_NOT_COVERED"]),  # a Cyrillic а: looks like apparel
        ("gift_cards", ["CATEGORY_EXCLUDED"]),
    ],
)
def test_a_category_off_the_closed_list_goes_to_manual_review(
    client: TestClient, category: str, codes_expected: list[str]
) -> None:
    answer = decide(
        client, body(f"CAT-{len(category)}-{category.encode().hex()[:20]}", category=category)
    )
    assert codes(answer) == codes_expected
    assert answer["decision"] == ("auto_approve" if not codes_expected else "manual_review")


def test_every_category_the_simulator_sells_is_covered_or_excluded() -> None:
    # The demo's worlds: physical goods auto-approve, virtual and custom ones are excluded.
    for category in CATEGORIES:
        covered = category.name in POLICY.allowed_categories
        assert covered != (category.name in POLICY.excluded_categories), category.name
        assert covered == (category.name not in ("virtual", "custom")), category.name


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"allowed_categories": []}, "allowed_categories"),
        (
            {"allowed_categories": ["apparel", "Gift_Cards"]},
            "both allowed and excluded: gift_cards",
        ),
        ({"max_snapshot_age_days": 0}, "max_snapshot_age_days"),
        ({"max_snapshot_age_days": None}, "max_snapshot_age_days"),
    ],
)
def test_a_policy_without_a_closed_list_or_an_age_bound_is_refused(
    tmp_path: Path, change: dict, named: str
) -> None:
    raw = yaml.safe_load(Path("serving/policy.yaml").read_text(encoding="utf-8"))
    raw.update(change)
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=named):
        load_policy(path)


def test_the_snapshot_age_bound() -> None:
    as_of = "2025-06-15"  # features known at 2025-06-15T00:00:00Z
    midnight = 1_749_945_600.0
    assert snapshot_too_old(as_of, midnight + 3 * DAY, 3) is None  # the bound itself serves
    late = snapshot_too_old(as_of, midnight + 3.5 * DAY, 3)
    assert late is not None and "3.5 days old, more than the policy's 3" in late


def test_past_max_snapshot_age_decisions_fail_closed_and_readyz_says_not_ready(
    make_client: Callable[..., TestClient], settings: Settings, clock: Clock
) -> None:
    client = make_client(_production(settings))
    headers = {"Authorization": f"Bearer {'d' * 32}"}
    clock.now = NOW + 2 * DAY  # the store is as of 2025-06-15: 2.6 days old
    assert decide(client, body("AGE-1"), headers)["decision"] == "auto_approve"
    assert client.get("/readyz").status_code == 200
    clock.now = NOW + 3 * DAY  # 3.6 days: past the policy's 3
    answer = decide(client, body("AGE-2"), headers)
    assert answer["decision"] == "manual_review" and codes(answer) == ["SCORE_UNAVAILABLE"]
    assert "days old" in answer["reasons"][0]["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "max_snapshot_age_days" in ready.json()["checks"]["store"]
    assert ready.json()["checks"]["store"] != NOT_READY["store"]


def test_in_development_an_old_snapshot_still_serves(client: TestClient, clock: Clock) -> None:
    clock.now = NOW + 30 * DAY  # the simulated worlds of the demo lie in the past
    assert decide(client, body("AGE-D"))["decision"] == "auto_approve"
    assert client.get("/readyz").status_code == 200


def test_relative_paths_are_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = {"decider_tokens": ["d" * 32], "admin_tokens": ["a" * 32]}
    with pytest.raises(ValidationError, match="FASTREFUND_STORE_PATH=data/online.db"):
        Settings(environment="production", audit_path=tmp_path / "a.db", **tokens)
    monkeypatch.setenv("FASTREFUND_ENVIRONMENT", "staging")
    monkeypatch.setenv("FASTREFUND_STORE_PATH", str(tmp_path / "online.db"))
    monkeypatch.setenv("FASTREFUND_AUDIT_PATH", "audit.db")
    with pytest.raises(ConfigError, match="staging: paths must be absolute") as caught:
        Settings.load()
    assert "FASTREFUND_AUDIT_PATH=audit.db" in str(caught.value)
    assert "FASTREFUND_STORE_PATH" not in str(caught.value)
    monkeypatch.setenv("FASTREFUND_AUDIT_PATH", str(tmp_path / "audit.db"))
    assert Settings.load().audit_path == tmp_path / "audit.db"
    monkeypatch.setenv("FASTREFUND_ENVIRONMENT", "development")
    monkeypatch.setenv("FASTREFUND_AUDIT_PATH", "audit.db")  # development: relative is fine
    assert Settings.load().audit_path == Path("audit.db")
