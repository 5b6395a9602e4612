"""The pandas engine: one process, the whole log in memory, partitions of buyers in turn."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features.build import ORDERS_PER_PARTITION, iter_partitions
from features.engines import METADATA_FILE, Columns, PartitionJob, conform, to_arrow
from features.io import atomic_folder, load_log
from features.log import TransactionLog

DATA_FILE = "part-00000.parquet"


def write_dataset(
    frame: pd.DataFrame, columns: Columns, out: Path, metadata: dict | None = None
) -> None:
    """Write `frame` as a one-file Parquet dataset folder (and its metadata), atomically."""
    table = to_arrow(frame, columns)
    with atomic_folder(out) as staging:
        staging.mkdir()
        pq.write_table(table, staging / DATA_FILE)
        if metadata is not None:
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))


class PandasLog:
    """A log loaded and validated by `features.load_log`, processed in one process.

    Partitions bound peak memory as in `build_features`: one per ~2M orders by default.
    """

    def __init__(self, data_dir: Path, partitions: int | None = None):
        self._log = load_log(data_dir)
        self._partitions = partitions

    @property
    def span(self) -> TransactionLog:
        """The whole log (this engine holds it)."""
        return self._log

    def map_partitions(
        self, job: PartitionJob, columns: Columns, out: Path, metadata: dict | None = None
    ) -> int:
        """Run `job` on each partition of buyers, in turn; see PartitionedLog."""
        log = self._log
        partitions = self._partitions or max(1, -(-len(log.orders) // ORDERS_PER_PARTITION))
        pieces = [conform(job(part), columns) for part in iter_partitions(log, partitions)]
        frame = pd.concat(pieces, ignore_index=True)
        keys = [name for name in ("as_of", "buyer_id") if name in columns]
        if keys:  # as build_features sorts: the same file for the same log
            frame = frame.sort_values(keys, ignore_index=True)
        write_dataset(frame, columns, out, metadata)
        return len(frame)
