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
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/bench-backtest/default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", type=int, default=8)
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
    print(f"\n{requests:,} requests, {len(rows)} repeats")


if __name__ == "__main__":
    main()
