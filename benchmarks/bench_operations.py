"""What operating the model costs a decision: factors, a challenger in shadow, drift.

Builds a simulated world, materializes the online store and registers a LightGBM champion
(300 trees, 31 leaves, as `bench_serving.py` does) with the reference profile training logs,
then times one decision in process (`Service.evaluate`: rules + lookup + score + answer,
DESIGN.md's target, and `Service.decide`, the same with the audit commit) in each
configuration, in alternating rounds in the same run, and reports the medians of the rounds:

- `plain`: the champion without its reference profile (no factors: a version from before);
- `factors`: with it, so every buyer who is not premium gets the factors in words (60% of
  the buyers here: the threshold is the 40th percentile of the scores);
- `shadow`: `factors` with a challenger in shadow (a second registered version of the same
  shape, loaded by `serving.shadow.load_challenger` as serving loads `@challenger`): every
  decision also scores it and decides what it would have;

and the drift window's cost: recording one scored decision (`DriftWindow.record`, on the
decision path of `decide`) and computing every PSI from a full window (at a `/metrics`
scrape, off the decision path), per decision of the window.

Run: `.venv/bin/python benchmarks/bench_operations.py` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from bench_serving import request_body, train_champion
from mlflow import MlflowClient
from mlflow.models import infer_signature

import features
from features.simulate import simulate, write_world
from modelcontract import PROFILE_ARTIFACT
from serving.config import Settings
from serving.drift_window import WINDOW_SIZE, DriftCollector, DriftWindow
from serving.materialize import materialize
from serving.metrics import Metrics
from serving.model import Champion
from serving.policy import load_policy
from serving.schemas import DecisionRequest
from serving.service import Service
from serving.shadow import load_challenger
from training.reference import reference_profile


def register(uri: str, workdir: Path, log: features.TransactionLog, alias: str) -> str:
    """Train a champion as bench_serving does and register it with its reference profile."""
    columns = list(features.FEATURE_COLUMNS)
    booster, x, threshold = train_champion(log)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-operations")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(
            "bench-operations", artifact_location=(workdir / "artifacts").as_uri()
        )
    )
    example = pd.DataFrame(x[:2], columns=columns)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(example, booster.predict(x[:2])),
            input_example=example,
            registered_model_name="buyer-quality",
        )
        profile = reference_profile(pd.DataFrame(x, columns=columns), columns, booster.predict(x))
        mlflow.log_dict(profile.model_dump(mode="json"), PROFILE_ARTIFACT)
    version = str(info.registered_model_version)
    tags = {
        "threshold": str(threshold),
        "feature_columns": json.dumps(columns),
        "feature_set_version": features.FEATURE_SET_VERSION,
        "reference_profile": PROFILE_ARTIFACT,
    }
    for key, value in tags.items():
        client.set_model_version_tag("buyer-quality", version, key, value)
    # The promotion gate's tags: serving refuses a version without them.
    from mlflow.artifacts import download_artifacts

    from modelcontract.artifact import booster_file, file_sha256

    location = client.get_model_version_download_uri("buyer-quality", version)
    local = download_artifacts(artifact_uri=location, dst_path=tempfile.mkdtemp())
    gate = {"gate_verdict": "promoted", "gate_run_id": "bench"}
    for key, value in {**gate, "model_sha256": file_sha256(booster_file(local))}.items():
        client.set_model_version_tag("buyer-quality", version, key, value)
    client.set_registered_model_alias("buyer-quality", alias, version)
    return version


def timed(
    service: Service, method: str, requests: list[DecisionRequest]
) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds of each single-request call, wall clock and the thread's CPU time (what
    the code costs, without the waits of a machine shared with other work), the audit log
    checkpointed between calls every 2,000 (untimed, as the app does it between requests)."""
    call = getattr(service, method)
    audit = service.open_audit()
    wall, cpu = [], []
    for i, request in enumerate(requests):
        if i % 2000 == 1999:
            audit.checkpoint()
            audit.finish_checkpoint()
        started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
        call([request])
        cpu.append(time.thread_time_ns() - started_cpu)
        wall.append(time.perf_counter_ns() - started)
    return np.array(wall) / 1e6, np.array(cpu) / 1e6


def drift_costs(service: Service, champion: Champion, rounds: int) -> list[tuple[float, float]]:
    """Per round: microseconds to record one scored decision in a drift window (as `decide`
    does, one row at a time), and milliseconds to compute every PSI from a full window."""
    store = service.open_store()
    assert store is not None
    meta, found = store.lookup((b, "") for b in store_buyers(service, 2000))
    vectors = [buyer.features for buyer, _ in found if buyer is not None]
    scores = champion.score_rows(vectors)
    rows = list(zip(vectors, scores, strict=True))
    figures = []
    for _ in range(rounds):
        window = DriftWindow()
        started = time.perf_counter_ns()
        for i in range(50_000):
            window.record(champion.version, meta.feature_columns, [rows[i % len(rows)]])
        record_us = (time.perf_counter_ns() - started) / 50_000 / 1000
        collector = DriftCollector(window, lambda: champion, 0.25)
        started = time.perf_counter_ns()
        report = collector.report()
        psi_ms = (time.perf_counter_ns() - started) / 1e6
        assert report.rows == WINDOW_SIZE and report.score is not None
        figures.append((record_us, psi_ms))
    return figures


