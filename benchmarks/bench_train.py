"""Training benchmark: 200k buyers x 12 monthly snapshots, LightGBM beside HistGradientBoosting.

    .venv/bin/python benchmarks/bench_train.py            # full size (cached under data/)
    .venv/bin/python benchmarks/bench_train.py --buyers 20000 --threads 1

Steps: simulate the world (cached), build the labelled snapshots (cached), split by time
as `python -m training train` does, then fit each model in a fresh child process so its
peak memory is its own: LightGBM with early stopping on validation (what `train` runs),
then LightGBM and scikit-learn's HistGradientBoostingClassifier with the same settings and
the same fixed number of rounds (--rounds), early stopping off (like for like).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Enough days for 180 days of history, 12 monthly as-of dates and a 120-day label window.
DAYS = 640


def _peak_rss_mb() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a
    # child would report its parent's peak.
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare(buyers: int, cache: Path) -> tuple[Path, dict]:
    """Simulate and build snapshots once; later runs reuse the files."""
    import pandas as pd

    import features
    from features.simulate import simulate, write_world
    from training.config import SnapshotParams
    from training.snapshots import build_snapshots, snapshot_dates

    world_dir = cache / f"world-{buyers}"
    # The feature list is part of the key: a new feature means new snapshots.
    columns_key = hashlib.sha256(json.dumps(features.FEATURE_COLUMNS).encode()).hexdigest()[:8]
    snapshots_path = cache / f"snapshots-{buyers}-{columns_key}.parquet"
    info: dict = {}
    if not (world_dir / "meta.json").is_file():
        start = time.perf_counter()
        write_world(simulate(buyers=buyers, days=DAYS, seed=0, progress=True), world_dir)
        info["simulate_s"] = time.perf_counter() - start
    if not snapshots_path.is_file():
        start = time.perf_counter()
        log = features.load_log(world_dir)
        dates = snapshot_dates(log, SnapshotParams())[-12:]
        frame = build_snapshots(log, dates, SnapshotParams(), progress=True)
        info["snapshots_s"] = time.perf_counter() - start
        info["snapshots_peak_rss_mb"] = _peak_rss_mb()
        frame.to_parquet(snapshots_path, index=False)
    frame = pd.read_parquet(snapshots_path, columns=["as_of", "bad"])
    info.update(
        rows=len(frame), dates=frame["as_of"].nunique(), bad_rate=float(frame["bad"].mean())
    )
    return snapshots_path, info


def fit(kind: str, snapshots_path: Path, threads: int, rounds: int | None) -> dict:
    """Fit one model in this process; report time, memory and test AUC."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    import features
    from training.config import DataChecks, ModelParams, SnapshotParams
    from training.models import fit_lightgbm, lightgbm_params
    from training.snapshots import split_by_time

    split = split_by_time(pd.read_parquet(snapshots_path), SnapshotParams(), DataChecks())
    columns = list(features.FEATURE_COLUMNS)
    train_x = split.train[columns].to_numpy(np.float64)
    train_y = split.train["bad"].to_numpy()
    test_x = split.test[columns].to_numpy(np.float64)
    params = ModelParams(num_threads=threads)
    loaded_mb = _current_rss_mb()
    start = time.perf_counter()
    if kind == "lightgbm-early-stopping":
        booster = fit_lightgbm(
            split.train[columns],
            train_y,
            split.valid[columns],
            split.valid["bad"].to_numpy(),
            params,
        )
        scores = booster.predict(test_x)
        rounds = booster.current_iteration()
    elif kind == "lightgbm":
        import lightgbm as lgb

        booster = lgb.train(lightgbm_params(params), lgb.Dataset(train_x, train_y), rounds)
        scores = booster.predict(test_x)
    elif kind == "hist-gradient-boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            learning_rate=params.learning_rate,
            max_iter=rounds,
            max_leaf_nodes=params.num_leaves,
            min_samples_leaf=params.min_data_in_leaf,
            l2_regularization=params.lambda_l2,
            max_features=params.feature_fraction,
            early_stopping=False,
            random_state=params.seed,
        )
        model.fit(train_x, train_y)
        scores = model.predict_proba(test_x)[:, 1]
    else:
        raise ValueError(kind)
    seconds = time.perf_counter() - start
    return {
        "model": kind,
        "rounds": rounds,
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "data_rss_mb": loaded_mb,
        "test_auc": float(roc_auc_score(split.test["bad"], scores)),
        "train_rows": len(train_x),
    }


def in_child(kind: str, snapshots_path: Path, threads: int, rounds: int | None) -> dict:
    """Run `fit` in a fresh interpreter so each peak RSS is measured on its own."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        __file__,
        "--fit",
        kind,
        "--snapshots",
        str(snapshots_path),
        "--threads",
        str(threads),
        "--rounds",
        str(rounds or 0),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "bench-train")
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--snapshots", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--rounds", type=int, default=500, help="rounds for the like-for-like comparison"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.fit:
        rounds = args.rounds if args.fit != "lightgbm-early-stopping" else None
        print(json.dumps(fit(args.fit, args.snapshots, args.threads, rounds)))
        return

    snapshots_path, info = prepare(args.buyers, args.cache)
    print(f"data: {json.dumps(info)}", flush=True)
    early = in_child("lightgbm-early-stopping", snapshots_path, args.threads, None)
    results = [early]
    for kind in ("lightgbm", "hist-gradient-boosting"):
        results.append(in_child(kind, snapshots_path, args.threads, args.rounds))
    lgb_same = results[1]
    print(
        f"\n{args.buyers:,} buyers, {info['dates']} monthly snapshots, {info['rows']:,} rows "
        f"({results[0]['train_rows']:,} training), {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| model | rounds | fit time (s) | peak RSS (MB) | RSS before fit (MB) | test ROC AUC |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['model']} | {row['rounds']} | {row['seconds']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['data_rss_mb']:.0f} | {row['test_auc']:.4f} |"
        )
    ratio = results[2]["seconds"] / lgb_same["seconds"]
    print(
        f"\nHistGradientBoosting / LightGBM time, same rounds: {ratio:.2f}x; "
        f"AUC difference (LightGBM - HGB): {lgb_same['test_auc'] - results[2]['test_auc']:+.4f}"
    )


if __name__ == "__main__":
    main()
