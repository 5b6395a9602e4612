"""What the purged split changes: the same fit on the old adjacent split and on the purged one.

    .venv/bin/python benchmarks/bench_split.py                 # the default world, seed 0
    .venv/bin/python benchmarks/bench_split.py --seed 1

`split_by_time` trains and validates only on as-of dates whose labels were known on the first
test date (T + horizon + maturity <= T0). Before, the month before the test month was
validation and all earlier months training, so their labels ran into the test month's own
window. This fits the model (`fit_and_evaluate`, what `train` runs) on several choices of
dates, always judged on the same test month, and prints a Markdown table: the old split, the
old split cut to as many training months as the purged one has (less data, same overlap), the
purged training months with the old validation month, the purged split itself, then each
month alone with the purged split's validation month (how the age of the training data and
its overlap with the test window move the figure).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the world to simulate (without --data)."
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="A log directory (default: simulate, cached)."
    )
    args = parser.parse_args()

    import features
    from features.simulate import simulate, write_world
    from training.config import TrainConfig
    from training.snapshots import Split, build_snapshots, snapshot_dates, split_by_time
    from training.train import fit_and_evaluate, oracle_from_truth

    data = args.data or ROOT / "data" / f"bench-split-{args.seed}"
    if not (data / "meta.json").is_file():
        if args.data is not None:
            print(f"error: {data}: no meta.json; not a log directory", file=sys.stderr)
            return 2
        write_world(simulate(seed=args.seed), data)
    config = TrainConfig(data_dir=data, progress=False)
    params = config.snapshots
    started = time.perf_counter()
    log = features.load_log(data)
    snapshots = build_snapshots(log, snapshot_dates(log, params), params)
    oracle = oracle_from_truth(data, params.horizon_days, params.maturity_days)
    purged = split_by_time(snapshots, params, config.checks)
    dates = sorted(snapshots["as_of"].unique())
    test = purged.test
    n_train = len(purged.train_dates)
    choices = [
        ("the old split: every month before validation", dates[:-2], dates[-2:-1]),
        (
            f"the old split, newest {n_train} training months",
            dates[-2 - n_train : -2],
            dates[-2:-1],
        ),
        ("purged training, the old validation month", purged.train_dates, dates[-2:-1]),
        ("purged (what `train` runs)", purged.train_dates, purged.valid_dates),
    ]
    # One training month at a time, validation fixed: the age of the training data against
    # the overlap with the test window (the months after validation overlap it).
    choices += [
        ("one month", [month], purged.valid_dates)
        for month in dates[:-1]
        if month not in purged.valid_dates
    ]
    print(f"world {data}, test month {test['as_of'].iloc[0].date()}\n")
    print("| training months | validation | test AUC | / oracle | coverage | premium bad rate |")
    print("|---|---|---|---|---|---|")
    by_date = snapshots["as_of"]
    for name, train_dates, valid_dates in choices:
        split = Split(
            snapshots.loc[by_date.isin(train_dates)].reset_index(drop=True),
            snapshots.loc[by_date.isin(valid_dates)].reset_index(drop=True),
            test,
        )
        evaluation = fit_and_evaluate(split, config, oracle)
        model = evaluation.results["lightgbm"].metrics
        ceiling = evaluation.results["oracle"].metrics["roc_auc"] if oracle else float("nan")
        months = f"{train_dates[0]:%Y-%m} ... {train_dates[-1]:%Y-%m} ({len(train_dates)}, {name})"
        print(
            f"| {months} | {valid_dates[0]:%Y-%m} | {model['roc_auc']:.4f} | "
            f"{model['roc_auc'] / ceiling:.4f} | {model['premium_coverage']:.4f} | "
            f"{model['premium_bad_rate']:.4f} |"
        )
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
