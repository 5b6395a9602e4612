"""`make clean` removes only what is generated, never the registry, the store or a live log."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_clean_keeps_the_registry_the_store_the_audit_log_and_live_logs(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    kept = [
        "mlflow.db",
        "mlruns/1/meta.yaml",
        "mlruns/.retrain.lock",
        "data/world/orders.parquet",  # the README's cron log
        "data/online.db",
        "data/audit.db",
        "features/build.py",
    ]
    removed = [
        ".venv/bin/python",
        ".pytest_cache/README.md",
        ".ruff_cache/x",
        ".mypy_cache/x",
        "fastrefund.egg-info/PKG-INFO",
        "features/__pycache__/build.cpython-311.pyc",
        "data/demo/orders.parquet",  # the demo's simulated log: `make demo` makes it again
    ]
    for name in kept + removed:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    subprocess.run(["make", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert [name for name in kept if not (tmp_path / name).exists()] == []
    assert [name for name in removed if (tmp_path / name).exists()] == []
    assert not (tmp_path / "data" / "demo").exists() and not (tmp_path / ".venv").exists()
