"""How steady this machine's CPU is: the same small piece of Python work, counted per millisecond.

A latency percentile is only as good as the machine under it. This runs one fixed unit of
pure-Python work (dictionary reads and integer sums, a few microseconds) in a loop for a
while, counts the units finished in each millisecond of wall time, and reports the
milliseconds that ran at under a third of the median rate: when the machine gives the
process much less CPU than usual (another tenant, the host), every request in flight then
takes several times longer. Runs of such milliseconds (gaps of up to 5 ms joined) are
reported as episodes.

Run: `.venv/bin/python benchmarks/probe_cpu.py [--seconds 10]`; `bench_serving.py` runs it
before its measurements, on the otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

_TABLE = {i: i for i in range(1000)}


def _unit() -> int:
    total = 0
    for i in range(50):
        total += _TABLE[i * 7 % 1000]
    return total


def probe(seconds: float = 10.0, slow_fraction: float = 1 / 3, join_ms: int = 5) -> dict:
    """Count work units per millisecond for `seconds`; describe the slow milliseconds.

    Returns:
        median units per ms; the share of milliseconds under `slow_fraction` of it; the
        episodes (runs of slow milliseconds, gaps of up to `join_ms` joined): how many, how
        many a second, the longest and their total, in ms; the 1st percentile of the rate
        relative to the median.
    """
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    counts: dict[int, int] = {}
    while True:
        now = clock()
        if now >= end:
            break
        _unit()
        bucket = int((now - start) * 1000)
        counts[bucket] = counts.get(bucket, 0) + 1
    rates = [counts.get(ms, 0) for ms in range(int(seconds * 1000) - 1)]
    median = statistics.median(rates)
    slow = [ms for ms, rate in enumerate(rates) if rate < median * slow_fraction]
    episodes: list[list[int]] = []
    for ms in slow:
        if episodes and ms - episodes[-1][1] <= join_ms:
            episodes[-1][1] = ms
        else:
            episodes.append([ms, ms])
    lengths = [last - first + 1 for first, last in episodes]
    return {
        "seconds": seconds,
        "median_units_per_ms": median,
        "slow_ms_share": len(slow) / len(rates),
        "p1_rate_vs_median": sorted(rates)[len(rates) // 100] / median,
        "episodes": len(episodes),
        "episodes_per_s": len(episodes) / seconds,
        "longest_episode_ms": max(lengths, default=0),
        "episode_ms_total": sum(lengths),
        "episode_starts_s": [round(first / 1000, 3) for first, _ in episodes],
    }


def summary(result: dict) -> str:
    """One line for a report."""
    return (
        f"{result['episodes']} slow episodes in {result['seconds']:g} s "
        f"({result['slow_ms_share']:.1%} of milliseconds under 1/3 of the median rate; "
        f"longest {result['longest_episode_ms']} ms; 1st-percentile rate "
        f"{result['p1_rate_vs_median']:.2f}x the median)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to count (>= 1)")
    args = parser.parse_args()
    if not args.seconds >= 1:
        parser.error(f"--seconds must be at least 1, got {args.seconds}")
    result = probe(args.seconds)
    print(summary(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
