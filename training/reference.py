"""The reference profile of a model's training population (modelcontract.profile).

Computed on the training rows at training time and logged with the model version: the
quantiles serving tells a factor's value against ("more than 97% of buyers") and the bins
the population stability index compares live traffic with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from modelcontract import BinnedProfile, ReferenceProfile
from modelcontract.profile import QUANTILE_POINTS

BINS = 10  # deciles, the usual choice for PSI: fewer blur a shift, more make it noisy


def binned(values: np.ndarray, bins: int = BINS) -> BinnedProfile:
    """One series' bins (deciles of its finite values; tied edges merged), the share of
    rows in each and in a missing bin, and its percentiles."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite):
        inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(inner)
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        quantiles = tuple(float(q) for q in np.quantile(finite, np.linspace(0, 1, QUANTILE_POINTS)))
    else:
        edges, counts, quantiles = np.empty(0), np.zeros(1, dtype=np.int64), ()
    shares = np.append(counts, len(values) - len(finite)) / max(len(values), 1)
    return BinnedProfile(
        edges=tuple(float(e) for e in edges),
        shares=tuple(float(s) for s in shares),
        quantiles=quantiles,
        missing_share=float(1 - len(finite) / max(len(values), 1)),
    )


def reference_profile(
    rows: pd.DataFrame, feature_columns: list[str], scores: np.ndarray
) -> ReferenceProfile:
    """The profile of the training rows: every feature and the model's score on them.

    Raises:
        ValueError: There are no rows.
    """
    if rows.empty:
        raise ValueError("a reference profile needs at least one training row")
    return ReferenceProfile(
        rows=len(rows),
        features={c: binned(rows[c].to_numpy(dtype=np.float64)) for c in feature_columns},
        score=binned(scores),
    )
