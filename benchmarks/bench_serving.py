"""Benchmark the decision API against `mlflow models serve` of the same champion.

Builds a simulated world in a temporary directory, materializes the online store, trains and
registers a LightGBM champion in a temporary MLflow, then measures in the same run:

0. how steady the machine's CPU is (`probe_cpu.py`, 10 s on the otherwise idle machine): the
   share of milliseconds in which a fixed piece of Python work runs at under a third of its
   median rate, which no request in flight can escape;
1. one decision in process, p50/p99: DESIGN.md's "rules + lookup + score"
   (`Service.evaluate`), and the same with the audit commit (`Service.decide`);
2. `python -m serving run` (one worker) under wrk at 16 connections, every request a new
   refund (no replays): flat out (decisions/s and latency percentiles), then paced at
   `--rate` (default 1,500/s: the latency at the target rate; `--also-rates` adds paced
   runs at other rates, to see whether the tail follows the load); and, as a control, the same
   two runs on `GET /healthz`, which does nothing: what FastAPI's own route handler costs;
3. the batch route (1,000 decisions a request) under wrk;
4. `mlflow models serve --env-manager local` (one worker) on the same champion under the same
   wrk load (a one-row dataframe_split request), and the throughput ratio.

`--audit-cost N` runs only what FULL audit commits cost against NORMAL (`audit_cost`).

Load only ever targets 127.0.0.1 and each wrk run is bounded in time.
Run: `.venv/bin/python benchmarks/bench_serving.py` (needs wrk: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.models import infer_signature
from probe_cpu import probe, summary

import features
from features.simulate import simulate, write_world
from modelcontract.artifact import booster_file, file_sha256
from serving.config import DEV_DECIDER_TOKEN, Settings
from serving.materialize import materialize
from serving.metrics import Metrics
from serving.policy import load_policy
from serving.schemas import DecisionRequest
from serving.service import Service

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_champion(log: features.TransactionLog) -> tuple[lgb.Booster, np.ndarray, float]:
    """A LightGBM on one snapshot (300 trees, 31 leaves), its training rows and threshold."""
    columns = list(features.FEATURE_COLUMNS)
    as_of = (log.end - pd.Timedelta(days=150)).normalize()
    frame = features.build_features(log, [as_of])
    label = features.labels(log, as_of, horizon_days=90, maturity_days=30)
    frame = frame.merge(label[["buyer_id", "bad"]], on="buyer_id", how="left")
    x = frame[columns].to_numpy(dtype=np.float64)
    y = frame["bad"].fillna(0).astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 31, "learning_rate": 0.05},
        lgb.Dataset(x, label=y, feature_name=columns),
        num_boost_round=300,
    )
    return booster, x, float(np.quantile(booster.predict(x), 0.4))


def register_champion(uri: str, workdir: Path, log: features.TransactionLog) -> str:
    """Train the champion (`train_champion`) and register it as buyer-quality@champion."""
    columns = list(features.FEATURE_COLUMNS)
    booster, x, threshold = train_champion(log)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment(
        "bench-serving", artifact_location=(workdir / "artifacts").as_uri()
    )
    example = pd.DataFrame(x[:2], columns=columns)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(example, booster.predict(x[:2])),
            input_example=example,
            registered_model_name="buyer-quality",
        )
    version = str(info.registered_model_version)
    tags = {
        "threshold": str(threshold),
        "feature_columns": json.dumps(columns),
        "feature_set_version": features.FEATURE_SET_VERSION,
        "data_window": "bench",
        "target_bad_rate": "0.05",
    }
    for key, value in tags.items():
        client.set_model_version_tag("buyer-quality", version, key, value)
    # The promotion gate's tags: serving refuses a version without them.
    location = client.get_model_version_download_uri("buyer-quality", version)
    local = download_artifacts(artifact_uri=location, dst_path=str(workdir / "gate"))
    gate = {"gate_verdict": "promoted", "gate_run_id": "bench"}
    for key, value in {**gate, "model_sha256": file_sha256(booster_file(local))}.items():
        client.set_model_version_tag("buyer-quality", version, key, value)
    client.set_registered_model_alias("buyer-quality", "champion", version)
    return version


def request_body(refund_id: str, buyer_id: str, shop_id: str) -> dict:
    return {
        "refund_id": refund_id,
        "requested_at": "2025-06-01T02:00:00Z",
        "kind": "refund_only",
        "order": {
            "order_id": f"O{refund_id}",
            "buyer_id": buyer_id,
            "shop_id": shop_id,
            "category": "apparel",
            "is_virtual": False,
            "is_custom": False,
            "paid_amount": "129.90",
            "currency": "CNY",
            "status": "paid_unshipped",
            "tracking_number": None,
        },
    }


def in_process(
    settings: Settings, buyers: list[str], shops: list[str], n: int, warmup: int = 1000
) -> dict:
    """Latency of one decision in process, two ways, each on its own new refunds:

    - `Service.evaluate`: DESIGN.md's "one decision in-process (rules + lookup + score)":
      the store lookup, every rule (velocity counted from the audit log), the score and the
      answer, nothing written;
    - `Service.decide`, the function the routes call: the same plus the audit commit.

    The audit log is checkpointed as the app does it (serving.app._checkpoint_audit): two
    passes in a thread every 0.25 s, the rest between two decisions (not timed; in the app it
    runs between requests, and the HTTP figures include it)."""
    service = Service(settings, load_policy(), Metrics())
    asyncio.run(service.load_model())
    audit = service.open_audit()
    bulk_done, stop = threading.Event(), threading.Event()

    def checkpoints() -> None:
        while not stop.wait(0.25):
            audit.checkpoint()  # two passes, as the app makes them
            audit.checkpoint()
            bulk_done.set()
            while not stop.is_set() and bulk_done.is_set():
                time.sleep(0.001)

    threading.Thread(target=checkpoints, daemon=True).start()

    def requests(prefix: str) -> list[DecisionRequest]:
        return [
            DecisionRequest.model_validate(
                request_body(f"{prefix}{i}", buyers[i % len(buyers)], shops[i % len(shops)])
            )
            for i in range(warmup + n)
        ]

    results = {}
    # `decide` first, so `evaluate` reads an audit log holding ~21,000 decisions (its replay
    # and velocity reads), as a serving worker's log would.
    for name, prefix, method in (
        ("decide", "IP", service.decide),
        ("evaluate", "IE", service.evaluate),
    ):
        batch = requests(prefix)
        # As the app's lifespan does after startup (see serving.app).
        gc.collect()
        gc.freeze()
        for request in batch[:warmup]:
            method([request])
        timings = []
        for request in batch[warmup:]:
            if bulk_done.is_set():
                audit.finish_checkpoint()
                bulk_done.clear()
            started = time.perf_counter_ns()
            method([request])
            timings.append(time.perf_counter_ns() - started)
        gc.unfreeze()
        ms = np.array(timings) / 1e6
        results[name] = {
            "n": len(ms),
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }
    stop.set()
    service.close()
    return results


def new_decisions(audit_path: Path, prefix: str) -> int:
    """How many decisions the audit log holds for refund ids starting with `prefix`."""
    with sqlite3.connect(audit_path) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM decisions WHERE refund_id LIKE ?", (prefix + "%",)
        ).fetchone()[0]


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as `uptime` shows them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


LUA_SINGLE = """
local buyers = {%(buyers)s}
local shops = {%(shops)s}
local counter = 0
local threads = 0
-- Each wrk thread gets its own `tid` global, so no two threads send the same refund_id (a
-- `local tid` here would shadow it: both threads would send the same ids, half of them replays).
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  counter = counter + 1
  local b = buyers[(counter %% #buyers) + 1]
  local s = shops[(counter %% #shops) + 1]
  local id = "%(prefix)s" .. tid .. "-" .. counter
  local body = '{"refund_id":"' .. id .. '","requested_at":"2025-06-01T02:00:00Z",' ..
    '"kind":"refund_only","order":{"order_id":"O' .. id .. '","buyer_id":"' .. b ..
    '","shop_id":"' .. s .. '","category":"apparel","is_virtual":false,"is_custom":false,' ..
    '"paid_amount":"129.90","currency":"CNY","status":"paid_unshipped","tracking_number":null}}'
  %(wrap)s
end
"""

WRAP_SINGLE = "return wrk.format(nil, nil, nil, body)"
WRAP_BATCH = """
  local items = {}
  for i = 1, %(size)d do
    counter = counter + 1
    b = buyers[(counter %% #buyers) + 1]
    s = shops[(counter %% #shops) + 1]
    id = "%(prefix)s" .. tid .. "-" .. counter
    items[i] = '{"refund_id":"' .. id .. '","requested_at":"2025-06-01T02:00:00Z",' ..
      '"kind":"refund_only","order":{"order_id":"O' .. id .. '","buyer_id":"' .. b ..
      '","shop_id":"' .. s .. '","category":"apparel","is_virtual":false,"is_custom":false,' ..
      '"paid_amount":"129.90","currency":"CNY","status":"paid_unshipped","tracking_number":null}}'
  end
  return wrk.format(nil, nil, nil, '{"requests":[' .. table.concat(items, ",") .. ']}')
"""

LUA_MLFLOW = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%(body)s'
"""

# Paces each wrk thread's sends to `rate / threads` a second: a clock-driven schedule of send
# slots (LuaJIT's FFI reads CLOCK_MONOTONIC); a late slot is sent at once. wrk times each
# request from its actual send, so a stall delays the requests behind it without being
# charged to them (coordinated omission): the paced p99 is, if anything, flattering.
LUA_PACE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fr_timespec;
int clock_gettime(int clk_id, fr_timespec *tp);
]]
local ts = ffi.new("fr_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 1000 / (%(rate)d / %(threads)d)
local slot = nil
delay = function()
  local now = now_ms()
  if slot == nil then slot = now end
  slot = slot + interval
  if slot < now then return 0 end
  return slot - now
end
"""

LUA_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout
  io.write(string.format("JSON {\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d, " ..
    "\\"p50_ms\\": %f, \\"p90_ms\\": %f, \\"p99_ms\\": %f}\\n",
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk(url: str, script: str, connections: int, seconds: int, workdir: Path, name: str) -> dict:
    path = workdir / f"{name}.lua"
    path.write_text(script + LUA_REPORT)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    result = json.loads(re.search(r"JSON (\{.*\})", out).group(1))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def measure(
    url: str, script: str, connections: int, seconds: int, workdir: Path, name: str
) -> dict:
    """A wrk run, with the load average before and after it."""
    before = load_average()
    result = wrk(url, script, connections, seconds, workdir, name)
    return {**result, "load_before": before, "load_after": load_average()}


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def audit_cost(
    settings: Settings,
    workdir: Path,
    env: dict,
    fill: dict,
    rounds: int,
    seconds: int,
    decisions: int,
) -> dict:
    """What FULL costs against NORMAL (FASTREFUND_AUDIT_SYNCHRONOUS), in the same run, the two
    alternating `rounds` times on fresh audit logs: `Service.decide` in process (one commit a
    decision: the fsync's full price) and `python -m serving run` under wrk at 16 connections
    flat out (commits grouped by the coalescer). Medians of the rounds."""
    runs: dict[str, list[dict]] = {"NORMAL": [], "FULL": []}
    for r in range(rounds):
        for mode in ("NORMAL", "FULL"):
            one = settings.model_copy(
                update={
                    "audit_synchronous": mode,
                    "audit_path": workdir / f"audit-ip-{mode}-{r}.db",
                }
            )
            decide = in_process(one, fill["buyers_list"], fill["shops_list"], n=decisions)["decide"]
            port = free_port()
            server = subprocess.Popen(
                [PYTHON, "-m", "serving", "run", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env={
                    **env,
                    "FASTREFUND_AUDIT_SYNCHRONOUS": mode,
                    "FASTREFUND_AUDIT_PATH": str(workdir / f"audit-{mode}-{r}.db"),
                },
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / f"serving-{mode}-{r}.log", "w"),  # noqa: SIM115
                start_new_session=True,
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}/readyz", server)
                url = f"http://127.0.0.1:{port}/v1/refund-decisions"
                prefix = f"{mode[0]}{r}x"
                script = LUA_SINGLE % {**fill["lua"], "prefix": prefix, "wrap": WRAP_SINGLE}
                wrk(url, script.replace(f'"{prefix}"', f'"W{prefix}"'), 16, 3, workdir, "w")
                http = measure(url, script, 16, seconds, workdir, f"{mode}-{r}")
            finally:
                stop(server)
            run = {
                "decide_p50_ms": decide["p50_ms"],
                "decide_p99_ms": decide["p99_ms"],
                "rps": http["rps"],
                "http_p50_ms": http["p50_ms"],
                "http_p99_ms": http["p99_ms"],
                "errors": http["errors"],
                "load": f"{http['load_before']} / {http['load_after']}",
            }
            runs[mode].append(run)
            print(f"audit {mode} round {r + 1}: {json.dumps(run)}")
    keys = ("decide_p50_ms", "decide_p99_ms", "rps", "http_p50_ms", "http_p99_ms")
    medians = {
        mode: {k: float(np.median([run[k] for run in done])) for k in keys}
        for mode, done in runs.items()
    }
    print()
    print(
        f"| audit mode (medians of {rounds}) | Service.decide p50 / p99 | HTTP flat out "
        "| p50 / p99 |"
    )
    print("|---|---|---|---|")
    for mode, m in medians.items():
        print(
            f"| {mode} | {m['decide_p50_ms']:.3f} / {m['decide_p99_ms']:.3f} ms | "
            f"{m['rps']:,.0f} decisions/s | {m['http_p50_ms']:.1f} / {m['http_p99_ms']:.1f} ms |"
        )
    full, normal = medians["FULL"], medians["NORMAL"]
    print(
        f"| FULL / NORMAL | {full['decide_p50_ms'] / normal['decide_p50_ms']:.2f}x / "
        f"{full['decide_p99_ms'] / normal['decide_p99_ms']:.2f}x | "
        f"{full['rps'] / normal['rps']:.2f}x | "
        f"{full['http_p50_ms'] / normal['http_p50_ms']:.2f}x / "
        f"{full['http_p99_ms'] / normal['http_p99_ms']:.2f}x |"
    )
    return {"runs": runs, "medians": medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=20_000, help="simulated buyers")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument(
        "--decisions", type=int, default=20_000, help="in-process decisions timed after warm-up"
    )
    parser.add_argument(
        "--rate", type=int, default=1500, help="decisions/s offered in the paced run"
    )
    parser.add_argument(
        "--also-rates",
        default="",
        help="more offered rates for paced runs, comma-separated (e.g. 500,2500): whether the "
        "tail follows the load",
    )
    parser.add_argument(
        "--audit-cost",
        type=int,
        default=0,
        help="instead of the usual runs: FULL against NORMAL audit commits, alternating this "
        "many rounds (in process and HTTP flat out; medians)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    # Development, explicitly (production is the default): the built-in tokens, NORMAL audit
    # commits, the server on 127.0.0.1.
    os.environ["FASTREFUND_ENVIRONMENT"] = "development"
    # The report is read by people: no download bars from loading the model in process.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    print(f"workdir {workdir}")
    started = time.perf_counter()
    world = simulate(buyers=args.buyers, shops=max(50, args.buyers // 100), days=400, seed=42)
    write_world(world, workdir / "log")
    print(f"simulated in {time.perf_counter() - started:.1f}s")
    report = materialize(workdir / "log", store_path=workdir / "online.db", policy=load_policy())
    print(f"materialized in {time.perf_counter() - started:.1f}s")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    version = register_champion(uri, workdir, world.log)
    print(
        f"setup {time.perf_counter() - started:.1f}s: {report.buyers} buyers, "
        f"{report.eligible_shops}/{report.shops} eligible shops, champion v{version}"
    )

    store = pd.read_sql(
        "SELECT buyer_id FROM buyers WHERE order_count >= 3 AND revoked = 0",
        f"sqlite:///{workdir / 'online.db'}",
    )
    buyers = store["buyer_id"].sample(2000, random_state=0, replace=True).tolist()
    shops = pd.read_sql(
        "SELECT shop_id FROM shops WHERE eligible = 1", f"sqlite:///{workdir / 'online.db'}"
    )["shop_id"].tolist()

    settings = Settings(
        store_path=workdir / "online.db",
        audit_path=workdir / "audit-inprocess.db",
        mlflow_tracking_uri=uri,
    )
    env = {
        **os.environ,
        "FASTREFUND_STORE_PATH": str(workdir / "online.db"),
        "FASTREFUND_AUDIT_PATH": str(workdir / "audit.db"),
        "FASTREFUND_MLFLOW_TRACKING_URI": uri,
        "FASTREFUND_LOG_LEVEL": "INFO",
    }
    quoted = lambda ids: ",".join(f'"{i}"' for i in ids)  # noqa: E731
    fill = {"buyers": quoted(buyers), "shops": quoted(shops), "token": DEV_DECIDER_TOKEN}
    if args.audit_cost:
        print(f"load average {load_average()}")
        results = audit_cost(
            settings,
            workdir,
            env,
            {"lua": fill, "buyers_list": buyers, "shops_list": shops},
            args.audit_cost,
            args.seconds,
            args.decisions,
        )
        (workdir / "audit-cost.json").write_text(json.dumps(results, indent=2))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    steadiness = probe(10.0)
    print(f"cpu probe: {summary(steadiness)}")
    before = load_average()
    one = in_process(settings, buyers, shops, n=args.decisions)
    one["load_before"], one["load_after"] = before, load_average()
    print(f"in-process: {json.dumps(one)}")

    port = free_port()
    ours = subprocess.Popen(
        [PYTHON, "-m", "serving", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "serving.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    mlflow_port = free_port()
    theirs = None
    results: dict = {"cpu_probe": steadiness, "in_process": one}
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", ours)
        single = LUA_SINGLE % {**fill, "prefix": "S", "wrap": WRAP_SINGLE}
        url = f"http://127.0.0.1:{port}/v1/refund-decisions"
        wrk(url, single.replace('"S"', '"W"'), 16, 3, workdir, "warmup")
        results["single"] = measure(url, single, 16, args.seconds, workdir, "single")
        results["single"]["new_decisions"] = new_decisions(workdir / "audit.db", "S")
        print(f"serving single, 16 connections: {json.dumps(results['single'])}")
        pace = LUA_PACE % {"rate": args.rate, "threads": 2}
        paced = LUA_SINGLE % {**fill, "prefix": "P", "wrap": WRAP_SINGLE} + pace
        results["paced"] = measure(url, paced, 16, args.seconds, workdir, "paced")
        results["paced"]["new_decisions"] = new_decisions(workdir / "audit.db", "P")
        print(f"serving single, paced at {args.rate}/s: {json.dumps(results['paced'])}")
        results["paced_more"] = {}
        for n, rate in enumerate(int(r) for r in args.also_rates.split(",") if r.strip()):
            prefix = f"Q{n}x"  # no prefix is the start of another's
            more = LUA_SINGLE % {**fill, "prefix": prefix, "wrap": WRAP_SINGLE} + LUA_PACE % {
                "rate": rate,
                "threads": 2,
            }
            run = measure(url, more, 16, args.seconds, workdir, f"paced{rate}")
            run["new_decisions"] = new_decisions(workdir / "audit.db", prefix)
            results["paced_more"][rate] = run
            print(f"serving single, paced at {rate}/s: {json.dumps(run)}")
        # The control: the same server, wrk and connections on a route that does nothing
        # (/healthz), flat out and paced: what FastAPI's own route handler costs (its tail is
        # the decision routes' reason to bypass it; see docs/benchmarks.md).
        health = f"http://127.0.0.1:{port}/healthz"
        results["health"] = measure(health, "", 16, args.seconds, workdir, "health")
        results["health_paced"] = measure(health, pace, 16, args.seconds, workdir, "hpaced")
        print(f"control /healthz: {json.dumps(results['health'])}")
        print(f"control /healthz, paced: {json.dumps(results['health_paced'])}")
        batch = LUA_SINGLE % {
            **fill,
            "prefix": "B",
            "wrap": WRAP_BATCH % {"size": 1000, "prefix": "B"},
        }
        results["batch"] = measure(f"{url}/batch", batch, 2, args.seconds, workdir, "batch")
        results["batch"]["decisions_per_s"] = results["batch"]["rps"] * 1000
        results["batch"]["new_decisions"] = new_decisions(workdir / "audit.db", "B")
        print(f"serving batch of 1000, 2 connections: {json.dumps(results['batch'])}")
        stop(ours)

        theirs = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/buyer-quality/{version}",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "-w",
                "1",
            ],
            cwd=workdir,
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": uri,
                # mlflow execs `uvicorn` from PATH: the venv's, as an activated venv would.
                "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "mlflow-serve.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_ready(f"http://127.0.0.1:{mlflow_port}/ping", theirs)
        online = pd.read_sql(
            "SELECT features FROM buyers LIMIT 1", f"sqlite:///{workdir / 'online.db'}"
        )
        row = np.frombuffer(online["features"][0], dtype=np.float64)
        row = [None if np.isnan(v) else float(v) for v in row]
        payload = json.dumps(
            {"dataframe_split": {"columns": list(features.FEATURE_COLUMNS), "data": [row]}}
        )
        mlflow_script = LUA_MLFLOW % {"body": payload}
        murl = f"http://127.0.0.1:{mlflow_port}/invocations"
        wrk(murl, mlflow_script, 16, 3, workdir, "mlflow-warmup")
        results["mlflow"] = measure(murl, mlflow_script, 16, args.seconds, workdir, "mlflow")
        print(f"mlflow models serve, 16 connections: {json.dumps(results['mlflow'])}")
    finally:
        for proc in (ours, theirs):
            if proc is not None and proc.poll() is None:
                stop(proc)
    ratio = results["single"]["rps"] / results["mlflow"]["rps"]
    results["ratio"] = ratio
    s, b, m = results["single"], results["batch"], results["mlflow"]
    print()
    print("| what | target | measured | load avg before / after |")
    print("|---|---|---|---|")
    for name, what, target in (
        ("evaluate", "lookup, rules, score: `Service.evaluate`", "p99 <= 0.5 ms"),
        ("decide", "the same and the audit commit: `Service.decide`", "(none)"),
    ):
        t = one[name]
        print(
            f"| one decision in process ({what}), {t['n']:,} decisions | {target} | "
            f"p50 {t['p50_ms']:.3f}, p90 {t['p90_ms']:.3f}, p99 {t['p99_ms']:.3f} ms, "
            f"max {t['max_ms']:.1f} ms | {one['load_before']} / {one['load_after']} |"
        )
    print(
        f"| HTTP, 1 worker, 16 connections flat out, every request a new refund | "
        f">= 1,500 decisions/s, p99 <= 15 ms | "
        f"{s['rps']:,.0f} decisions/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
        f"{s['errors']} errors; {s['new_decisions']:,} new decisions audited for "
        f"{s['requests']:,} answers | {s['load_before']} / {s['load_after']} |"
    )
    p, h, hp = results["paced"], results["health"], results["health_paced"]
    print(
        f"| HTTP, 1 worker, 16 connections, paced at {args.rate:,}/s offered | "
        f"p99 <= 15 ms at >= 1,500 decisions/s | "
        f"{p['rps']:,.0f} decisions/s, p50 {p['p50_ms']:.1f} ms, p90 {p['p90_ms']:.1f} ms, "
        f"p99 {p['p99_ms']:.1f} ms, {p['errors']} errors; {p['new_decisions']:,} new decisions "
        f"audited | {p['load_before']} / {p['load_after']} |"
    )
    for rate, q in results["paced_more"].items():
        print(
            f"| the same, paced at {rate:,}/s offered | (how the tail follows the load) | "
            f"{q['rps']:,.0f} decisions/s, p50 {q['p50_ms']:.1f} ms, p90 {q['p90_ms']:.1f} ms, "
            f"p99 {q['p99_ms']:.1f} ms, {q['errors']} errors; {q['new_decisions']:,} new "
            f"decisions audited | {q['load_before']} / {q['load_after']} |"
        )
    print(
        f"| control: `GET /healthz` (does nothing), same server and wrk, flat out / paced at "
        f"{args.rate:,}/s | (FastAPI route) | {h['rps']:,.0f}/s p50 {h['p50_ms']:.1f} ms p99 "
        f"{h['p99_ms']:.1f} ms / {hp['rps']:,.0f}/s p50 {hp['p50_ms']:.2f} ms p99 "
        f"{hp['p99_ms']:.1f} ms | {h['load_before']} / {hp['load_after']} |"
    )
    print(
        f"| batch route (1,000 a request), 2 connections | >= 10,000 decisions/s | "
        f"{b['decisions_per_s']:,.0f} decisions/s ({b['p50_ms']:.0f} ms a batch), "
        f"{b['errors']} errors; {b['new_decisions']:,} new decisions audited for "
        f"{b['requests'] * 1000:,} items | {b['load_before']} / {b['load_after']} |"
    )
    print(
        f"| `mlflow models serve` same champion, 1 worker, 16 connections | peer | "
        f"{m['rps']:,.0f} predictions/s, p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms "
        f"| {m['load_before']} / {m['load_after']} |"
    )
    print(f"| ours / mlflow throughput | >= 3x | {ratio:.1f}x | |")
    print(f"| the machine, idle, before the runs (`probe_cpu.py`) | | {summary(steadiness)} | |")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
