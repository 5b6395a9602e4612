"""`python -m training backtest` and `merchant-report`: inputs checked, replay run, files written.

The replay itself is `training.backtest`; this module reads the policy files and the
registry, times the run, and writes the tables and pages atomically (a failed run leaves
the previous output as it was).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import features
from modelcontract import CHAMPION, MODEL_NAME
from serving.policy import Policy, load_policy
from training import backtest as bt
from training.config import EXPERIMENT_NAME

PROMOTING_VERDICTS = ("promoted", "forced")


class BacktestInputError(ValueError):
    """A policy file, a model version or a shop the backtest cannot use (exit 2)."""


def _differences(left: dict, right: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(left) | set(right))
    out = []
    for key in keys:
        a, b = left.get(key), right.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def read_policies(base: Path, against: Path | None) -> tuple[Policy, Policy | None]:
    """The policy files, validated; two files of one version must hold the same values.

    Raises:
        BacktestInputError: A file is unreadable or breaks the policy schema (the message
            names the key), or both files claim one version with different values.
    """
    policies: list[Policy | None] = []
    for path in (base, against):
        if path is None:
            policies.append(None)
            continue
        try:
            policies.append(load_policy(path))
        except (OSError, ValueError) as exc:
            raise BacktestInputError(str(exc)) from exc
    first, second = policies
    assert first is not None
    if second is not None and first.version == second.version:
        differ = _differences(first.model_dump(mode="json"), second.model_dump(mode="json"))
        if differ:
            raise BacktestInputError(
                f"policy files {base} and {against} are both version {first.version!r} but "
                f"differ in {', '.join(differ)}: a changed policy needs a new version"
            )
    return first, second


def _replay_model(client, name: str, version: str) -> bt.ReplayModel:
    from mlflow.exceptions import MlflowException

    from training import registry
    from training.errors import RegistryError

    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        raise BacktestInputError(f"--model {version}: {name} has no version {version}") from exc
    try:
        registered = registry.read_registered(found)
    except RegistryError as exc:
        raise BacktestInputError(f"--model {version}: {exc}") from exc
    booster = registry.load_model(name, version)
    return bt.ReplayModel(
        str(found.version),
        booster,
        registered.threshold,
        tuple(registered.feature_columns),
        registered.tags.feature_set_version,
    )


def load_version(version: str, model_name: str = MODEL_NAME) -> bt.ReplayModel:
    """A registered version as the replay scores with it (its Booster, threshold, columns).

    Raises:
        BacktestInputError: The version does not exist or its tags are unreadable.
    """
    from training import registry

    return _replay_model(registry.connect(), model_name, version)


def model_schedule(
    model: str | None,
    as_trained: bool,
    model_name: str = MODEL_NAME,
    experiment_name: str = EXPERIMENT_NAME,
) -> bt.ModelSchedule:
    """Which registered version scores which request.

    - `model`: that version for every request;
    - `as_trained`: the version that was champion when the request was made, from the
      promotion gate's runs (each promoting run moved @champion to its challenger when it
      ended); none before the first promotion;
    - neither: the current @champion for every request.

    Raises:
        BacktestInputError: The version does not exist, or there is no champion.
    """
    from training import registry

    client = registry.connect()
    if model is not None:
        return bt.ModelSchedule.single(_replay_model(client, model_name, model))
    if not as_trained:
        champion = registry.version_by_alias(client, model_name, CHAMPION)
        if champion is None:
            raise BacktestInputError(f"{model_name} has no @{CHAMPION}: pass --model VERSION")
        version = str(champion.version)
        return bt.ModelSchedule.single(
            _replay_model(client, model_name, version),
            f"the current @{CHAMPION} (version {version}) for every request",
        )
    experiment = client.get_experiment_by_name(experiment_name)
    runs = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string="tags.job = 'promote'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
        if experiment is not None
        else []
    )
    changes = []
    loaded: dict[str, bt.ReplayModel] = {}
    for run in runs:
        if run.data.tags.get("verdict") not in PROMOTING_VERDICTS:
            continue
        promoted = run.data.params.get("challenger_version")
        if not promoted:
            continue
        version = str(promoted)
        if version not in loaded:
            loaded[version] = _replay_model(client, model_name, version)
        moved = pd.Timestamp(run.info.end_time or run.info.start_time, unit="ms", tz="UTC")
        changes.append((moved, loaded[version]))
    shown = ", ".join(f"v{m.version} from {t:%Y-%m-%d %H:%M}" for t, m in changes) or "none"
    return bt.ModelSchedule(tuple(changes), f"the champion of the time (promotions: {shown})")


def _write_atomically(out: Path, write) -> None:
    """Write a folder in a sibling temporary folder, then swap it in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class BacktestResult:
    """A backtest's tables, its timing and what it was run with."""

    policy: Policy
    against: Policy | None
    schedule: bt.ModelSchedule
    base: pd.DataFrame  # decisions joined to outcomes
    other: pd.DataFrame | None
    uncapped: pd.DataFrame | None  # the base policy without its loss budget, when it has one
    sweep: pd.DataFrame
    seconds: float
    replay_seconds: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.base)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")


