"""`python -m serving`: materialize the online store, or run the decision API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.config import Settings

app = typer.Typer(help="The fast-refund decision API and its online store.", no_args_is_help=True)


@app.command()
def materialize(
    data: Annotated[Path, typer.Option("--data", help="The transaction log directory.")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="As-of date YYYY-MM-DD; default: the end of the log."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="The online store file; default FASTREFUND_STORE_PATH."),
    ] = None,
    features_dir: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="Prebuilt buyer features (`features build`, e.g. --engine spark) to load "
            "instead of computing them; the log still gives revocations and shops.",
        ),
    ] = None,
) -> None:
    """Compute buyer features, revocations and shop eligibility; replace the store atomically."""
    import features
    from serving.database import DatabaseError
    from serving.materialize import materialize as run_materialize

    if as_of is not None and not _is_date(as_of):
        _fail(f"--as-of {as_of!r} is not a date (expected YYYY-MM-DD)")
    try:
        report = run_materialize(data, as_of=as_of, store_path=store, features_path=features_dir)
    except (features.LogFileError, features.LogValidationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except DatabaseError as exc:  # one line, never the password
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"online store {report.where} as of {report.as_of} ({report.feature_set_version}): "
        f"{report.buyers} buyers ({report.revoked_buyers} revoked), "
        f"{report.eligible_shops}/{report.shops} shops eligible"
    )
    typer.echo(
        f"risk: {report.tracking_after_refund} of {report.approved_pre_ship_refunds} approved "
        "pre-shipment refunds later got a tracking number"
    )
    for shop in report.worst_shops[:5]:
        typer.echo(
            f"  {shop['shop_id']}: {shop['tracking_after_refund']} of "
            f"{shop['approved_pre_ship_refunds']} approved pre-shipment refunds"
        )


@app.command()
def score(
    data: Annotated[Path, typer.Option("--data", help="The transaction log directory.")],
    out: Annotated[Path, typer.Option(help="Dataset folder for the scores (replaced whole).")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="As-of date YYYY-MM-DD; default: the end of the log."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="pandas (one process) or spark (Spark reads the log itself).")
    ] = "pandas",
    master: Annotated[
        str, typer.Option(help="Spark master URL with --engine spark: local[*], spark://h:7077.")
    ] = "local[*]",
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Buyer partitions (default: the engine's rule).")
    ] = None,
) -> None:
    """Score every buyer with the registry's champion: buyer_id, score, premium, version."""
    import features
    from features.engines import ENGINES, EngineUnavailable
    from features.engines.spark_session import SparkJobError
    from serving.config import ConfigError, Settings
    from serving.model import ModelUnavailable, load_champion
    from serving.policy import load_policy
    from serving.score import score_log

    if as_of is not None and not _is_date(as_of):
        _fail(f"--as-of {as_of!r} is not a date (expected YYYY-MM-DD)")
    if engine not in ENGINES:
        _fail(f"--engine {engine!r}: expected pandas or spark")
    if out.is_file():
        _fail(f"--out {out} is a file; give a folder (a Parquet dataset)")
    try:
        settings = Settings.load()
        cap = load_policy(settings.policy_path).max_premium_threshold
        champion = load_champion(
            settings.tracking_uri(), settings.model_name, settings.model_alias, cap
        )
        report = score_log(data, as_of, out, champion, engine, master, partitions)
    except (ConfigError, EngineUnavailable, ModelUnavailable) as exc:
        _fail(str(exc))
    except (features.LogFileError, features.LogValidationError, ValueError) as exc:
        _fail(str(exc))
    except SparkJobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"wrote {report.out}: {report.rows:,} buyers scored as of {report.as_of} by "
        f"{settings.model_name} version {report.model_version} ({report.premium:,} premium, "
        f"threshold {report.threshold:.6g}, engine {report.engine})"
    )


