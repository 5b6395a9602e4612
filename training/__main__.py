"""`python -m training`: train, promote and the scheduled retrain job.

Exit status: 0 done (a refused promotion or a skipped retrain is done), 1 failed (the
reason on stderr), 2 bad usage or a data folder that is not a valid log (as `python -m
features` and `python -m serving` exit), 75 another retrain holds the lock (try later).

The options are the job configuration's own fields (`training.options`): name, type,
default, help text and validation come from `training.config`, written once.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from modelcontract import CHALLENGER, MODEL_NAME
from training.config import MatrixConfig, PromoteConfig, RetrainConfig, TrainConfig
from training.options import EXIT_BAD_INPUT, Option, command

app = typer.Typer(
    help="Train the buyer-quality model, gate its promotion, run the retraining job.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_FAILED = 1
EXIT_LOCKED = 75  # sysexits EX_TEMPFAIL: cron should simply try again next time

# The settings both `train` and `retrain` offer, as paths into TrainConfig.
_TRAINING = (
    "snapshots.horizon_days",
    "snapshots.maturity_days",
    "snapshots.frequency",
    "snapshots.min_history_days",
    "snapshots.test_dates",
    "snapshots.valid_dates",
    "target_bad_rate",
    "model.seed",
    "model.num_boost_round",
    "model.early_stopping_rounds",
    "model.learning_rate",
    "model.num_threads",
    "checks.min_positives",
)
_SEARCH = (
    Option("search.trials", ("--search-trials",)),
    Option("search.seconds", ("--search-seconds",)),
)
TRAIN_OPTIONS = (
    Option("data_dir", ("--data",)),
    *(Option(path) for path in _TRAINING),
    *_SEARCH,
    Option("progress"),
    Option("matrix_dir", ("--matrix",)),
)
MATRIX_OPTIONS = (
    Option("data_dir", ("--data",)),
    Option("out"),
    Option("engine"),
    Option("master"),
    Option("partitions"),
    *(Option(path) for path in _TRAINING[:4]),
)
PROMOTE_OPTIONS = (
    Option("data_dir", ("--data",)),
    Option("force", ("--force",)),
    Option("target_bad_rate"),
    Option("reason"),
)
RETRAIN_OPTIONS = (
    Option("train.data_dir", ("--data",)),
    Option("force", ("--force",)),
    Option("force_promote", ("--force-promote",)),
    Option("lock_path", ("--lock-file",)),
    Option("materialize"),
    *(Option(f"train.{path}") for path in _TRAINING),
    *(Option(f"train.{option.path}", option.flags) for option in _SEARCH),
    Option("train.progress", default=False),  # under cron, no bar in the mail
)


# Where a SIGTERM must not land. Raised inside SQLAlchemy's commit, SystemExit skips MLflow's
# rollback (it catches Exception only): the session keeps SQLite's write lock, and marking the
# runs FAILED then fails with "database is locked" (exit 1, runs left RUNNING).
_DATABASE_CODE = ("/sqlalchemy/", "/mlflow/store/")
_DEFER_SECONDS = 0.05
_pending: list[int] = []


def _inside_database_code(frame: FrameType | None) -> bool:
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _DATABASE_CODE):
            return True
        frame = frame.f_back
    return False


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: unwind with exit 128 + signum, but never from inside a database call: there
    it is tried again `_DEFER_SECONDS` later (SIGALRM), once the call has returned."""
    if _inside_database_code(frame):
        _pending[:] = [signum]
        signal.setitimer(signal.ITIMER_REAL, _DEFER_SECONDS)
        return
    _pending.clear()
    raise SystemExit(128 + signum)


def _stop_deferred(_signum: int, frame: FrameType | None) -> None:
    if _pending:
        _stop(_pending[0], frame)


