"""Backtest benchmark: the default world's whole history replayed, as `python -m training
backtest` does it (issue 20: <= 60 s on this machine; requests per second).

    .venv/bin/python benchmarks/bench_backtest.py                 # the default world (cached)
    .venv/bin/python benchmarks/bench_backtest.py --data DIR --repeats 3

The world is `python -m features simulate`'s defaults (20,000 buyers, 540 days, seed 0),
simulated once under data/bench-backtest/. The model is the one `python -m training train`
fits on it (training's own `fit_and_evaluate`, default settings, early stopping), fitted
once and cached as a native LightGBM model file; the backtest then scores every request with
it, as with `--model VERSION`. Only the registry lookup of the command is left out (the
model is handed over in memory).

Each repeat times `run_backtest` and `write_backtest` as the command calls them: the log
loaded, every request's point-in-time inputs (`prepare`), the replay under
serving/policy.yaml, the tables, the 8-point threshold sweep (8 more replays) and the
folder written (CSV, Parquet, report.html). Prints the medians as a Markdown table.

`--cli` also registers the model as @champion in a scratch MLflow (SQLite, beside the world,
with the tags serving and the backtest read, stamped as the gate would) and times the
command itself in a fresh process each repeat, from start-up to exit (imports, the registry
and the model file included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def world(data: Path) -> Path:
    from features.simulate import simulate, write_world

    if not (data / "meta.json").is_file():
        started = time.perf_counter()
        write_world(simulate(), data)
        print(f"simulated the default world into {data} in {time.perf_counter() - started:.0f} s")
    return data


def model(data: Path, cache: Path):
    """The model `python -m training train` fits on the world, fitted once."""
    import lightgbm as lgb

    import features
    from training import backtest as bt

    model_file, meta_file = cache / "model.txt", cache / "model.json"
    key = features.fingerprint(data)
    if meta_file.is_file() and json.loads(meta_file.read_text())["fingerprint"] == key:
        meta = json.loads(meta_file.read_text())
        booster = lgb.Booster(model_file=str(model_file))
    else:
        from training.config import TrainConfig
        from training.train import fit_and_evaluate, load_training_data

        started = time.perf_counter()
        config = TrainConfig(data_dir=data, progress=False)
        evaluation = fit_and_evaluate(load_training_data(config).split, config)
        booster = evaluation.booster
        booster.save_model(str(model_file))
        meta = {
            "fingerprint": key,
            "threshold": evaluation.model.cut.threshold,
            "feature_columns": list(evaluation.feature_columns),
        }
        meta_file.write_text(json.dumps(meta))
        print(f"fitted the model in {time.perf_counter() - started:.0f} s")
    return bt.ReplayModel(
        "bench",
        booster,
        meta["threshold"],
        tuple(meta["feature_columns"]),
        features.FEATURE_SET_VERSION,
    )


def register(booster_path: Path, meta: dict, uri: str, artifacts: Path) -> str:
    """Log the cached model as a registered version, tagged and aliased as the gate does."""
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.models import infer_signature

    import features
    from modelcontract import CHAMPION, MODEL_NAME, GateTags
    from modelcontract.artifact import booster_file, file_sha256

    booster = lgb.Booster(model_file=str(booster_path))
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-backtest")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("bench-backtest", artifact_location=artifacts.as_uri())
    )
    columns = meta["feature_columns"]
    example = pd.DataFrame(np.zeros((2, len(columns))), columns=columns)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(example, booster.predict(example.to_numpy())),
            input_example=example,
            registered_model_name=MODEL_NAME,
        )
    version = str(info.registered_model_version)
    tags = {
        "threshold": str(meta["threshold"]),
        "feature_columns": json.dumps(columns),
        "feature_set_version": features.FEATURE_SET_VERSION,
        "data_window": "bench",
        "target_bad_rate": "0.01",
    }
    with tempfile.TemporaryDirectory() as tmp:
        location = client.get_model_version_download_uri(MODEL_NAME, version)
        local = download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=uri)
        digest = file_sha256(booster_file(local))
    gate = GateTags(gate_verdict="promoted", gate_run_id="bench", model_sha256=digest)
    for key, value in {**tags, **gate.to_tags()}.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    return version


def time_cli(data: Path, cache: Path, repeats: int) -> list[float]:
    """Wall seconds of `python -m training backtest` against the registered model."""
    uri = f"sqlite:///{cache / 'mlflow.db'}"
    if not (cache / "mlflow.db").is_file():
        meta = json.loads((cache / "model.json").read_text())
        version = register(cache / "model.txt", meta, uri, (cache / "artifacts").resolve())
        print(f"registered the model as version {version} in {uri}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    seconds = []
    for k in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "training", "backtest", "--data", str(data)]
            command += ["--policy", str(ROOT / "serving/policy.yaml"), "--out", f"{tmp}/out"]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"the command failed: {done.stderr[-2000:]}")
        print(f"command repeat {k + 1}: {seconds[-1]:.1f} s; {done.stdout.splitlines()[0]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/bench-backtest/default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", type=int, default=8)
    parser.add_argument("--cli", action="store_true", help="also time the command itself")
    args = parser.parse_args()

    from serving.policy import load_policy
    from training import backtest as bt
    from training.backtest_run import run_backtest, write_backtest

    data = world(args.data)
    cache = args.data.parent / f"{args.data.name}-model"
    cache.mkdir(parents=True, exist_ok=True)
    schedule = bt.ModelSchedule.single(model(data, cache))
    policy = load_policy()
    rows = []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = run_backtest(data, policy, schedule, sweep_points=args.sweep)
            write_backtest(result, Path(tmp) / "out")
            total = time.perf_counter() - started
        rows.append((total, result.seconds, result.replay_seconds, result.requests))
        print(
            f"repeat {k + 1}: {total:.1f} s in all, prepare + replay {result.seconds:.1f} s "
            f"(replay {result.replay_seconds:.1f} s), {result.requests:,} requests",
            flush=True,
        )
    total, prepared, replayed = (statistics.median(r[i] for r in rows) for i in range(3))
    requests = rows[0][3]
    print()
    print(f"| step (median of {len(rows)}) | seconds | requests/s |")
    print("|---|---|---|")
    print(
        f"| whole backtest: load, prepare, replay, sweep x{args.sweep}, tables, write "
        f"| {total:.1f} | {requests / total:,.0f} |"
    )
    print(
        f"| prepare + replay (the figures' decisions) | {prepared:.1f} | "
        f"{requests / prepared:,.0f} |"
    )
    print(f"| the replay alone (one policy) | {replayed:.1f} | {requests / replayed:,.0f} |")
    if args.cli:
        wall = statistics.median(time_cli(data, cache, args.repeats))
        print(
            f"| `python -m training backtest`, start to exit | {wall:.1f} | "
            f"{requests / wall:,.0f} |"
        )
    print(f"\n{requests:,} requests, {len(rows)} repeats")


if __name__ == "__main__":
    main()
