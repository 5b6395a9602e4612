"""The baselines behave as a risk team would expect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.models import HandRule


def counts(abuse: list[int], disputes: list[int], refunds: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"confirmed_abuse_total": abuse, "disputes_365d": disputes, "refunds_90d": refunds},
        dtype="float64",
    )


def test_hand_rule_puts_confirmed_abuse_above_any_number_of_refunds() -> None:
    rule = HandRule()
    points = rule.points(counts([1, 0, 0, 0], [0, 9, 1, 0], [0, 9, 0, 3]))
    assert points[0] > points[1] > points[2] > points[3]


def test_hand_rule_learns_bad_rates_without_reordering() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    frame = counts(
        list(rng.binomial(1, 0.05, n)), list(rng.poisson(0.2, n)), list(rng.poisson(0.5, n))
    )
    frame.loc[::50, "refunds_90d"] = np.nan  # missing counts count as none
    risk = 0.01 + 0.4 * frame["confirmed_abuse_total"] + 0.05 * frame["disputes_365d"]
    bad = (rng.random(n) < risk.clip(0, 1)).to_numpy().astype(int)
    rule = HandRule().fit(frame, bad)
    scores = rule.predict(frame)
    assert ((scores > 0) & (scores < 1)).all()
    order = np.argsort(rule.points(frame), kind="stable")
    assert (np.diff(scores[order]) >= 0).all()
    abusers = frame["confirmed_abuse_total"] > 0
    assert scores[abusers].mean() > 5 * scores[~abusers].mean()