@contextmanager
def _failures() -> Iterator[None]:
    """Turn the jobs' known failures into a message on stderr and a non-zero exit."""
    from features import LogFileError, LogValidationError
    from training.errors import JobLockedError, TrainingError

    try:
        yield
    except JobLockedError as exc:
        typer.echo(f"locked: {exc}", err=True)
        raise typer.Exit(EXIT_LOCKED) from exc
    except (LogFileError, LogValidationError) as exc:  # bad input: retrying will not help
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    except TrainingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # an MLflow, database or disk failure: one line for cron's mail
        logging.getLogger("training").info("the job failed", exc_info=exc)
        typer.echo(f"error: {type(exc).__name__}: {exc}"[:2000] + " (-v: traceback)", err=True)
        raise typer.Exit(EXIT_FAILED) from exc


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _echo_training(result) -> None:
    from training.train import HAND_RULE, ORACLE, TABLE_METRICS

    evaluation = result.evaluation
    if evaluation.selection is not None:
        typer.echo(evaluation.selection.summary())
    table = evaluation.table()
    header = (
        "scorer",
        "ROC AUC",
        "PR AUC",
        "Brier",
        "calib.err",
        "premium",
        "bad rate",
        "threshold",
    )
    typer.echo("  ".join(f"{h:>10}" for h in header))
    for name, row in table.iterrows():
        cells = [row[c] for c in (*TABLE_METRICS, "threshold")]
        mark = "  <- registered" if name == evaluation.chosen else ""
        typer.echo("  ".join([f"{name:>10}", *(f"{_fmt(v):>10}" for v in cells)]) + mark)
    model_auc = table.loc[evaluation.chosen, "roc_auc"]
    others = [name for name in evaluation.baselines() if name != HAND_RULE]
    typer.echo(
        f"test AUC: model ({evaluation.chosen}) - hand rule = "
        f"{model_auc - table.loc[HAND_RULE, 'roc_auc']:+.4f}"
        + "".join(
            f"; model - {name} = {model_auc - table.loc[name, 'roc_auc']:+.4f}" for name in others
        )
    )
    if ORACLE in table.index:
        coverage = table["premium_coverage"]
        typer.echo(
            f"test AUC: model / oracle = {model_auc / table.loc[ORACLE, 'roc_auc']:.4f}; "
            f"premium coverage: model / oracle = "
            f"{_ratio(coverage[evaluation.chosen], coverage[ORACLE])}"
        )
    typer.echo(f"data window {result.data_window}  fingerprint {result.fingerprint[:12]}")
    typer.echo(f"run id {result.run_id}")
    typer.echo(
        f"registered {MODEL_NAME} version {result.model_version} ({evaluation.chosen}) "
        f"as @{CHALLENGER}"
    )


def _ratio(numerator: float, denominator: float) -> str:
    return "-" if not denominator else f"{numerator / denominator:.4f}"


def _echo_promotion(result) -> None:
    if result.challenger is not None:
        typer.echo(f"gate data: newest matured as-of date {result.gate_as_of}")
        typer.echo(f"{'':>12}{'ROC AUC':>10}{'cov@target':>12}{'calib.err':>11}")
        for label, figures in (("challenger", result.challenger), ("champion", result.champion)):
            if figures is not None:
                typer.echo(
                    f"{label:>12}{_fmt(figures.roc_auc):>10}"
                    f"{_fmt(figures.coverage_at_target):>12}{_fmt(figures.calibration_error):>11}"
                    f"  (v{figures.version})"
                )
    if result.comparisons:
        typer.echo(
            f"paired bootstrap ({result.bootstrap_rounds} resamples, {result.confidence:.0%} "
            "intervals), challenger minus:"
        )
        for name, comparison in result.comparisons.items():
            typer.echo(
                f"{name:>12}  AUC {comparison.auc_difference.text()}  coverage@target "
                f"{comparison.coverage_difference.text(3)}"
                + ("  significantly worse" if comparison.significantly_worse else "")
            )
    if result.note:
        typer.echo(f"note: {result.note}")
    for reason in result.verdict.reasons:
        typer.echo(f"  - {reason}")
    typer.echo(
        f"verdict: {result.verdict.label}; champion is version {result.champion_version}"
        + (f", previous is {result.previous_version}" if result.previous_version else "")
    )
    if result.run_id:
        typer.echo(f"gate run id {result.run_id}")


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command("train")
@command(TrainConfig, TRAIN_OPTIONS)
def train_command(config: TrainConfig) -> None:
    """Build snapshots, train LightGBM and baselines, log to MLflow, register @challenger."""
    with _failures():
        from training.train import train

        _echo_training(train(config))


