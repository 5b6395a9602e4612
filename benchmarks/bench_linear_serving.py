"""One decision in process with a logistic-regression champion, beside the LightGBM one.

When the model search registers logistic regression, serving scores its JSON document with
NumPy (`modelcontract.linear.LinearModel`) instead of the Booster's single-row C API. This
measures DESIGN.md's "one decision in-process (rules + lookup + score)" (`Service.evaluate`)
and with the audit commit (`Service.decide`) for both families in the same run, on the same
world, store and requests: `bench_serving.py`'s in-process measurement (no wrk needed).

    .venv/bin/python benchmarks/bench_linear_serving.py            # 20,000 buyers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_serving  # noqa: E402

import features  # noqa: E402
from features.simulate import simulate, write_world  # noqa: E402
from modelcontract.artifact import LINEAR_DATA, LINEAR_FLAVOUR, file_sha256, model_file  # noqa: E402
from serving.config import Settings  # noqa: E402
from serving.materialize import materialize  # noqa: E402
from serving.policy import load_policy  # noqa: E402
from training.models import LogisticBaseline  # noqa: E402

MODEL = "buyer-quality"


def register_logistic(uri: str, workdir: Path, log: features.TransactionLog) -> str:
    """Fit logistic regression on the LightGBM champion's rows and register its document as
    training does (`training.train._log_linear`), stamped as the gate would."""
    columns = list(features.FEATURE_COLUMNS)
    _, x, _ = bench_serving.train_champion(log)
    as_of = (log.end - pd.Timedelta(days=150)).normalize()
    label = features.labels(log, as_of, horizon_days=90, maturity_days=30)
    frame = features.build_features(log, [as_of]).merge(
        label[["buyer_id", "bad"]], on="buyer_id", how="left"
    )
    y = frame["bad"].fillna(0).astype(int).to_numpy()
    model = LogisticBaseline(columns).fit(frame[columns], y)
    threshold = float(np.quantile(model.predict(frame[columns]), 0.4))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-serving").experiment_id
    folder = workdir / "linear-model"
    folder.mkdir()
    (folder / LINEAR_DATA).write_text(model.to_spec().model_dump_json(), encoding="utf-8")
    (folder / "MLmodel").write_text(
        json.dumps({"flavors": {LINEAR_FLAVOUR: {"data": LINEAR_DATA}}}), encoding="utf-8"
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "model")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL).version)
    location = client.get_model_version_download_uri(MODEL, version)
    local = download_artifacts(artifact_uri=location, dst_path=str(workdir / "gate-linear"))
    tags = {
        "threshold": str(threshold),
        "feature_columns": json.dumps(columns),
        "feature_set_version": features.FEATURE_SET_VERSION,
        "model_family": "logistic",
        "gate_verdict": "promoted",
        "gate_run_id": "bench",
        "model_sha256": file_sha256(model_file(local)[1]),
    }
    for key, value in tags.items():
        client.set_model_version_tag(MODEL, version, key, value)
    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=20_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per family")
    args = parser.parse_args()
    os.environ["FASTREFUND_ENVIRONMENT"] = "development"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    workdir = Path(tempfile.mkdtemp(prefix="bench-linear-"))
    world = simulate(buyers=args.buyers, shops=max(50, args.buyers // 100), days=400, seed=42)
    write_world(world, workdir / "log")
    materialize(workdir / "log", store_path=workdir / "online.db", policy=load_policy())
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    versions = {"lightgbm": bench_serving.register_champion(uri, workdir, world.log)}
    versions["logistic"] = register_logistic(uri, workdir, world.log)
    store = f"sqlite:///{workdir / 'online.db'}"
    buyers = pd.read_sql(
        "SELECT buyer_id FROM buyers WHERE order_count >= 3 AND revoked = 0", store
    )["buyer_id"]
    buyers = buyers.sample(2000, random_state=0, replace=True).tolist()
    shops = pd.read_sql("SELECT shop_id FROM shops WHERE eligible = 1", store)["shop_id"].tolist()
    client = MlflowClient(uri)
    results: dict[str, list[dict]] = {family: [] for family in versions}
    for repeat in range(args.repeats):
        for family, version in versions.items():
            client.set_registered_model_alias(MODEL, "champion", version)
            settings = Settings(
                store_path=workdir / "online.db",
                audit_path=workdir / f"audit-{family}-{repeat}.db",
                mlflow_tracking_uri=uri,
            )
            started = time.perf_counter()
            one = bench_serving.in_process(settings, buyers, shops, n=args.decisions)
            one["load"] = bench_serving.load_average()
            one["seconds"] = time.perf_counter() - started
            results[family].append(one)
            print(f"{family} run {repeat}: {json.dumps(one)}", flush=True)
    for family, runs in results.items():
        for method in ("evaluate", "decide"):
            p50 = np.median([r[method]["p50_ms"] for r in runs])
            p99 = np.median([r[method]["p99_ms"] for r in runs])
            print(
                f"{family:>9} {method:>8}: median of {len(runs)} runs p50 {p50:.3f} ms, "
                f"p99 {p99:.3f} ms"
            )


if __name__ == "__main__":
    main()
