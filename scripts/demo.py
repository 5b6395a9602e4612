"""`make demo`: the whole system on a fresh machine, the way its users run it.

Simulates the default world (once), runs the scheduled retraining job (train -> gate ->
champion -> online store), starts the decision API, sends real decisions that show an
auto-approval and the common reasons to refuse, then keeps serving until interrupted
(`--serve=0`: stops and exits 0). Every step is the package's own command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "demo"
DECIDER = {"Authorization": "Bearer dev-decider-token"}
ADMIN = {"Authorization": "Bearer dev-admin-token"}


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*args: str) -> None:
    """Run one of the package commands, echoing it; stop the demo if it fails."""
    print("$ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def call(base: str, method: str, path: str, body: object = None, headers: dict | None = None):
    """One HTTP call to the API; returns (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait_ready(base: str, server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API exited with status {server.returncode}; see its log above")
        try:
            status, body = call(base, "GET", "/readyz")
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the API at {base} was not ready within {seconds:.0f} s")


def pick_examples() -> dict:
    """Choose real buyers and a shop from the data: the most and least trusted by the model."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    import features

    client = MlflowClient()
    version = client.get_model_version_by_alias("buyer-quality", "champion")
    threshold = float(version.tags["threshold"])
    columns = json.loads(version.tags["feature_columns"])
    booster = mlflow.lightgbm.load_model(f"models:/buyer-quality/{version.version}")
    log = features.load_log(DATA)
    frame = features.build_features(log, log.end.date())
    frame["score"] = booster.predict(frame[columns].to_numpy(dtype=np.float64))
    seasoned = frame[(frame["orders_total"] >= 5) & (frame["account_age_days"] >= 60)]
    trusted = seasoned[seasoned["confirmed_abuse_total"] == 0].nsmallest(1, "score").iloc[0]
    risky = seasoned.nlargest(1, "score").iloc[0]
    shop_orders = log.orders.loc[log.orders["buyer_id"] == trusted["buyer_id"], "shop_id"]
    shops = list(dict.fromkeys([*shop_orders, *log.orders["shop_id"].value_counts().index]))
    return {
        "version": version.version,
        "threshold": threshold,
        "trusted": (trusted["buyer_id"], float(trusted["score"])),
        "risky": (risky["buyer_id"], float(risky["score"])),
        "shops": shops,
    }


def order(buyer: str, shop: str, **changes) -> dict:
    base = {
        "order_id": f"demo-order-{buyer}",
        "buyer_id": buyer,
        "shop_id": shop,
        "category": "apparel",
        "is_virtual": False,
        "is_custom": False,
        "paid_amount": "89.00",
        "currency": "CNY",
        "status": "paid_unshipped",
        "tracking_number": None,
    }
    return {**base, **changes}


def show_decisions(base: str) -> None:
    examples = pick_examples()
    trusted, trusted_score = examples["trusted"]
    risky, risky_score = examples["risky"]
    print(
        f"champion: buyer-quality v{examples['version']}, premium iff score <= "
        f"{examples['threshold']:.4f}"
    )
    print(
        f"most trusted buyer {trusted} (score {trusted_score:.4f}); "
        f"least trusted {risky} (score {risky_score:.4f})"
    )
    shop = next(
        s
        for s in examples["shops"]
        if call(base, "GET", f"/v1/admin/shops/{s}", headers=ADMIN)[1].get("eligible")
    )
    # One set of refunds a day: a rerun the same day sends the same requests and gets the
    # stored answers back (replayed), as the after-sales system would on a retry.
    today = datetime.now(UTC).date()
    stamp, now = today.strftime("%Y%m%d"), f"{today.isoformat()}T00:00:00Z"
    cases = [
        ("premium buyer, 89.00 CNY, unshipped", order(trusted, shop)),
        ("the same at exactly 300.00 CNY", order(trusted, shop, paid_amount="300.00")),
        ("already shipped", order(trusted, shop, status="shipped", tracking_number="SF123")),
        ("virtual goods", order(trusted, shop, category="virtual", is_virtual=True)),
        ("a buyer the model does not trust", order(risky, shop)),
        ("a buyer with no history", order("B-never-seen", shop)),
    ]
    print()
    for number, (title, body) in enumerate(cases, start=1):
        request = {
            "refund_id": f"demo-{stamp}-{number}",
            "requested_at": now,
            "kind": "refund_only",
            "order": body,
        }
        status, answer = call(base, "POST", "/v1/refund-decisions", request, DECIDER)
        reasons = ", ".join(r["code"] for r in answer.get("reasons", [])) or "-"
        replay = " (replayed)" if answer.get("replayed") else ""
        print(f"{title:<38} -> {status} {answer.get('decision')}{replay}: {reasons}")
        if answer.get("note"):
            print(f"{'':<41}note: {answer['note']}")
    request = {
        "refund_id": f"demo-{stamp}-1",
        "requested_at": now,
        "kind": "return_and_refund",
        "order": cases[0][1],
    }
    status, answer = call(base, "POST", "/v1/refund-decisions", request, DECIDER)
    print(f"{'refund id 1 again, different request':<38} -> {status} {answer.get('detail', '')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, default=1, help="1: keep serving; 0: stop and exit")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    args = parser.parse_args()
    # Development, explicitly (production is the default): the built-in tokens, NORMAL audit
    # commits, the server on 127.0.0.1.
    os.environ["FASTREFUND_ENVIRONMENT"] = "development"
    base = f"http://127.0.0.1:{args.port}"
    # MLflow's per-file download bars would bury the demo's own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    step("1/4 the transaction log (simulated, with known ground truth)")
    if (DATA / "meta.json").is_file():
        print(f"reusing {DATA.relative_to(ROOT)} (delete it to simulate afresh)")
    else:
        run("-m", "features", "simulate", "--out", str(DATA.relative_to(ROOT)))

    step("2/4 the scheduled job: train -> promotion gate -> champion -> online store")
    run("-m", "training", "retrain", "--data", str(DATA.relative_to(ROOT)))

    step(f"3/4 the decision API on {base}")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "run", "--port", str(args.port)], cwd=ROOT
    )
    try:
        wait_ready(base, server)
        step("4/4 real decisions")
        show_decisions(base)
        print(f"""
Where to look next:
  API docs (try it out):  {base}/docs      token: dev-decider-token / dev-admin-token
  metrics:                {base}/metrics
  MLflow UI:              .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db
  decisions as a table:   .venv/bin/python -m serving export-decisions --out data/decisions.csv
  notebooks:              notebooks/ (01 explore, 02 train, 03 policy trade-offs, 04 explain)
  benchmarks:             docs/benchmarks.md""")
        if args.serve:
            print("\nServing until interrupted (Ctrl-C).", flush=True)
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
