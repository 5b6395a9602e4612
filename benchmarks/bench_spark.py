"""Benchmark: the Spark engine against the pandas engine, its scaling, and batch scoring.

1. Features for one as-of date on the 5M-order log (bench_features' world): Spark local[2]
   against the pandas engine in the same run: wall time, their ratio, and the driver's peak
   memory (the Python driver's VmHWM, and the JVM's VmHWM; in local mode the JVM hosts the
   executors too, so it is an upper bound of what a cluster's driver JVM holds).
2. Scaling: the same build on logs of about 1M, 5M and 20M orders (a fifth of the 5M world's
   buyers, the world, four copies of it with their ids prefixed), the same orders per task:
   wall time, and each task's peak memory (the Python worker's ru_maxrss, read inside the
   job by `resource.getrusage` and returned with its rows).
3. Batch scoring of the features on Spark: the native Booster in mapInPandas against
   mlflow.pyfunc.spark_udf, on the same features, same model.

Each measurement runs in a fresh process, so its peak memory is its own.

Run: .venv/bin/python benchmarks/bench_spark.py [--orders 5000000] [--scaling 1,5,20]
     [--skip-score]     (--orders 200000 --scaling 0.2 for a quick check that it works)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench-spark"

CHILD = r"""
import json, os, resource, sys, threading, time
from functools import partial
from pathlib import Path
import pandas as pd

def vm_hwm(pid="self"):
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return 0

def descendants(root):
    kids, found = {}, []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
            except OSError:
                pass
    stack = [root]
    while stack:
        for child in kids.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found

def jvm_pid():
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "java":
                    return pid
        except OSError:
            pass
    return None