def store_buyers(service: Service, n: int) -> list[str]:
    """`n` buyer ids of the online store."""
    online = f"sqlite:///{service.settings.store_path}"
    return pd.read_sql(f"SELECT buyer_id FROM buyers LIMIT {n}", online)["buyer_id"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=20_000, help="simulated buyers")
    parser.add_argument("--decisions", type=int, default=10_000, help="timed a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every configuration")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    # Development, explicitly (production is the default): the built-in tokens, NORMAL audit
    # commits, the server on 127.0.0.1.
    os.environ["FASTREFUND_ENVIRONMENT"] = "development"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    workdir = Path(tempfile.mkdtemp(prefix="bench-operations-"))
    world = simulate(buyers=args.buyers, shops=max(50, args.buyers // 100), days=400, seed=42)
    write_world(world, workdir / "log")
    materialize(workdir / "log", store_path=workdir / "online.db", policy=load_policy())
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    register(uri, workdir, world.log, "champion")
    register(uri, workdir, world.log, "challenger")
    online = f"sqlite:///{workdir / 'online.db'}"
    store = pd.read_sql("SELECT buyer_id FROM buyers WHERE order_count >= 3", online)
    buyers = store["buyer_id"].sample(2000, random_state=0, replace=True).tolist()
    shops = pd.read_sql("SELECT shop_id FROM shops WHERE eligible = 1", online)["shop_id"]
    shops = shops.tolist()

    settings = Settings(
        store_path=workdir / "online.db",
        audit_path=workdir / "audit.db",
        mlflow_tracking_uri=uri,
        model_check_seconds=0,
    )
    service = Service(settings, load_policy(), Metrics())
    asyncio.run(service.load_model())
    champion = service.champion
    assert champion is not None and champion.profile is not None
    challenger = load_challenger(uri)
    assert challenger.version != champion.version
    variants: dict[str, tuple[Champion, Champion | None]] = {
        "plain": (dataclasses.replace(champion, profile=None), None),
        "factors": (champion, None),
        "shadow": (champion, challenger),
    }
    counter = 0

    def requests(n: int) -> list[DecisionRequest]:
        nonlocal counter
        made = []
        for _ in range(n):
            counter += 1
            made.append(
                DecisionRequest.model_validate(
                    request_body(
                        f"R{counter}", buyers[counter % len(buyers)], shops[counter % len(shops)]
                    )
                )
            )
        return made

    results: dict[str, dict[str, list[float]]] = {}
    gc.collect()
    gc.freeze()
    for variant in variants.values():  # warm-up
        service.champion, service.challenger = variant
        timed(service, "evaluate", requests(1000))
    for _ in range(args.rounds):
        for name, variant in variants.items():
            service.champion, service.challenger = variant
            for method in ("evaluate", "decide"):
                ms, cpu = timed(service, method, requests(args.decisions))
                figures = results.setdefault(
                    f"{name}/{method}", {"p50": [], "p99": [], "cpu p50": [], "cpu p99": []}
                )
                figures["p50"].append(float(np.percentile(ms, 50)))
                figures["p99"].append(float(np.percentile(ms, 99)))
                figures["cpu p50"].append(float(np.percentile(cpu, 50)))
                figures["cpu p99"].append(float(np.percentile(cpu, 99)))
    service.champion, service.challenger = variants["factors"]
    shown = sum("factors" in a.body["buyer"] for a in service.evaluate(requests(2000)))
    drift = drift_costs(service, champion, args.rounds)
    service.close()
    print(f"load average {os.getloadavg()[0]:.2f}; factors shown on {shown / 2000:.0%} of answers")
    print(
        f"{'configuration':<22}{'p50 ms':>10}{'p99 ms':>10}{'CPU p50':>10}{'CPU p99':>10}"
        f"   (median of {args.rounds} rounds)"
    )
    for name, figures in results.items():
        p50, p99, cpu50, cpu99 = (
            statistics.median(figures[k]) for k in ("p50", "p99", "cpu p50", "cpu p99")
        )
        rounds = [round(v, 3) for v in figures["p99"]]
        print(
            f"{name:<22}{p50:>10.3f}{p99:>10.3f}{cpu50:>10.3f}{cpu99:>10.3f}   p99 rounds {rounds}"
        )
    record_us, psi_ms = (statistics.median(v) for v in zip(*drift, strict=True))
    print(
        f"drift: recording a scored decision {record_us:.2f} us; every PSI from a full window "
        f"({WINDOW_SIZE:,} rows, {len(champion.feature_columns)} features + score) {psi_ms:.1f} ms "
        f"at a scrape = {psi_ms * 1000 / WINDOW_SIZE:.2f} us per decision of the window "
        f"(medians of {args.rounds} rounds)"
    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