def run_backtest(
    data_dir: Path,
    policy: Policy,
    schedule: bt.ModelSchedule,
    against: Policy | None = None,
    sweep_points: int = 8,
) -> BacktestResult:
    """Replay the log under one policy (and another), with the figures' tables."""
    log = features.load_log(data_dir)
    started = time.perf_counter()
    prepared = bt.prepare(log, schedule)
    requests = bt.requests_of(prepared.requests)
    replay_started = time.perf_counter()
    base = bt.decisions_table(prepared, bt.replay(prepared, policy, requests=requests))
    other = None
    if against is not None:
        other = bt.decisions_table(prepared, bt.replay(prepared, against, requests=requests))
    uncapped = None
    if policy.loss_budget.active:
        free = policy.model_copy(update={"loss_budget": type(policy.loss_budget)()})
        uncapped = bt.decisions_table(prepared, bt.replay(prepared, free, requests=requests))
    replay_seconds = time.perf_counter() - replay_started
    seconds = time.perf_counter() - started
    sweep = bt.threshold_sweep(prepared, policy, sweep_points)
    result = BacktestResult(
        policy, against, schedule, base, other, uncapped, sweep, seconds, replay_seconds
    )
    result.tables = _tables(result)
    return result


def _tables(result: BacktestResult) -> dict[str, pd.DataFrame]:
    tables: dict[str, pd.DataFrame] = {"decisions": result.base}
    levels = {"overall": None, "by_shop": "shop_id", "by_category": "category", "by_month": "month"}
    for name, by in levels.items():
        tables[name] = bt.figures(result.base, by)
        if result.other is not None:
            tables[f"{name}_side_by_side"] = bt.side_by_side(result.base, result.other, by)
    tables["tracking_after_approval"] = bt.tracking_after_approval(result.base)
    if result.other is not None:
        tables["decisions_against"] = result.other
        tables["changed_decisions"] = bt.changed_decisions(result.base, result.other)
    if result.uncapped is not None:
        tables["loss_budget_effect"] = bt.side_by_side(result.uncapped, result.base, None)
    tables["threshold_sweep"] = result.sweep
    return tables


def write_backtest(result: BacktestResult, out: Path) -> None:
    """The tables as CSV and Parquet, and report.html, into `out` (replaced atomically)."""
    from training.backtest_report import backtest_page

    def write(folder: Path) -> None:
        for name, table in result.tables.items():
            if name.startswith("decisions"):
                table.to_parquet(folder / f"{name}.parquet", index=False)
            else:
                table.to_csv(folder / f"{name}.csv", index=False)
                table.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "report.html").write_text(backtest_page(result), encoding="utf-8")

    _write_atomically(out, write)


def merchant_table(result: BacktestResult, shop_id: str) -> pd.DataFrame:
    """The shop's rows of the replay.

    Raises:
        BacktestInputError: The shop has no pre-shipment refund-only request in the log.
    """
    mine = result.base.loc[result.base["shop_id"] == shop_id]
    if mine.empty:
        raise BacktestInputError(
            f"--shop {shop_id}: no pre-shipment refund-only request of this shop in the log"
        )
    return mine


def check_shop(data_dir: Path, shop_id: str) -> None:
    """Refuse a shop absent from the log before any work is done.

    Raises:
        BacktestInputError: No such shop in the log.
    """
    log = features.load_log(data_dir)
    if shop_id not in set(log.shops["shop_id"]) and shop_id not in set(log.orders["shop_id"]):
        raise BacktestInputError(f"--shop {shop_id}: no such shop in the log {data_dir}")


def write_file_atomically(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
