"""Command line: `python -m features simulate | import | build | validate`."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from features.io import LogFileError, load_log, write_parquet
from features.schema import LogValidationError

app = typer.Typer(help="Transaction logs and point-in-time buyer features.", no_args_is_help=True)

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Directory for the log, meta.json, truth.parquet.")],
    profile: Annotated[
        str,
        typer.Option(
            help="Named world: default, small-shop, weak-signal, drifting (docs/simulator.md)."
        ),
    ] = "default",
    buyers: Annotated[
        int | None, typer.Option(min=1, help="Number of buyers (default: the profile's).")
    ] = None,
    shops: Annotated[
        int | None, typer.Option(min=1, help="Number of shops (default: the profile's).")
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, help="Length of the log in days (default: the profile's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, identical tables.")] = 0,
    start: Annotated[
        str, typer.Option(help="First day of the log, YYYY-MM-DD (UTC).")
    ] = "2025-01-01",
) -> None:
    """Simulate a realistic log with known ground truth (truth.parquet)."""
    from features.simulate import UnknownProfileError, check_world_dir, get_profile, write_world
    from features.simulate import simulate as run_simulation

    try:
        get_profile(profile)
    except UnknownProfileError as exc:
        _fail(f"--profile: {exc}")
    try:
        date.fromisoformat(start)
    except ValueError:
        _fail(f"--start {start!r} is not a date (expected YYYY-MM-DD)")
    try:
        check_world_dir(out)  # before the simulation, which can take a minute
    except LogFileError as exc:
        _fail(str(exc))
    sizes = {"buyers": buyers, "shops": shops, "days": days}  # None: the profile's
    progress = sys.stderr.isatty()
    world = run_simulation(**sizes, seed=seed, start=start, progress=progress, profile=profile)
    try:
        write_world(world, out)
    except OSError as exc:  # the files are moved in only once all are written
        _fail(f"cannot write the simulated log into {out}: {exc}")
    log = world.log
    typer.echo(
        f"wrote {out}: {len(log.buyers):,} buyers, {len(log.shops):,} shops, "
        f"{len(log.orders):,} orders, {len(log.refunds):,} refunds, "
        f"{log.start:%Y-%m-%d} to {log.end:%Y-%m-%d}"
        + ("" if profile == "default" else f" (profile {profile})")
    )


@app.command("import")
def import_export(
    sources: Annotated[
        list[Path], typer.Argument(help="The export's CSV files, as the mapping names them.")
    ],
    mapping: Annotated[Path, typer.Option(help="The mapping file (YAML, docs/import.md).")],
    out: Annotated[
        Path, typer.Option(help="Directory for the log: new, empty, or an earlier import.")
    ],
) -> None:
    """Turn an export into the log contract through a mapping; exit 2 writing nothing on
    any error (file, column and rows named)."""
    from features.imports import MappingError, SourceError
    from features.imports import import_export as run_import

    try:
        log = run_import(mapping, sources, out)
    except (MappingError, SourceError, LogFileError, LogValidationError) as exc:
        _fail(str(exc))
    except OSError as exc:  # the files are moved in only once all are written and read back
        _fail(f"cannot write the imported log into {out}: {exc}")
    typer.echo(
        f"wrote {out}: {len(log.buyers):,} buyers, {len(log.shops):,} shops, "
        f"{len(log.orders):,} orders, {len(log.refunds):,} refunds"
    )


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help="Data directory: buyers, shops, orders, refunds.")],
) -> None:
    """Check a log against the data contract; exit 2 naming every violation."""
    try:
        log = load_log(data)
    except (LogFileError, LogValidationError) as exc:
        _fail(str(exc))
    typer.echo(
        f"{data}: valid ({len(log.buyers):,} buyers, {len(log.orders):,} orders, "
        f"{len(log.refunds):,} refunds)"
    )


@app.command()
def build(
    data: Annotated[Path, typer.Option(help="Data directory: buyers, shops, orders, refunds.")],
    as_of: Annotated[
        list[str],
        typer.Option("--as-of", help="As-of date YYYY-MM-DD (T = 00:00 UTC), repeatable."),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Where to write: a Parquet file (pandas), a dataset folder (spark)."),
    ],
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Buyer partitions (default: one per ~2M orders; spark: per ~250k, >= cores).",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="pandas (one process) or spark (Spark reads the log itself).")
    ] = "pandas",
    master: Annotated[
        str, typer.Option(help="Spark master URL with --engine spark: local[*], spark://h:7077.")
    ] = "local[*]",
) -> None:
    """Compute buyer features as of one or more dates, strictly point-in-time."""
    from features.build import build_features

    for value in as_of:
        try:
            date.fromisoformat(value)
        except ValueError:
            _fail(f"--as-of {value!r} is not a date (expected YYYY-MM-DD)")
    if engine not in ("pandas", "spark"):
        _fail(f"--engine {engine!r}: expected pandas or spark")
    if engine == "spark":
        _build_on_spark(data, as_of, out, partitions, master)
        return
    if out.is_dir():
        _fail(f"--out {out} is a folder; give the path of the Parquet file to write")
    try:
        log = load_log(data)
        for value in as_of:
            log.check_as_of(value)
    except (LogFileError, LogValidationError, ValueError) as exc:
        _fail(str(exc))
    frame = build_features(log, as_of, partitions=partitions, progress=sys.stderr.isatty())
    write_parquet(frame, out)
    typer.echo(f"wrote {out}: {len(frame):,} rows x {frame.shape[1] - 2} features")


def _build_on_spark(
    data: Path, as_of: list[str], out: Path, partitions: int | None, master: str
) -> None:
    """`build --engine spark`: the same features, computed where Spark runs, into a folder."""
    from functools import partial

    from features.build import FEATURE_SET_VERSION, build_features
    from features.engines import EngineUnavailable, feature_columns, open_log
    from features.engines.spark_session import SparkJobError

    if out.is_file():
        _fail(f"--out {out} is a file; with --engine spark give a folder (a Parquet dataset)")
    try:
        log = open_log(data, engine="spark", master=master, partitions=partitions)
        dates = sorted({log.span.check_as_of(value) for value in as_of})
        job = partial(build_features, as_of_dates=dates, partitions=1)
        metadata = {
            "feature_set_version": FEATURE_SET_VERSION,
            "as_of": [d.date().isoformat() for d in dates],
            "engine": "spark",
        }
        rows = log.map_partitions(job, feature_columns(), out, metadata)
    except EngineUnavailable as exc:
        _fail(str(exc))
    except (LogFileError, LogValidationError, ValueError) as exc:
        _fail(str(exc))
    except SparkJobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"wrote {out}: {rows:,} rows x {len(feature_columns()) - 2} features (spark, {master})"
    )


if __name__ == "__main__":
    app()