@app.command("snapshots")
@command(MatrixConfig, MATRIX_OPTIONS)
def snapshots_command(config: MatrixConfig) -> None:
    """Build the training matrix (features + labels at every matured date) into a folder,
    for `train --matrix`: on Spark, a cluster builds what one machine cannot."""
    with _failures():
        from features.engines import EngineUnavailable
        from training.matrix import build_matrix

        try:
            report = build_matrix(
                config.data_dir,
                config.snapshots,
                config.out,
                config.engine,
                config.master,
                config.partitions,
            )
        except EngineUnavailable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from exc
        first, last = report.dates[0].date(), report.dates[-1].date()
        typer.echo(
            f"wrote {config.out}: {report.rows:,} labelled rows at {len(report.dates)} as-of "
            f"dates ({first} to {last}), engine {config.engine}"
        )


@app.command("promote")
@command(PromoteConfig, PROMOTE_OPTIONS)
def promote_command(config: PromoteConfig) -> None:
    """Move @champion to @challenger only if it is not worse on the newest matured data."""
    with _failures():
        from training.promote import promote

        _echo_promotion(promote(config))


@app.command("retrain")
@command(RetrainConfig, RETRAIN_OPTIONS)
def retrain_command(config: RetrainConfig) -> None:
    """The scheduled job: train, promote, refresh the online store (cron-safe).

    Exit status: 0 done (or skipped: data and settings unchanged), 1 failed (reason on stderr),
    2 bad options or data, 75 another retrain holds the lock, 143 stopped by SIGTERM (its
    MLflow runs marked failed).
    """
    # A scheduler's timeout sends SIGTERM: unwind, so the runs are not left RUNNING forever.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGALRM, _stop_deferred)
    with _failures():
        from training.retrain import retrain

        result = retrain(config)
        if result.status == "skipped":
            typer.echo(
                f"skipped: data (fingerprint {result.fingerprint[:12]}) and settings unchanged "
                f"since the last completed retrain (--force to retrain); run id {result.run_id}"
            )
            return
        if result.status == "resumed":
            typer.echo(
                "resumed: an earlier run trained and judged for the same data and settings, "
                "then stopped short of the online store; only the store was done now"
            )
        else:
            _echo_training(result.train)
            _echo_promotion(result.promotion)
        typer.echo(f"online store: {result.store_note}")
        typer.echo(f"retrain run id {result.run_id}")


@app.command("backtest")
def backtest_command(
    data: Annotated[Path, typer.Option("--data", help="The transaction log (a folder).")],
    policy: Annotated[Path, typer.Option(help="The policy file to replay (YAML).")],
    out: Annotated[Path, typer.Option(help="Folder for the tables and report.html.")],
    against: Annotated[
        Path | None, typer.Option(help="A second policy file, shown side by side.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Score every request with this registered version.")
    ] = None,
    as_trained: Annotated[
        bool,
        typer.Option(
            "--as-trained", help="Score each request with the champion of its time (promotions)."
        ),
    ] = False,
    sweep: Annotated[int, typer.Option(min=0, help="Thresholds in the sweep plot.")] = 8,
) -> None:
    """Replay every pre-shipment refund-only request of the log through the serving rules,
    point in time, and write the figures (docs/backtest.md)."""
    with _failures(), _bad_backtest_input():
        from training.backtest_run import (
            model_schedule,
            read_policies,
            run_backtest,
            write_backtest,
        )

        if model is not None and as_trained:
            raise typer.BadParameter("--model and --as-trained are exclusive")
        base, other = read_policies(policy, against)
        schedule = model_schedule(model, as_trained)
        result = run_backtest(data, base, schedule, other, sweep)
        write_backtest(result, out)
        overall = result.tables["overall"].iloc[0]
        typer.echo(
            f"replayed {result.requests:,} requests in {result.seconds:.1f} s "
            f"({result.requests_per_second:,.0f} requests/s); model: {schedule.description}"
        )
        typer.echo(
            f"policy {base.version}: auto-approved {int(overall['auto_approved']):,} "
            f"({overall['coverage']:.1%}), abuse approved {int(overall['abuse_approved'])} "
            f"({overall['abuse_approved_cny']:,.2f} CNY), CNY at risk {overall['cny_at_risk']:,.2f}"
        )
        if other is not None:
            side = result.tables["overall_side_by_side"].iloc[0]
            typer.echo(
                f"policy {other.version}: auto-approved {int(side['auto_approved_against']):,} "
                f"({side['auto_approved_difference']:+,.0f}), abuse approved CNY "
                f"{side['abuse_approved_cny_against']:,.2f} "
                f"({side['abuse_approved_cny_difference']:+,.2f})"
            )
        typer.echo(f"wrote {out}/report.html and its tables")


