"""Benchmark: simulate a 200k-buyer world and write it to disk.

Target (DESIGN.md): <= 60 s wall time and <= 4 GB peak memory on the 2-core machine.
The measured run happens in a fresh child process so its peak RSS is its own.

    .venv/bin/python benchmarks/bench_simulate.py [--buyers 200000] [--shops 5000] [--days 540]

Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

TARGET_SECONDS = 60.0
TARGET_PEAK_GB = 4.0


def _child(buyers: int, shops: int, days: int, seed: int) -> None:
    from features.simulate import simulate, write_world

    with tempfile.TemporaryDirectory() as out_dir:
        began = time.perf_counter()
        world = simulate(buyers=buyers, shops=shops, days=days, seed=seed)
        simulated = time.perf_counter() - began
        write_world(world, out_dir)
        total = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "simulate_s": simulated,
                "write_s": total - simulated,
                "total_s": total,
                "peak_gb": peak_kib / 1024**2,
                "orders": len(world.log.orders),
                "refunds": len(world.log.refunds),
                "buyers": len(world.log.buyers),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=200_000)
    parser.add_argument("--shops", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.buyers, args.shops, args.days, args.seed)
        return 0

    command = [
        sys.executable,
        __file__,
        "--child",
        f"--buyers={args.buyers}",
        f"--shops={args.shops}",
        f"--days={args.days}",
        f"--seed={args.seed}",
    ]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"simulator: {result['buyers']:,} buyers, {result['orders']:,} orders, "
        f"{result['refunds']:,} refunds"
    )
    print(
        f"  simulate {result['simulate_s']:.1f} s + write {result['write_s']:.1f} s = "
        f"{result['total_s']:.1f} s (target <= {TARGET_SECONDS:.0f} s); "
        f"process wall incl. imports {wall:.1f} s"
    )
    print(f"  peak RSS {result['peak_gb']:.2f} GB (target <= {TARGET_PEAK_GB:.0f} GB)")
    ok = result["total_s"] <= TARGET_SECONDS and result["peak_gb"] <= TARGET_PEAK_GB
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
