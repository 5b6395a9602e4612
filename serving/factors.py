"""Why a buyer is not premium, in words: the features that raised the score most.

A factor is a feature whose contribution to the score (LightGBM's tree SHAP, `pred_contrib`:
log-odds, exact for the model) raised it, told as a sentence an after-sales agent can read,
with where the value sits among the buyers the model was trained on (the quantiles of the
version's reference profile): "4 refund-only requests after delivery in the last 90 days,
more than 97% of buyers". Pure: no model or store here; `serving.scoring` computes the
contributions, and only for answers that show them (a buyer who is not premium, the admin
view of a buyer), so an approval pays nothing for them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from features.describe import describe
from modelcontract import BinnedProfile, ReferenceProfile

TOP_FACTORS = 3


def _percent(share: float) -> int:
    return max(0, min(99, int(share * 100)))


def standing(value: float, profile: BinnedProfile) -> str:
    """Where `value` sits among the training population, e.g. "more than 97% of buyers"
    ("" when the profile holds no quantiles or the value is in the middle)."""
    if not math.isfinite(value):
        return (
            f"as for {_percent(profile.missing_share)}% of buyers" if profile.missing_share else ""
        )
    quantiles = profile.quantiles
    if not quantiles:
        return ""
    # quantiles[k] is the k-th percentile: values strictly below `value` up to the k-th.
    below = bisect.bisect_left(quantiles, value) - 1
    above = len(quantiles) - bisect.bisect_right(quantiles, value) - 1
    known = 1 - profile.missing_share  # the percentiles are of the buyers with a value
    if below >= 50:
        return f"more than {_percent(below / 100 * known)}% of buyers"
    if above >= 50:
        return f"less than {_percent(above / 100 * known)}% of buyers"
    return ""


def top_factors(
    row: np.ndarray,
    contributions: np.ndarray,
    feature_columns: Sequence[str],
    profile: ReferenceProfile,
    top: int = TOP_FACTORS,
) -> list[dict]:
    """The `top` features that raised the score most, strongest first, each
    `{"feature", "value", "contribution", "sentence"}` (value None when missing).

    Args:
        row: The feature row scored, in `feature_columns` order.
        contributions: Its contributions (one a feature, then the expected value).
        feature_columns: The model's input columns.
        profile: The model version's training population.
        top: How many factors at most.
    """
    strongest = np.argsort(-contributions[: len(feature_columns)])[:top].tolist()
    factors = []
    for i in strongest:
        credit = float(contributions[i])
        if credit <= 0:
            break  # the rest lowered the score, or did nothing
        name, value = feature_columns[i], float(row[i])
        sentence = describe(name, value)
        feature_profile = profile.features.get(name)
        where = standing(value, feature_profile) if feature_profile is not None else ""
        factors.append(
            {
                "feature": name,
                "value": value if math.isfinite(value) else None,
                "contribution": round(credit, 4),
                "sentence": f"{sentence}, {where}" if where else sentence,
            }
        )
    return factors
