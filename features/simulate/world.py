"""`simulate`: one seeded world, drawn step by step, with the truth behind its log."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.log import TransactionLog, as_of_time
from features.simulate.abuse import abuse_orders
from features.simulate.population import make_buyers, make_shops
from features.simulate.profiles import PROFILE_COLUMN, get_profile
from features.simulate.shopping import segments, shopping_orders
from features.simulate.tables import assemble


@dataclass(frozen=True)
class SimulatedWorld:
    """A simulated log with the hidden truth that generated it.

    Attributes:
        log: The four tables, with `start` and `end` set.
        truth: One row per buyer (timestamps UTC, NaT when not applicable): `buyer_id`,
            `buyer_type`, `registered_at`, `ring_id` (NA if none); the buyer's own abuse
            episode (abusers and rings): `abuse_onset_from` (the onset is drawn after it),
            the realised `abuse_start` and `abuse_end`, `abuse_rate_per_day` (abusive
            requests per day inside [abuse_start, abuse_end), 0 for honest buyers) and
            `confirm_prob`; and the takeover: `takeover_exposed_from` (the hazard applies
            from then), the realised `takeover_at` (NaT if none before the end of the
            export), `takeover_end`, `takeover_rate_per_day`, `takeover_confirm_prob`.
            Realised times may lie after any given T: only `oracle_scores` should read
            them, and it only uses those before T. Outside the default world, `profile`
            names the profile, whose laws the oracle uses.
        meta: {"start": iso, "end": iso, "seed": int, "parameters": {...}}.
    """

    log: TransactionLog
    truth: pd.DataFrame
    meta: dict


def simulate(
    buyers: int | None = None,
    shops: int | None = None,
    days: int | None = None,
    seed: int = 0,
    start: str = "2025-01-01",
    progress: bool = False,
    profile: str = "default",
) -> SimulatedWorld:
    """Simulate a platform's transaction log together with the truth behind it.

    Args:
        buyers: Number of buyer accounts (including those registered before `start`);
            default: the profile's (20,000 for the default world).
        shops: Number of shops; default: the profile's (500).
        days: Length of the export, `end` = `start` + `days`; default: the profile's (540).
        seed: Seed of the random generator; the same seed gives identical tables.
        start: First day of the export (YYYY-MM-DD, 00:00 UTC).
        progress: Show a tqdm progress bar.
        profile: The named world (`features.simulate.PROFILES`): "default", "small-shop",
            "weak-signal", "drifting".

    Returns:
        The log (valid under `features.schema.validate_log`), the hidden truth per buyer
        and the metadata to store beside the log.

    Raises:
        ValueError: If a size is not positive.
        UnknownProfileError: If there is no profile of that name.
    """
    world = get_profile(profile)
    buyers = world.buyers if buyers is None else buyers
    shops = world.shops if shops is None else shops
    days = world.days if days is None else days
    if buyers < 1 or shops < 1 or days < 1:
        raise ValueError("buyers, shops and days must be positive")
    params = world.params
    start_at = as_of_time(start)
    rng = np.random.default_rng(seed)
    steps = ["shops", "buyers", "orders", "abuse", "tables"]
    with tqdm(total=len(steps), desc="simulate", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        shop_table = make_shops(rng, params, shops, days)
        bar.update()
        bar.set_postfix_str(steps[1])
        accounts = make_buyers(rng, params, buyers, days, shop_table)
        bar.update()
        bar.set_postfix_str(steps[2])
        spells = segments(rng, params, accounts, shop_table, days)
        shopping = shopping_orders(rng, params, accounts, shop_table, spells)
        bar.update()
        bar.set_postfix_str(steps[3])
        abuse = abuse_orders(rng, params, accounts, shop_table, days)
        bar.update()
        bar.set_postfix_str(steps[4])
        log, truth = assemble(accounts, shop_table, [shopping, abuse], start_at, days)
        bar.update()
    parameters = params.describe(buyers, shops, days)
    if profile != "default":  # the default world's files stay as they were before profiles
        truth[PROFILE_COLUMN] = profile
        parameters = {"profile": profile, **parameters, "changed": params.changes_from_default()}
    meta = {
        "start": start_at.isoformat(),
        "end": (start_at + pd.Timedelta(days=days)).isoformat(),
        "seed": int(seed),
        "parameters": parameters,
    }
    return SimulatedWorld(log=log, truth=truth, meta=meta)
