"""Instructions per decision, counted by valgrind: a figure this machine's slow spells cannot move.

Time on this machine varies from run to run (`probe_cpu.py`), so a 10% change in the decision
path hides in the noise of any timed benchmark. valgrind's callgrind counts the instructions
a process executes, which depends on the code and its inputs only. This prepares a
simulated world (online store, a 300-tree champion saved as a LightGBM model file, the
requests as JSON lines), then counts a child process that sets up a `Service` and decides
nothing, and the same child deciding N requests: one at a time (`Service.decide` on one
request, as a lone HTTP request is decided) and in batches of 1,000 (the batch route). The
difference divided by N is the instructions of one decision: store lookup, rules, score,
answer and the audit commit; not the HTTP handling and not the request's parsing (every
child parses all the requests).

Run: `.venv/bin/python benchmarks/bench_instructions.py [--decisions 1000]` (needs valgrind,
`apt-get install -y valgrind`; ~5 minutes on 2 cores). To compare with other code, run it
with `PYTHONPATH` pointing at that checkout's root: the children import `serving` from it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 50
BATCH = 1000


def prepare(workdir: Path, requests: int) -> None:
    """The world, the store, the champion and `requests` request bodies, in `workdir`."""
    import pandas as pd
    from bench_serving import request_body, train_champion

    import features
    from features.simulate import simulate, write_world
    from serving.materialize import materialize
    from serving.policy import load_policy

    world = simulate(buyers=5_000, shops=50, days=400, seed=42)
    write_world(world, workdir / "log")
    materialize(workdir / "log", store_path=workdir / "online.db", policy=load_policy())
    booster, _, threshold = train_champion(world.log)
    booster.save_model(str(workdir / "model.txt"))
    (workdir / "champion.json").write_text(
        json.dumps(
            {
                "threshold": threshold,
                "columns": list(features.FEATURE_COLUMNS),
                "feature_set_version": features.FEATURE_SET_VERSION,
            }
        )
    )
    store = f"sqlite:///{workdir / 'online.db'}"
    buyers = pd.read_sql("SELECT buyer_id FROM buyers WHERE order_count >= 3", store)
    shops = pd.read_sql("SELECT shop_id FROM shops WHERE eligible = 1", store)["shop_id"]
    picked = buyers["buyer_id"].sample(requests, random_state=0, replace=True).tolist()
    lines = [
        json.dumps(request_body(f"I{i}", buyer, shops.iloc[i % len(shops)]))
        for i, buyer in enumerate(picked)
    ]
    (workdir / "requests.jsonl").write_text("\n".join(lines) + "\n")


def child(workdir: Path, decisions: int, batch: int) -> None:
    """Set up a Service on `workdir`, decide WARMUP requests, then `decisions` more."""
    import lightgbm as lgb

    from serving.config import Settings
    from serving.metrics import Metrics
    from serving.model import Champion, _single_row_scorer
    from serving.policy import load_policy
    from serving.schemas import DecisionRequest
    from serving.service import Service

    meta = json.loads((workdir / "champion.json").read_text())
    booster = lgb.Booster(model_file=str(workdir / "model.txt"))
    champion = Champion(
        "buyer-quality",
        "1",
        booster,
        meta["threshold"],
        tuple(meta["columns"]),
        meta["feature_set_version"],
        score_one=_single_row_scorer(booster),
    )
    audit = workdir / f"audit-{decisions}-{batch}.db"
    settings = Settings(store_path=workdir / "online.db", audit_path=audit)
    service = Service(settings, load_policy(), Metrics())
    service.champion = champion
    service.open_store()
    service.open_audit()
    lines = (workdir / "requests.jsonl").read_bytes().splitlines()
    requests = [DecisionRequest.model_validate_json(line) for line in lines]  # all, every run
    for request in requests[:WARMUP]:
        service.decide([request])
    timed = requests[WARMUP : WARMUP + decisions]
    for start in range(0, len(timed), batch):
        service.decide(timed[start : start + batch])


def count(workdir: Path, decisions: int, batch: int) -> subprocess.Popen:
    """A child under callgrind (started; `instructions` reads its total)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={os.devnull}",
        sys.executable,
        __file__,
        "--child",
        str(workdir),
        str(decisions),
        str(batch),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ
    )


def instructions(process: subprocess.Popen) -> int:
    _, stderr = process.communicate()
    found = re.search(r"Collected : (\d+)", stderr)
    if process.returncode != 0 or found is None:
        sys.exit(f"valgrind run failed ({process.returncode}):\n{stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1000, help="decisions counted a mode")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Development, explicitly (production is the default): the built-in tokens, NORMAL audit
    # commits, the server on 127.0.0.1.
    os.environ["FASTREFUND_ENVIRONMENT"] = "development"
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return
    if args.decisions < 1:
        parser.error(f"--decisions must be at least 1, got {args.decisions}")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    n = args.decisions
    workdir = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    try:
        prepare(workdir, WARMUP + 2 * n)
        # Two at a time on two cores; the counts do not depend on it.
        none, single = count(workdir, 0, 1), count(workdir, n, 1)
        baseline, one_by_one = instructions(none), instructions(single)
        batched = instructions(count(workdir, 2 * n, BATCH))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_single = (one_by_one - baseline) / n
    per_batched = (batched - baseline) / (2 * n)
    print(f"setup alone: {baseline:,} instructions")
    print(f"one request at a time ({n:,}): {per_single:,.0f} instructions a decision")
    print(f"in batches of {BATCH:,} ({2 * n:,}): {per_batched:,.0f} instructions a decision")
    print(json.dumps({"setup": baseline, "single": per_single, "batched": per_batched}))


if __name__ == "__main__":
    main()
