"""`python -m training`: train, promote and the scheduled retrain job.

Exit status: 0 done (a refused promotion or a skipped retrain is done), 1 failed (the
reason on stderr), 2 bad usage, 75 another retrain holds the lock (try later).
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from training.config import DataChecks, ModelParams, SnapshotParams, TrainConfig

# The options' defaults are the configuration's own, so the two cannot drift apart.
_SNAPSHOTS, _MODEL, _CHECKS = SnapshotParams(), ModelParams(), DataChecks()
_TARGET: float = TrainConfig.model_fields["target_bad_rate"].default

app = typer.Typer(
    help="Train the buyer-quality model, gate its promotion, run the retraining job.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_FAILED = 1
EXIT_USAGE = 2  # as Typer exits for an option it cannot parse
EXIT_LOCKED = 75  # sysexits EX_TEMPFAIL: cron should simply try again next time

DataOpt = Annotated[
    Path, typer.Option("--data", help="Data directory: buyers, shops, orders, refunds tables.")
]
HorizonOpt = Annotated[
    int, typer.Option(help="Label horizon H in days: refund requests in (T, T+H] count.")
]
MaturityOpt = Annotated[
    int, typer.Option(help="Label maturity M in days: confirmations before T+H+M count.")
]
FrequencyOpt = Annotated[
    str, typer.Option(help="Spacing of the as-of dates, a pandas offset alias (MS = monthly).")
]
HistoryOpt = Annotated[
    int, typer.Option(help="Days of log before the first as-of date, so buyers have history.")
]
TestDatesOpt = Annotated[int, typer.Option(help="Newest matured as-of dates held out as test.")]
ValidDatesOpt = Annotated[
    int,
    typer.Option(
        help="As-of dates used for validation: the newest whose labels were known on the "
        "first test date (the dates between are purged)."
    ),
]
TargetOpt = Annotated[
    float, typer.Option(help="Highest bad rate tolerated among premium buyers (validation).")
]
SeedOpt = Annotated[int, typer.Option(help="Random seed; same data and seed, same model.")]
RoundsOpt = Annotated[int, typer.Option(help="Most boosting rounds (early stopping cuts it).")]
StoppingOpt = Annotated[
    int, typer.Option(help="Stop after this many rounds without validation improvement.")
]
RateOpt = Annotated[float, typer.Option(help="LightGBM learning rate.")]
ThreadsOpt = Annotated[
    int,
    typer.Option(help="LightGBM threads (0 = every usable core; 1 is steadiest on a busy box)."),
]
PositivesOpt = Annotated[
    int, typer.Option(help="Fewest bad buyers each split must hold to train or judge.")
]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar while snapshots are built.")]


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _failures() -> Iterator[None]:
    """Turn the jobs' known failures into a message on stderr and a non-zero exit."""
    from pydantic import ValidationError

    from features import LogFileError, LogValidationError
    from training.errors import JobLockedError, TrainingError

    try:
        yield
    except JobLockedError as exc:
        typer.echo(f"locked: {exc}", err=True)
        raise typer.Exit(EXIT_LOCKED) from exc
    except ValidationError as exc:  # an option's value the job's settings refuse
        problems = [
            f"--{str(err['loc'][-1]).replace('_', '-')}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)
            if err["loc"]
        ]
        typer.echo(f"error: {'; '.join(problems) or exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    except (TrainingError, LogFileError, LogValidationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # an MLflow, database or disk failure: one line for cron's mail
        logging.getLogger("training").info("the job failed", exc_info=exc)
        typer.echo(f"error: {type(exc).__name__}: {exc}"[:2000] + " (-v: traceback)", err=True)
        raise typer.Exit(EXIT_FAILED) from exc


def _train_config(
    data: Path,
    horizon_days: int,
    maturity_days: int,
    frequency: str,
    min_history_days: int,
    test_dates: int,
    valid_dates: int,
    target_bad_rate: float,
    seed: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    learning_rate: float,
    num_threads: int,
    min_positives: int,
    progress: bool,
):
    return TrainConfig(
        data_dir=data,
        snapshots=SnapshotParams(
            horizon_days=horizon_days,
            maturity_days=maturity_days,
            frequency=frequency,
            min_history_days=min_history_days,
            test_dates=test_dates,
            valid_dates=valid_dates,
        ),
        model=ModelParams(
            seed=seed,
            num_boost_round=num_boost_round,
            early_stopping_rounds=early_stopping_rounds,
            learning_rate=learning_rate,
            num_threads=num_threads,
        ),
        checks=DataChecks(min_positives=min_positives),
        target_bad_rate=target_bad_rate,
        progress=progress,
    )


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _echo_training(result) -> None:
    from training.train import HAND_RULE, LOGISTIC, MODEL, ORACLE, TABLE_METRICS

    table = result.evaluation.table()
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
        typer.echo("  ".join([f"{name:>10}", *(f"{_fmt(v):>10}" for v in cells)]))
    model_auc = table.loc[MODEL, "roc_auc"]
    typer.echo(
        f"test AUC: model - hand rule = {model_auc - table.loc[HAND_RULE, 'roc_auc']:+.4f}; "
        f"model - logistic = {model_auc - table.loc[LOGISTIC, 'roc_auc']:+.4f}"
    )
    if ORACLE in table.index:
        typer.echo(
            f"test AUC: model / oracle = {model_auc / table.loc[ORACLE, 'roc_auc']:.4f}; "
            f"premium coverage: model / oracle = "
            f"{_ratio(table.loc[MODEL, 'premium_coverage'], table.loc[ORACLE, 'premium_coverage'])}"
        )
    typer.echo(f"data window {result.data_window}  fingerprint {result.fingerprint[:12]}")
    typer.echo(f"run id {result.run_id}")
    typer.echo(f"registered buyer-quality version {result.model_version} as @challenger")


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
def train_command(
    data: DataOpt,
    horizon_days: HorizonOpt = _SNAPSHOTS.horizon_days,
    maturity_days: MaturityOpt = _SNAPSHOTS.maturity_days,
    frequency: FrequencyOpt = _SNAPSHOTS.frequency,
    min_history_days: HistoryOpt = _SNAPSHOTS.min_history_days,
    test_dates: TestDatesOpt = _SNAPSHOTS.test_dates,
    valid_dates: ValidDatesOpt = _SNAPSHOTS.valid_dates,
    target_bad_rate: TargetOpt = _TARGET,
    seed: SeedOpt = _MODEL.seed,
    num_boost_round: RoundsOpt = _MODEL.num_boost_round,
    early_stopping_rounds: StoppingOpt = _MODEL.early_stopping_rounds,
    learning_rate: RateOpt = _MODEL.learning_rate,
    num_threads: ThreadsOpt = _MODEL.num_threads,
    min_positives: PositivesOpt = _CHECKS.min_positives,
    progress: ProgressOpt = True,
    matrix: Annotated[
        Path | None,
        typer.Option(
            "--matrix",
            help="A training matrix `training snapshots` built (e.g. on Spark): read it "
            "instead of building snapshots; --data still names its log (fingerprint, oracle).",
        ),
    ] = None,
) -> None:
    """Build snapshots, train LightGBM and baselines, log to MLflow, register @challenger."""
    with _failures():
        from training.train import train

        config = _train_config(
            data,
            horizon_days,
            maturity_days,
            frequency,
            min_history_days,
            test_dates,
            valid_dates,
            target_bad_rate,
            seed,
            num_boost_round,
            early_stopping_rounds,
            learning_rate,
            num_threads,
            min_positives,
            progress,
        )
        if matrix is not None:
            config = config.model_copy(update={"matrix_dir": matrix})
        _echo_training(train(config))


@app.command("snapshots")
def snapshots_command(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="The matrix's dataset folder (replaced whole).")],
    engine: Annotated[
        str, typer.Option(help="pandas (one process) or spark (Spark reads the log itself).")
    ] = "pandas",
    master: Annotated[
        str, typer.Option(help="Spark master URL with --engine spark: local[*], spark://h:7077.")
    ] = "local[*]",
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Buyer partitions (default: the engine's rule).")
    ] = None,
    horizon_days: HorizonOpt = _SNAPSHOTS.horizon_days,
    maturity_days: MaturityOpt = _SNAPSHOTS.maturity_days,
    frequency: FrequencyOpt = _SNAPSHOTS.frequency,
    min_history_days: HistoryOpt = _SNAPSHOTS.min_history_days,
) -> None:
    """Build the training matrix (features + labels at every matured date) into a folder,
    for `train --matrix`: on Spark, a cluster builds what one machine cannot."""
    with _failures():
        from features.engines import ENGINES, EngineUnavailable
        from training.matrix import build_matrix

        if engine not in ENGINES:
            typer.echo(f"error: --engine {engine!r}: expected pandas or spark", err=True)
            raise typer.Exit(EXIT_USAGE)
        params = SnapshotParams(
            horizon_days=horizon_days,
            maturity_days=maturity_days,
            frequency=frequency,
            min_history_days=min_history_days,
        )
        try:
            report = build_matrix(data, params, out, engine, master, partitions)
        except EngineUnavailable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from exc
        first, last = report.dates[0].date(), report.dates[-1].date()
        typer.echo(
            f"wrote {out}: {report.rows:,} labelled rows at {len(report.dates)} as-of dates "
            f"({first} to {last}), engine {engine}"
        )