@app.command("merchant-report")
def merchant_report_command(
    shop: Annotated[str, typer.Option(help="The shop id.")],
    data: Annotated[Path, typer.Option("--data", help="The transaction log (a folder).")],
    out: Annotated[Path, typer.Option(help="The HTML page to write.")],
    policy: Annotated[
        Path | None, typer.Option(help="The policy file (default: serving/policy.yaml).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A registered version (default: the current champion).")
    ] = None,
) -> None:
    """Write the page a merchant is shown: reviews saved, time to refund, disputes before and
    after the service, and the orders with a tracking number after an approved refund."""
    with _failures(), _bad_backtest_input():
        from serving.policy import load_policy
        from training.backtest_report import merchant_page
        from training.backtest_run import (
            check_shop,
            merchant_table,
            model_schedule,
            read_policies,
            run_backtest,
            write_file_atomically,
        )

        check_shop(data, shop)
        base = read_policies(policy, None)[0] if policy is not None else load_policy()
        result = run_backtest(data, base, model_schedule(model, False), sweep_points=0)
        mine = merchant_table(result, shop)
        write_file_atomically(out, merchant_page(shop, result, mine))
        typer.echo(f"wrote {out}: {len(mine):,} requests of shop {shop}")


@app.command("replay-audit")
def replay_audit_command(
    audit: Annotated[Path, typer.Option(help="The service's audit log (SQLite, read-only).")],
    store: Annotated[Path, typer.Option(help="The online store file the period was served from.")],
    policy: Annotated[Path, typer.Option(help="The policy file to judge by (YAML).")],
    model: Annotated[
        str | None, typer.Option(help="Score every record with this version (a what-if).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="CSV of every record: served and replayed, side by side.")
    ] = None,
) -> None:
    """Replay a served period's audit log through the backtest's decision and compare: with
    the served policy and model every decision must come out as served (exit 1 if one does
    not, but for an admin override made after it); with another policy or --model, what they
    would have decided (docs/backtest.md)."""
    with _failures(), _bad_backtest_input():
        from training.backtest_audit import replay_audit
        from training.backtest_run import load_version, read_policies, write_file_atomically

        base = read_policies(policy, None)[0]
        chosen = load_version(model) if model is not None else None
        result = replay_audit(audit, store, base, load_version, chosen)
        table = result.table
        if out is not None:
            write_file_atomically(out, table.to_csv(index=False))
        differ = result.differences
        explained = len(differ) - len(result.unexplained)
        typer.echo(
            f"replayed {len(table):,} decisions under policy {base.version}: "
            f"{len(table) - len(differ):,} as served, {len(differ):,} different"
            + (f" ({explained:,} on a buyer or shop an admin overrode later)" if explained else "")
        )
        for row in differ.head(10).itertuples():
            typer.echo(
                f"  {row.refund_id}: served {row.decision_served} [{row.reasons_served}], "
                f"replayed {row.decision_replayed} [{row.reasons_replayed}]"
                + (" (overridden later)" if row.overridden_later else "")
            )
        served_policy = set(table["policy_served"]) <= {base.version}
        if len(result.unexplained) and served_policy and model is None:
            raise typer.Exit(EXIT_FAILED)  # the served policy and model: a failed check


@contextmanager
def _bad_backtest_input() -> Iterator[None]:
    from training.backtest_run import BacktestInputError

    try:
        yield
    except (BacktestInputError, typer.BadParameter) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc


if __name__ == "__main__":
    app()