@app.command("export-decisions")
def export_decisions(
    out: Annotated[Path, typer.Option(help="File to write: .parquet or .csv.")],
    since: Annotated[
        str | None, typer.Option(help="First day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    audit: Annotated[
        Path | None,
        typer.Option(
            help="The audit log (SQLite); default FASTREFUND_DATABASE_URL's when set, else "
            "FASTREFUND_AUDIT_PATH."
        ),
    ] = None,
) -> None:
    """Write the audit log's decisions as a table for analysis (read-only; atomic)."""
    from features.io import atomic_path
    from serving.audit import AuditUnavailable
    from serving.config import ConfigError, Settings
    from serving.export import csv_safe
    from serving.export import export_decisions as read_decisions

    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not _is_date(value):
            _fail(f"{name} {value!r} is not a date (expected YYYY-MM-DD)")
    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out {out}: the file name must end in .parquet or .csv")
    if out.is_dir():
        _fail(f"--out {out} is a folder; give the path of the file to write")
    start = _midnight(since) if since else None
    end = _midnight(until) + 86_400.0 if until else None
    try:
        settings = Settings.load() if audit is None else None
        if settings is not None and settings.database_url is not None:  # the shared log
            from serving.postgres_export import export_decisions as read_from_postgres

            frame = read_from_postgres(settings.database_url.get_secret_value(), start, end)
        else:
            path = audit if audit is not None else Settings.load().audit_path
            frame = read_decisions(path, start, end)
    except (AuditUnavailable, ConfigError) as exc:
        _fail(str(exc))
    with atomic_path(out) as tmp:
        if out.suffix == ".csv":
            csv_safe(frame).to_csv(tmp, index=False)  # no cell a spreadsheet would run
        else:
            frame.to_parquet(tmp, index=False)
    approved = int((frame["decision"] == "auto_approve").sum())
    plural = "" if len(frame) == 1 else "s"
    typer.echo(f"wrote {out}: {len(frame):,} decision{plural}, {approved:,} auto-approved")
    codes = frame["reasons"].str.split(",").explode()
    for code, count in codes[codes != ""].value_counts().head(5).items():
        typer.echo(f"  {code}: {count:,}")


@app.command()
def migrate() -> None:
    """Bring the PostgreSQL schema (FASTREFUND_DATABASE_URL) to this code's version."""
    from serving.config import ConfigError, Settings
    from serving.database import DatabaseError, redact
    from serving.database import migrate as run_migrations

    try:
        url = Settings.load().database_url
    except ConfigError as exc:
        _fail(str(exc))
    if url is None:
        _fail("FASTREFUND_DATABASE_URL is not set (SQLite files need no migrations)")
    assert url is not None
    try:
        before, after = run_migrations(url.get_secret_value())
    except DatabaseError as exc:
        _fail(str(exc))
    where = redact(url.get_secret_value())
    if before == after:
        typer.echo(f"database {where}: schema at version {after}, nothing to do")
    else:
        typer.echo(f"database {where}: schema migrated from version {before} to {after}")


@app.command()
def drift(
    since: Annotated[
        str | None, typer.Option(help="First day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    audit: Annotated[
        Path | None, typer.Option(help="The audit log; default FASTREFUND_AUDIT_PATH.")
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(
            "--model-version",
            help="Judge this version's decisions; default: the version that scored the most.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="A reference profile file (reference/profile.json of the version's run) "
            "instead of the registry's."
        ),
    ] = None,
    plot: Annotated[
        Path, typer.Option(help="Where to draw the worst features' PSI (.png or .svg).")
    ] = Path("drift.png"),
    min_rows: Annotated[
        int, typer.Option("--min-rows", min=1, help="Fewer scored decisions: not enough data.")
    ] = 100,
) -> None:
    """PSI of every feature and of the score in the audit log's decisions against the model
    version's training population. Exit 0: no drift; 1: some PSI above the policy's
    drift_psi_alert; 3: no reference or not enough data to judge; 2: bad input."""
    from modelcontract import ReferenceProfile
    from serving.audit import AuditUnavailable
    from serving.config import ConfigError, Settings
    from serving.drift import ALERT, NO_REFERENCE, drift_report, report_lines
    from serving.drift_report import plot_worst, registry_reference, scored_rows
    from serving.policy import load_policy

    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not _is_date(value):
            _fail(f"{name} {value!r} is not a date (expected YYYY-MM-DD)")
    if plot.suffix not in (".png", ".svg"):
        _fail(f"--plot {plot}: the file name must end in .png or .svg")
    start = _midnight(since) if since else None
    end = _midnight(until) + 86_400.0 if until else None
    try:
        settings = Settings.load()
        policy = load_policy(settings.policy_path)
        found = scored_rows(_sqlite_audit(audit, settings, "drift"), start, end, model_version)
    except (AuditUnavailable, ConfigError, ValueError, OSError) as exc:
        _fail(str(exc))
    profile, why = None, ""
    if reference is not None:
        try:
            profile = ReferenceProfile.model_validate_json(reference.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _fail(f"--reference {reference}: {exc}")
    elif found.version is not None:
        try:
            profile, why = registry_reference(
                settings.tracking_uri(), settings.model_name, found.version
            )
        except Exception as exc:  # noqa: BLE001 - the registry's own error, named
            _fail(f"model registry: {type(exc).__name__}: {exc}")
    report = drift_report(
        found.rows,
        found.columns,
        found.scores,
        profile,
        policy.drift_psi_alert,
        threshold=found.threshold,
        model_version=found.version,
        min_rows=min_rows,
        exempt=policy.drift_exempt_features,
    )
    for line in report_lines(report):
        typer.echo(line)
    if report.status == NO_REFERENCE and why:
        typer.echo(f"  {why}")
    if len(found.versions) > 1:
        others = ", ".join(f"{v}: {n:,}" for v, n in found.versions.items() if v != found.version)
        typer.echo(f"  other versions in the range, not judged: {others}")
    if report.features:
        title = f"drift of version {report.model_version}: {report.rows:,} decisions"
        plot_worst(plot, report.worst, report.alert, report.exempt, title)
        typer.echo(f"wrote {plot}")
    if report.status == ALERT:
        raise typer.Exit(1)
    if report.status != "ok":
        raise typer.Exit(3)


@app.command("shadow-report")
def shadow_report(
    since: Annotated[
        str | None, typer.Option(help="First day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC), included; default: all.")
    ] = None,
    audit: Annotated[
        Path | None, typer.Option(help="The audit log; default FASTREFUND_AUDIT_PATH.")
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a page with plots here (.html)."),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Disagreements to list.")] = 20,
    data: Annotated[
        Path | None,
        typer.Option(
            help="The transaction log, for each model's bad rate on the requests only it would "
            "approve (refunds confirmed as abuse within 30 days of the decision)."
        ),
    ] = None,
) -> None:
    """How the challenger in shadow would have decided: agreement with the champion and the
    requests they would have decided differently (read-only)."""
    import features
    from serving.audit import AuditUnavailable
    from serving.config import ConfigError, Settings
    from serving.shadow_report import (
        bad_rate_lines,
        report_lines,
        shadowed_decisions,
        with_labels,
        write_html,
    )

    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not _is_date(value):
            _fail(f"{name} {value!r} is not a date (expected YYYY-MM-DD)")
    if html_out is not None and html_out.suffix != ".html":
        _fail(f"--html {html_out}: the file name must end in .html")
    start = _midnight(since) if since else None
    end = _midnight(until) + 86_400.0 if until else None
    try:
        path = _sqlite_audit(audit, Settings.load(), "shadow-report")
        frame, total = shadowed_decisions(path, start, end)
    except (AuditUnavailable, ConfigError) as exc:
        _fail(str(exc))
    for line in report_lines(frame, total, top):
        typer.echo(line)
    if data is not None and not frame.empty:
        try:
            log = features.load_log(data)
        except (features.LogFileError, features.LogValidationError) as exc:
            _fail(str(exc))
        typer.echo("once labels have matured (abuse confirmed within 30 days):")
        for line in bad_rate_lines(with_labels(frame, log.refunds, log.end)):
            typer.echo(f"  {line}")
    if html_out is not None:
        write_html(html_out, frame, total)
        typer.echo(f"wrote {html_out}")


def _sqlite_audit(audit: Path | None, settings: Settings, command: str) -> Path:
    """The SQLite audit log a report reads: `--audit`, else FASTREFUND_AUDIT_PATH; refused
    (exit 2) when the service keeps its log in PostgreSQL, which these reports do not read
    yet (a stale SQLite file at the default path would be read as if it were the log)."""
    if audit is not None:
        return audit
    if settings.database_url is not None:
        _fail(
            f"{command} reads a SQLite audit log, and this service keeps its log in "
            "PostgreSQL (FASTREFUND_DATABASE_URL); give --audit FILE"
        )
    return settings.audit_path


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _midnight(day: str) -> float:
    """Epoch seconds of 00:00 UTC on `day` (any form `date.fromisoformat` reads)."""
    from datetime import UTC, date, datetime, time

    return datetime.combine(date.fromisoformat(day), time(), UTC).timestamp()


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)  # a date alone, as `features build` takes it: no time of day
    except ValueError:
        return False
    return True


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (each holds its own model and connections).")
    ] = 1,
) -> None:
    """Serve the decision API (configuration from FASTREFUND_* variables or .env)."""
    import uvicorn

    from serving.config import ConfigError, Settings
    from serving.logs import configure_logging
    from serving.policy import load_policy

    try:
        settings = Settings.load()
        settings.check_tokens()
        settings.check_host(host)
        load_policy(settings.policy_path)  # read again at startup; here for a clear error
    except (ConfigError, ValueError, OSError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.database_url is not None:
        from serving.database import DatabaseError, ensure_schema

        try:  # migrated when behind, refused when ahead; before any worker starts
            ensure_schema(settings.database_url.get_secret_value())
        except DatabaseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    uvicorn.run(
        "serving.__main__:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
    )


def worker_app() -> FastAPI:
    """The app as `run` serves it, built in each worker process: with `--workers N` uvicorn
    starts the workers afresh, with Python's default logging until it is configured here."""
    from serving.app import create_app
    from serving.config import Settings
    from serving.logs import configure_logging

    settings = Settings.load()
    configure_logging(settings.log_level)
    return create_app(settings)


if __name__ == "__main__":
    app()