@app.command("promote")
def promote_command(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data to judge on (default: the challenger's own data)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate refuses (recorded).")
    ] = False,
    target_bad_rate: Annotated[
        float | None,
        typer.Option(help="Bad rate for coverage-at-target (default: the challenger's)."),
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why (e.g. for --force): kept with the gate run and the version.")
    ] = "",
) -> None:
    """Move @champion to @challenger only if it is not worse on the newest matured data."""
    with _failures():
        from training.config import PromoteConfig
        from training.promote import promote

        config = PromoteConfig(
            data_dir=data, force=force, target_bad_rate=target_bad_rate, reason=reason
        )
        _echo_promotion(promote(config))


@app.command("retrain")
def retrain_command(
    data: DataOpt,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if data and settings are unchanged.")
    ] = False,
    force_promote: Annotated[
        bool, typer.Option("--force-promote", help="Promote even if the gate refuses.")
    ] = False,
    lock_file: Annotated[
        Path, typer.Option(help="Lock file that keeps two runs from overlapping.")
    ] = Path("mlruns/.retrain.lock"),
    materialize: Annotated[
        bool, typer.Option(help="Refresh serving's online store after promotion.")
    ] = True,
    horizon_days: HorizonOpt = _SNAPSHOTS.horizon_days,
    maturity_days: MaturityOpt = _SNAPSHOTS.maturity_days,
    frequency: FrequencyOpt = _SNAPSHOTS.frequency,
    min_history_days: HistoryOpt = _SNAPSHOTS.min_history_days,
    test_dates: TestDatesOpt = _SNAPSHOTS.test_dates,
    valid_dates: ValidDatesOpt = _SNAPSHOTS.valid_dates,
    target_bad_rate: TargetOpt = _TARGET,
    seed: SeedOpt = _MODEL.seed,
    num_boost_round: RoundsOpt = _MODEL.num_boost_round,
    early_stopping_rounds: StoppingOpt = _MODEL.early_stopping_rounds,
    learning_rate: RateOpt = _MODEL.learning_rate,
    num_threads: ThreadsOpt = _MODEL.num_threads,
    min_positives: PositivesOpt = _CHECKS.min_positives,
    progress: ProgressOpt = False,
) -> None:
    """The scheduled job: train, promote, refresh the online store (cron-safe).

    Exit status: 0 done (or skipped: data and settings unchanged), 1 failed (reason on stderr),
    75 another retrain holds the lock, 143 stopped by SIGTERM (its MLflow runs marked failed).
    """
    # A scheduler's timeout sends SIGTERM: unwind, so the runs are not left RUNNING forever.
    signal.signal(signal.SIGTERM, _stop)
    with _failures():
        from training.config import RetrainConfig
        from training.retrain import retrain

        config = RetrainConfig(
            train=_train_config(
                data,
                horizon_days,
                maturity_days,
                frequency,
                min_history_days,
                test_dates,
                valid_dates,
                target_bad_rate,
                seed,
                num_boost_round,
                early_stopping_rounds,
                learning_rate,
                num_threads,
                min_positives,
                progress,
            ),
            force=force,
            force_promote=force_promote,
            lock_path=lock_file,
            materialize="auto" if materialize else "skip",
        )
        result = retrain(config)
        if result.outcome == "skipped":
            typer.echo(
                f"skipped: data (fingerprint {result.fingerprint[:12]}) and settings unchanged "
                f"since the last completed retrain (--force to retrain); run id {result.run_id}"
            )
            return
        if result.outcome == "resumed":
            typer.echo(
                "resumed: an earlier run trained and judged for the same data and settings, "
                "then stopped short of the online store; only the store was done now"
            )
        else:
            _echo_training(result.train)
            _echo_promotion(result.promotion)
        typer.echo(f"online store: {result.store_note}")
        typer.echo(f"retrain run id {result.run_id}")


if __name__ == "__main__":
    app()
