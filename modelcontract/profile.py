"""The reference profile of a model version: its training population, written by training
and read by serving.

Training logs it as a JSON artifact of the version's run (`PROFILE_ARTIFACT`) and names it in
the version's `reference_profile` tag (`ModelVersionTags`). Serving reads it for two things:

- the population's quantiles of every feature, so a factor behind a score can be told in
  words ("4 refund-only requests after delivery in the last 90 days, more than 97% of
  buyers": `serving.factors`);
- the share of training rows in each bin of every feature and of the score, the reference
  the population stability index compares what serving scores against (`serving.drift`).

A version registered before profiles existed has no tag: serving then shows no factors and
reports "no reference" for drift, never an error.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

PROFILE_ARTIFACT = "reference/profile.json"
PROFILE_FORMAT = 1
QUANTILE_POINTS = 101  # the 0th, 1st, ..., 100th percentile


class BinnedProfile(BaseModel):
    """One series (a feature, or the score) on the training rows.

    Attributes:
        edges: The inner bin edges, increasing: bin i holds edges[i-1] <= x < edges[i]
            (`numpy.searchsorted(edges, x, side="right")`); a last bin holds the missing.
        shares: The share of training rows in each of the len(edges) + 1 bins and the
            missing bin (len(edges) + 2 numbers, summing to 1).
        quantiles: The 0th..100th percentiles of the finite values (empty when none is).
        missing_share: The share of rows where it is missing (NaN).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    quantiles: tuple[float, ...] = ()
    missing_share: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> BinnedProfile:
        if any(not math.isfinite(e) for e in self.edges) or list(self.edges) != sorted(
            set(self.edges)
        ):
            raise ValueError("edges must be finite and strictly increasing")
        if len(self.shares) != len(self.edges) + 2:
            raise ValueError("shares must hold one share a bin and one for the missing")
        if any(s < 0 for s in self.shares) or abs(sum(self.shares) - 1) > 1e-6:
            raise ValueError("shares must be non-negative and sum to 1")
        if self.quantiles and len(self.quantiles) != QUANTILE_POINTS:
            raise ValueError(f"quantiles must hold {QUANTILE_POINTS} percentiles")
        return self


class ReferenceProfile(BaseModel):
    """A model version's training population: every feature and the score, binned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = PROFILE_FORMAT
    rows: int = Field(ge=1, description="Training rows the profile was computed on.")
    features: dict[str, BinnedProfile]
    score: BinnedProfile
