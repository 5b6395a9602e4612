"""The oracle: each buyer's exact probability of a bad label as of T, from the hidden truth.

Abusive requests come in episodes (an abuser's career, a ring's burst, a takeover): per
episode a Poisson process of constant rate between an onset and an end, each request
confirmed independently with a known probability after a delay of known law; nothing else
is ever confirmed. So the chance that a buyer is bad as of T (DESIGN.md) given what exists
at T (the buyer's type and traits, and the episodes that have already begun or ended) is an
integral over what has not happened yet: the best score any model can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from features.log import as_of_time
from features.simulate.laws import ConfirmationLaw, Delay
from features.simulate.params import TAKEOVER, WorldParams
from features.simulate.profiles import profile_of

# Gauss-Legendre nodes per integral; the integrands are smooth on each interval used.
_NODES = 32
# Grid step (days) of the table of P(no bad | takeover at t), shared by every account.
_TABLE_STEP_DAYS = 0.25


def _gauss(low: np.ndarray, high: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on [low, high] per element (empty if high < low)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    high = np.maximum(high, low)
    half = (high - low)[..., None] / 2
    return (low + high)[..., None] / 2 + half * x, half * w


@dataclass(frozen=True)
class _Window:
    """The label window in days after T: requests up to `horizon`, confirmed by `limit`."""

    law: ConfirmationLaw
    horizon: float
    limit: float

    def exposure(self, begin: np.ndarray | float, end: np.ndarray | float) -> np.ndarray:
        """The integral over [begin, end] of P(confirmation delay <= limit - t) dt."""
        cdf_integral = self.law.delay_cdf_integral
        return cdf_integral(self.limit - np.asarray(begin)) - cdf_integral(
            self.limit - np.asarray(end)
        )

    def clean_ongoing(self, begun: np.ndarray, length: Delay, rate: np.ndarray) -> np.ndarray:
        """E[exp(-expected confirmed requests)] for episodes begun at `begun` <= 0, alive at 0.

        The end is unknown: its law given that it is after 0.
        """
        horizon = self.horizon
        low, high = length.support()
        # Floored to whole seconds in the truth, an end may sit a hair past the support.
        alive = np.maximum(length.survival(-begun), 1e-300)
        ends, weights = _gauss(
            np.maximum(begun + low, 0.0), np.minimum(begun + high, horizon), _NODES
        )
        density = length.density(ends - begun[:, None]) / alive[:, None]
        inside = weights * density * np.exp(-rate[:, None] * self.exposure(0.0, ends))
        tail = (
            length.survival(horizon - begun) / alive * np.exp(-rate * self.exposure(0.0, horizon))
        )
        return inside.sum(axis=1) + tail

    def clean_from_onset(self, onset: np.ndarray, length: Delay, rate: np.ndarray) -> np.ndarray:
        """E[exp(-expected confirmed requests)] for episodes starting at `onset` in [0, horizon]."""
        horizon = self.horizon
        low, high = length.support()
        ends, weights = _gauss(
            np.minimum(onset + low, horizon), np.minimum(onset + high, horizon), _NODES
        )
        density = length.density(ends - onset[..., None])
        exposure = self.exposure(onset[..., None], ends)
        inside = (weights * density * np.exp(-rate[..., None] * exposure)).sum(axis=-1)
        tail = length.survival(horizon - onset) * np.exp(-rate * self.exposure(onset, horizon))
        return inside + tail

    def clean_future(
        self, anchor: np.ndarray, onset: Delay, clean_at: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Average `clean_at(onset time)` over an onset that has not happened by 0.

        The onset is `anchor` + a delay of law `onset`, conditioned on being after 0; an
        onset after the horizon leaves the window clean.
        """
        horizon = self.horizon
        low, high = onset.support()
        alive = np.maximum(onset.survival(-anchor), 1e-300)
        times, weights = _gauss(
            np.clip(anchor + low, 0.0, horizon), np.clip(anchor + high, 0.0, horizon), _NODES
        )
        density = onset.density(times - anchor[:, None]) / alive[:, None]
        inside = (weights * density * clean_at(times)).sum(axis=1)
        return inside + onset.survival(horizon - anchor) / alive


def _takeover_rates(params: WorldParams, law: ConfirmationLaw) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature (values, weights) for a thief's rate x confirm probability."""
    z, wz = np.polynomial.hermite_e.hermegauss(24)
    rate = np.exp(params.takeover_rate_log[0] + params.takeover_rate_log[1] * z)
    alpha, beta = law.beta(params.confirm_mean_of(TAKEOVER))
    # Beta(alpha, beta) by Gauss-Legendre after x = 1 - (1 - u)^(1/beta), which makes the
    # density smooth at 1 where beta < 2 would make it steep.
    u, wu = _gauss(np.array(0.0), np.array(1.0), 96)
    x = 1 - (1 - u) ** (1 / beta)
    wx = wu * x ** (alpha - 1) / beta  # dx = (1 - u)^(1/beta - 1) / beta du cancels (1-x)^(beta-1)
    values = (rate[:, None] * law.cap * x[None, :]).ravel()
    weights = (wz[:, None] * wx[None, :]).ravel()
    return values, weights / weights.sum()


