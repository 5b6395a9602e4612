"""Writing a simulated world: the log, meta.json and truth.parquet, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from features.io import LogFileError, write_log, write_parquet
from features.log import TABLES

if TYPE_CHECKING:
    from features.simulate.world import SimulatedWorld


def check_world_dir(out_dir: str | os.PathLike[str]) -> Path:
    """`out_dir` if a simulated world may be written there: a new or empty folder, or one
    holding an earlier simulated world (Parquet tables and their truth.parquet). A log that
    came from elsewhere is never written over.

    Raises:
        LogFileError: `out_dir` is a file, or holds a log that was not simulated.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LogFileError(f"{out_dir} is a file, not a folder for the simulated log")
    found = [
        path
        for name in TABLES
        for path in (out_dir / f"{name}.parquet", out_dir / f"{name}.csv")
        if path.exists()
    ]
    simulated = (out_dir / "truth.parquet").is_file()
    if any(path.suffix == ".csv" for path in found) or (found and not simulated):
        names = ", ".join(path.name for path in found)
        raise LogFileError(
            f"{out_dir} already holds a log that was not simulated ({names}); choose another folder"
        )
    return out_dir


def write_world(world: SimulatedWorld, out_dir: str | os.PathLike[str]) -> None:
    """Write the log (four Parquet tables and meta.json) and truth.parquet beside it.

    Only into a folder `check_world_dir` accepts. The six files are written into a staging
    folder inside `out_dir` first and moved in only once all are written, so a failed or
    interrupted run leaves the world that was there (tables and truth never from two runs).

    Raises:
        LogFileError: `out_dir` is a file, or holds a log that was not simulated.
    """
    out_dir = check_world_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for left in out_dir.glob(".simulate-*"):  # from a run that was killed
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out_dir))
    try:
        write_log(world.log, staging, world.meta)
        write_parquet(world.truth, staging / "truth.parquet")
        # One rename each, meta.json last: nothing is computed between them.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == "meta.json"):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
