"""Why a buyer is or is not premium: SHAP contributions of the model, in words."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from modelcontract.linear import LinearModel


@dataclass(frozen=True)
class Explanation:
    """A buyer's score, the verdict, and the features that moved the score most."""

    buyer_id: str
    score: float
    threshold: float
    contributions: pd.DataFrame  # feature, value, log_odds (sorted by |log_odds|)

    @property
    def premium(self) -> bool:
        """Premium iff the score is at or below the threshold."""
        return self.score <= self.threshold

    def sentences(self, top: int = 5) -> list[str]:
        """The verdict and the `top` strongest reasons, one plain sentence each."""
        verdict = "is" if self.premium else "is not"
        lines = [
            f"Buyer {self.buyer_id} {verdict} premium: estimated risk {self.score:.2%} "
            f"against a threshold of {self.threshold:.2%}."
        ]
        for row in self.contributions.head(top).itertuples(index=False):
            direction = "raises" if row.log_odds > 0 else "lowers"
            value = "unknown" if pd.isna(row.value) else f"{row.value:,.4g}"
            lines.append(
                f"{row.feature} = {value} {direction} the risk ({row.log_odds:+.2f} log-odds)."
            )
        return lines


def explain(
    booster: lgb.Booster | LinearModel,
    features: pd.DataFrame,
    buyer_id: str,
    feature_columns: list[str],
    threshold: float,
) -> Explanation:
    """Explain one buyer's score with LightGBM's exact tree SHAP (`pred_contrib`), or a
    logistic regression's terms (`LinearModel.contributions`).

    Args:
        booster: The model (a Booster or the registered logistic regression).
        features: Feature rows with a `buyer_id` column (one snapshot).
        buyer_id: Whose score to explain.
        feature_columns: The model's input order.
        threshold: The premium threshold stored with the model version.

    Raises:
        KeyError: The buyer has no row in `features`.
        ValueError: Several rows for the buyer (several as-of dates: pick one), or
            `feature_columns` is not the model's own list in its order.
    """
    names = list(booster.feature_name())
    if list(feature_columns) != names:
        raise ValueError(
            f"feature_columns must be the model's inputs in its order: {names}, "
            f"got {list(feature_columns)}"
        )
    rows = features.loc[features["buyer_id"] == buyer_id]
    if rows.empty:
        raise KeyError(f"buyer {buyer_id!r} has no feature row")
    if len(rows) > 1:
        dates = sorted(rows["as_of"].astype(str)) if "as_of" in rows else []
        raise ValueError(
            f"buyer {buyer_id!r} has {len(rows)} feature rows {dates}: pass one snapshot, "
            'e.g. features.loc[features["as_of"] == as_of]'
        )
    matrix = rows[feature_columns].to_numpy(dtype=np.float64)
    if isinstance(booster, LinearModel):  # its terms, from the training mean (exact)
        contributions = booster.contributions(matrix[0])
    else:
        contributions = booster.predict(matrix, pred_contrib=True)[0]
    score = float(booster.predict(matrix)[0])
    frame = pd.DataFrame(
        {"feature": feature_columns, "value": matrix[0], "log_odds": contributions[:-1]}
    )
    order = frame["log_odds"].abs().sort_values(ascending=False).index
    return Explanation(buyer_id, score, threshold, frame.loc[order].reset_index(drop=True))