def _takeover_table(params: WorldParams, window: _Window) -> tuple[np.ndarray, np.ndarray]:
    """P(no bad label from a takeover at t), for t on a grid over [0, horizon]."""
    horizon, burst = window.horizon, params.takeover_burst
    grid = np.linspace(0.0, horizon, int(round(horizon / _TABLE_STEP_DAYS)) + 1)
    values, weights = _takeover_rates(params, window.law)

    def clean(exposure: np.ndarray) -> np.ndarray:
        return np.exp(-exposure[..., None] * values) @ weights

    low, high = burst.support()
    ends, end_weights = _gauss(
        np.minimum(grid + low, horizon), np.minimum(grid + high, horizon), _NODES
    )
    density = burst.density(ends - grid[:, None])
    inside = (end_weights * density * clean(window.exposure(grid[:, None], ends))).sum(axis=1)
    tail = burst.survival(horizon - grid) * clean(window.exposure(grid, horizon))
    return grid, inside + tail


def oracle_scores(
    truth: pd.DataFrame,
    as_of: object,
    horizon_days: int = 90,
    maturity_days: int = 30,
    params: WorldParams | None = None,
) -> pd.Series:
    """The probability that each buyer is labelled bad as of a date, given what exists at T.

    It uses the buyer's type and traits (an abuser's or ring member's rate and confirmation
    probability), the registration time, and the episodes that began or ended before T
    (with a thief's rate and confirmation probability once the takeover has happened).
    Everything later is averaged over its law: an onset not yet happened over the onset
    delay given that it has not happened by T, an end not yet happened over the length
    given that it has lasted until T, and a takeover not yet happened over the constant
    hazard, the thief's rate, confirmation probability and burst length. Never the realised
    future.

    Given an episode's onset s, end e, rate r and confirmation probability p, confirmed
    requests inside the label window are a thinned Poisson count with mean
    r * p * integral over (T, T+H] within [s, e) of P(D <= T+H+M-t) dt (D the confirmation
    delay), so P(bad) = 1 - E[exp(-that mean)], the expectation over what is unknown at T;
    the buyer's own episode and the takeover are independent, so their clean
    probabilities multiply. The integrals are computed by Gauss-Legendre quadrature, exact
    to far below sampling noise. No other request is ever confirmed.

    Args:
        truth: `SimulatedWorld.truth` (or truth.parquet).
        as_of: The as-of date D; T = D 00:00 UTC.
        horizon_days: H, as for the labels.
        maturity_days: M, as for the labels.
        params: The laws the world was drawn from (default: those of the profile the
            truth names, the default world's when it names none).

    Returns:
        P(bad) in [0, 1], indexed by buyer_id, for every buyer in `truth`.

    Raises:
        UnknownProfileError: The truth names a profile that does not exist.
    """
    params = params or profile_of(truth).params
    known_at = as_of_time(as_of)
    window = _Window(
        params.confirmation(), float(horizon_days), float(horizon_days + maturity_days)
    )

    def days_after_t(column: str) -> np.ndarray:
        return ((truth[column] - known_at) / pd.Timedelta(days=1)).to_numpy(
            dtype=float, na_value=np.nan
        )

    buyer_type = truth["buyer_type"].to_numpy()
    clean = np.ones(len(truth))

    # The buyer's own episode.
    begun, ended = days_after_t("abuse_start"), days_after_t("abuse_end")
    anchor = days_after_t("abuse_onset_from")
    rate = truth["abuse_rate_per_day"].to_numpy(dtype=float) * truth["confirm_prob"].to_numpy(
        dtype=float
    )
    for person, onset, length in (
        ("abuser", params.abuser_onset, params.abuser_career),
        ("ring", params.ring_onset, params.ring_burst),
    ):
        mine = buyer_type == person
        ongoing = np.flatnonzero(mine & (begun <= 0) & (ended > 0))
        clean[ongoing] = window.clean_ongoing(begun[ongoing], length, rate[ongoing])
        future = np.flatnonzero(mine & (begun > 0))
        future_rate = rate[future][:, None]
        clean[future] = window.clean_future(
            anchor[future],
            onset,
            partial(window.clean_from_onset, length=length, rate=future_rate),
        )

    # The takeover: the thief's burst if it has happened, else the hazard ahead.
    taken_at, taken_until = days_after_t("takeover_at"), days_after_t("takeover_end")
    thief_rate = truth["takeover_rate_per_day"].to_numpy(dtype=float) * truth[
        "takeover_confirm_prob"
    ].to_numpy(dtype=float)
    ongoing = np.flatnonzero((taken_at <= 0) & (taken_until > 0))
    clean[ongoing] *= window.clean_ongoing(
        taken_at[ongoing], params.takeover_burst, thief_rate[ongoing]
    )
    ahead = np.flatnonzero(~(taken_at <= 0))
    grid, table = _takeover_table(params, window)
    clean[ahead] *= window.clean_future(
        days_after_t("takeover_exposed_from")[ahead],
        params.takeover_wait,
        lambda at: np.interp(at, grid, table),
    )
    return pd.Series(
        np.clip(1.0 - clean, 0.0, 1.0),
        index=pd.Index(truth["buyer_id"], name="buyer_id"),
        name="oracle",
    )