def with_worker_memory(log, job):
    frame = job(log)
    frame["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frame["task_orders"] = float(len(log.orders))
    return frame

mode, data, out, as_of = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
from features import build_features
t0 = time.perf_counter()
if mode == "pandas":
    from features import load_log
    log = load_log(data)
    frame = build_features(log, as_of)
    frame.to_parquet(out, index=False)
    result = {"rows": len(frame), "seconds": time.perf_counter() - t0,
              "driver_python_gb": vm_hwm() / 1e9}
else:
    from features.engines import feature_columns
    from features.engines.spark import SparkLog
    from features.engines.spark_session import spark_session
    spark = spark_session("local[2]", app_name="bench-spark")
    started = time.perf_counter()
    jvm = jvm_pid()
    log = SparkLog(spark, data)
    job = partial(with_worker_memory,
                  job=partial(build_features, as_of_dates=as_of, partitions=1))
    columns = {**feature_columns(), "worker_peak_rss_mb": "double", "task_orders": "double"}
    rows = log.map_partitions(job, columns, out)
    seconds = time.perf_counter() - started
    tasks = pd.read_parquet(out, columns=["worker_peak_rss_mb", "task_orders"])
    per_task = tasks.groupby("task_orders")["worker_peak_rss_mb"].max()
    result = {"rows": rows, "seconds": seconds, "startup_s": started - t0,
              "partitions": log.partitions(),
              "driver_python_gb": vm_hwm() / 1e9,
              "driver_jvm_gb": (vm_hwm(jvm) / 1e9) if jvm else None,
              "task_peak_mb": float(per_task.max()),
              "task_orders_max": float(per_task.index.max())}
    spark.stop()
print("RESULT " + json.dumps(result))
"""

SCORE_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import lightgbm as lgb, mlflow, numpy as np, pandas as pd
from functools import partial
from mlflow import MlflowClient
import features
from features.engines.spark import spark_schema
from features.engines.spark_session import quiet_pandas3_warning, spark_session
from serving.model import load_champion
from serving.score import SCORE_COLUMNS, BatchScorer, _score_batches
from mlflow.artifacts import download_artifacts
from modelcontract.artifact import booster_file, file_sha256

features_dir = sys.argv[1]
columns = list(features.FEATURE_COLUMNS)
sample = pd.read_parquet(features_dir, columns=columns).sample(50_000, random_state=0, replace=True)
y = (sample["confirmed_abuse_total"].fillna(0) > 0).astype(int).to_numpy()
booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 31, "num_threads": 1},
                    lgb.Dataset(sample.to_numpy(np.float64), label=y, feature_name=columns), 300)
root = Path(tempfile.mkdtemp(prefix="bench-score-"))
uri = f"sqlite:///{root / 'mlflow.db'}"
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = client.create_experiment("bench", artifact_location=(root / "art").as_uri())
with mlflow.start_run(experiment_id=experiment):
    info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name="buyer-quality",
                                     input_example=sample.head(2))
version = str(info.registered_model_version)
for key, value in {"threshold": "0.05", "feature_columns": json.dumps(columns),
                   "feature_set_version": features.FEATURE_SET_VERSION}.items():
    client.set_model_version_tag("buyer-quality", version, key, value)
# The promotion gate's tags (serving refuses a version without them).
location = client.get_model_version_download_uri("buyer-quality", version)
local = download_artifacts(artifact_uri=location, dst_path=tempfile.mkdtemp(), tracking_uri=uri)
for key, value in {"gate_verdict": "promoted", "gate_run_id": "bench",
                   "model_sha256": file_sha256(booster_file(local))}.items():
    client.set_model_version_tag("buyer-quality", version, key, value)
client.set_registered_model_alias("buyer-quality", "champion", version)
champion = load_champion(uri, max_threshold=0.5)
spark = spark_session("local[2]", app_name="bench-score")
feats = spark.read.parquet(features_dir).cache()
rows = feats.count()
timings = {}
for attempt in range(2):  # the second round is the one reported: warm JVM and workers
    t = time.perf_counter()
    scorer = BatchScorer.from_champion(champion)
    with quiet_pandas3_warning():
        batches = partial(_score_batches, scorer=scorer)
        scored = feats.mapInPandas(batches, spark_schema(SCORE_COLUMNS))
        scored.write.format("noop").mode("overwrite").save()
    timings["booster_mapInPandas_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with quiet_pandas3_warning():
        udf = mlflow.pyfunc.spark_udf(spark, "models:/buyer-quality@champion",
                                      result_type="double", env_manager="local")
        from pyspark.sql import functions as F
        scored = feats.withColumn("score", udf(F.struct(*[F.col(c) for c in columns])))
        scored.select("buyer_id", "score").write.format("noop").mode("overwrite").save()
    timings["pyfunc_spark_udf_s"] = time.perf_counter() - t
spark.stop()
print("RESULT " + json.dumps({"rows": rows, **timings}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def base_world(orders: int) -> Path:
    """The log measured: bench_features' 5M-order world from 5M orders up (made once, shared),
    else a smaller simulated world of about `orders` orders (~25 a buyer)."""
    if orders >= 5_000_000:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_features import ensure_log

        return ensure_log(orders)
    directory = DATA / f"world-{orders}"
    if not (directory / "meta.json").is_file():
        from features.simulate import simulate, write_world

        world = simulate(buyers=max(2_000, orders // 25), shops=500, days=540, seed=7)
        world.meta["orders"] = len(world.log.orders)
        write_world(world, directory)
    return directory


def scaled_log(base: Path, factor: float) -> Path:
    """A log of about `factor` x the base's orders, as folders of Parquet parts: a subset of
    its buyers (factor < 1) or copies of it with prefixed ids (factor > 1)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from features.build import partition_of

    target = DATA / f"scaled-{factor:g}x-{base.name}"
    if (target / "meta.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("buyers", "orders", "refunds", "shops"):
        table = pq.read_table(base / f"{name}.parquet")
        folder = target / f"{name}.parquet"
        folder.mkdir(exist_ok=True)
        if name == "shops":
            pq.write_table(table, folder / "part-0.parquet")
            continue
        if factor < 1:
            keep = round(1 / factor)
            part = partition_of(table.column("buyer_id").to_pandas(), keep) == 0
            pq.write_table(table.filter(pa.array(part)), folder / "part-0.parquet")
            continue
        for copy in range(round(factor)):
            prefixed = table
            for column in ("buyer_id", "order_id", "refund_id"):
                if column in table.column_names:
                    values = pc.binary_join_element_wise(
                        f"c{copy}-", table[column].cast(pa.string()), ""
                    )
                    prefixed = prefixed.set_column(
                        prefixed.column_names.index(column), column, values
                    )
            pq.write_table(prefixed, folder / f"part-{copy}.parquet")
    (target / "meta.json").write_text((base / "meta.json").read_text())
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5_000_000, help="orders in the base log")
    parser.add_argument(
        "--scaling", default="0.2,1,4", help="log sizes as multiples of the base (0 = none)"
    )
    parser.add_argument("--skip-score", action="store_true", help="no batch-scoring comparison")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    base = base_world(args.orders)
    meta = json.loads((base / "meta.json").read_text())
    end = meta["end"][:10]
    import pandas as pd

    as_of = (pd.Timestamp(end) - pd.Timedelta(days=60)).date().isoformat()
    print(f"base log {base}: {meta.get('orders', '?'):,} orders; as of {as_of}")

    pandas_run = _run(CHILD, "pandas", str(base), str(DATA / "pandas.parquet"), as_of)
    spark_run = _run(CHILD, "spark", str(base), str(DATA / "spark-features"), as_of)
    print(
        f"pandas engine: {pandas_run['seconds']:.1f} s (load + validate + build), "
        f"peak {pandas_run['driver_python_gb']:.2f} GB"
    )
    print(
        f"spark local[2]: {spark_run['seconds']:.1f} s (+{spark_run['startup_s']:.1f} s "
        f"session start), {spark_run['partitions']} partitions; driver Python peak "
        f"{spark_run['driver_python_gb']:.2f} GB, JVM (driver + local executors) peak "
        f"{spark_run['driver_jvm_gb']:.2f} GB; task peak {spark_run['task_peak_mb']:.0f} MB"
    )
    print(f"ratio spark / pandas: {spark_run['seconds'] / pandas_run['seconds']:.2f}")
    driver_ok = spark_run["driver_python_gb"] < 1

    factors = [float(f) for f in args.scaling.split(",") if float(f) > 0]
    if factors:
        print(
            f"{'log':>14} {'orders':>12} {'seconds':>9} {'s/M orders':>11} "
            f"{'partitions':>10} {'task peak MB':>13} {'task orders':>12} {'driver GB':>10}"
        )
    for factor in factors:
        log_dir = base if factor == 1 else scaled_log(base, factor)
        run = (
            spark_run
            if factor == 1
            else _run(CHILD, "spark", str(log_dir), str(DATA / f"spark-{factor:g}"), as_of)
        )
        import pyarrow.dataset as pads

        orders = pads.dataset(str(log_dir / "orders.parquet"), format="parquet").count_rows()
        print(
            f"{factor:>13g}x {orders:>12,} {run['seconds']:>9.1f} "
            f"{run['seconds'] / orders * 1e6:>11.2f} {run['partitions']:>10} "
            f"{run['task_peak_mb']:>13.0f} {run['task_orders_max']:>12,.0f} "
            f"{run['driver_python_gb']:>10.2f}"
        )
        driver_ok = driver_ok and run["driver_python_gb"] < 1

    if not args.skip_score:
        scores = _run(SCORE_CHILD, str(DATA / "spark-features"))
        ratio = scores["pyfunc_spark_udf_s"] / scores["booster_mapInPandas_s"]
        print(
            f"batch scoring {scores['rows']:,} buyers, 300 trees: Booster in mapInPandas "
            f"{scores['booster_mapInPandas_s']:.1f} s, pyfunc spark_udf "
            f"{scores['pyfunc_spark_udf_s']:.1f} s ({ratio:.2f}x)"
        )
    print("driver Python peak < 1 GB:", "met" if driver_ok else "MISSED")
    return 0 if driver_ok else 1


if __name__ == "__main__":
    sys.exit(main())
