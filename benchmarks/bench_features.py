"""Benchmark: buyer features for one as-of date on a log of at least 5M orders.

Target (DESIGN.md): <= 10 s and <= 3 GB peak memory on this 2-core machine.
The peer in the same run is the obvious pandas implementation of the order-window
features (groupby + agg per window), timed on the same data.

Run: .venv/bin/python benchmarks/bench_features.py [--orders 5000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench-features"

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so the
# child would report the parent's peak (the parent may just have simulated the world).
CHILD = """
import json, sys, time
import pandas as pd
from features import build_features, load_log
def peak_gb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024 / 1e9
t0 = time.perf_counter()
log = load_log(sys.argv[1])
t1 = time.perf_counter()
as_of = (log.end - pd.Timedelta(days=60)).date()
if sys.argv[2] == "ours":
    frame = build_features(log, as_of)
    columns = frame.shape[1] - 2
else:
    known = log.known_at(pd.Timestamp(as_of, tz="UTC"))
    orders = known.orders.assign(age=(pd.Timestamp(as_of, tz="UTC") - known.orders.paid_at).dt.days)
    parts = []
    for w in (7, 30, 90, 365):
        window = orders[orders.age < w].groupby("buyer_id")["paid_fen"]
        parts.append(window.agg(["count", "sum", "mean"]))
    frame = pd.concat(parts, axis=1)
    columns = frame.shape[1]
t2 = time.perf_counter()
print(json.dumps({"orders": len(log.orders), "load_s": t1 - t0, "build_s": t2 - t1,
                  "rows": len(frame), "columns": columns,
                  "peak_gb": peak_gb()}))
"""


def ensure_log(min_orders: int) -> Path:
    """Simulate (once) a world with at least `min_orders` orders, kept under data/."""
    meta = DATA / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("orders", 0) >= min_orders:
        return DATA
    from features.simulate import simulate, write_world

    buyers = 200_000
    while True:
        world = simulate(buyers=buyers, shops=5_000, days=540, seed=7)
        if len(world.log.orders) >= min_orders:
            break
        buyers = int(buyers * min_orders / len(world.log.orders) * 1.05)
    world.meta["orders"] = len(world.log.orders)
    write_world(world, DATA)
    return DATA


def run(which: str, data: Path) -> dict:
    """Run one implementation in a fresh process, so its peak memory is its own."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), which],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5_000_000, help="minimum orders in the log")
    args = parser.parse_args()
    started = time.perf_counter()
    data = ensure_log(args.orders)
    print(f"log ready in {time.perf_counter() - started:.1f} s: {data}")
    ours, peer = run("ours", data), run("pandas-groupby", data)
    print(f"orders: {ours['orders']:,}; buyers in snapshot: {ours['rows']:,}")
    print(f"load + validate: {ours['load_s']:.1f} s")
    print(
        f"fastrefund build_features: {ours['build_s']:.2f} s, {ours['columns']} features, "
        f"peak {ours['peak_gb']:.2f} GB (process: load, validate, build)"
    )
    print(
        f"peer (pandas groupby, {peer['columns']} order-window columns only): "
        f"{peer['build_s']:.2f} s, peak {peer['peak_gb']:.2f} GB"
    )
    ok = ours["build_s"] <= 10 and ours["peak_gb"] <= 3
    print("target (<= 10 s, <= 3 GB):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
