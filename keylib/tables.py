"""Output tables as folders of committed runs: run ids, atomic commits, the current rows.

Output tables are folders of committed runs (``OUT/chroma/run=<run_id>/``). A run writes
into ``OUT/<table>/_staging/`` (ignored by Parquet readers) and is published by one
``rename``, so a run killed at any point leaves nothing half-written visible; readers take
the newest row per track across runs (:func:`read_current`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

__all__ = [
    "new_run_id",
    "committed_runs",
    "read_current",
    "commit_run",
    "clear_staging",
    "run_statuses",
]


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261124T200102Z-1a2b3c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def committed_runs(root: str | Path) -> list[Path]:
    """Committed run folders under a table root (``run=...`` at any partition depth)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("run=*") if p.is_dir() and "_staging" not in p.parts)


def read_current(spark: SparkSession, root: str | Path, *, order_by: str = "extracted_at") -> DataFrame | None:
    """The newest row of each track over all committed runs of a table, or ``None``."""
    if not committed_runs(root):
        return None
    frame = spark.read.option("mergeSchema", "false").parquet(str(root))
    window = Window.partitionBy("track_id").orderBy(F.col(order_by).desc_nulls_last(), F.col("run").desc())
    return frame.withColumn("_rank", F.row_number().over(window)).filter("_rank = 1").drop("_rank")


def clear_staging(root: str | Path) -> None:
    """Remove what killed runs left in ``root/_staging`` (never visible to readers)."""
    shutil.rmtree(Path(root) / "_staging", ignore_errors=True)


def commit_run(frame: DataFrame, root: str | Path, partition: str, *, run_id: str) -> Path:
    """Write ``frame`` as one run of a table and publish it atomically.

    Parameters
    ----------
    frame : DataFrame
        The run's rows.
    root : str or Path
        Table root, e.g. ``OUT/chroma``.
    partition : str
        Relative folder of the run, e.g. ``run=<run_id>`` or ``date=2026-11-24/run=<run_id>``.

    Returns
    -------
    Path
        The published folder.
    """
    root = Path(root).resolve()
    staging = root / "_staging" / run_id
    frame.write.mode("overwrite").parquet(str(staging))
    final = root / partition
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)  # one rename: the run appears whole or not at all
    _fsync_dir(final.parent)
    return final


def run_statuses(published: str | Path, *, success: tuple[str, ...]) -> tuple[dict[str, int], pd.DataFrame]:
    """Status counts and failed rows (track_id, status, error) of one committed run.

    Read from the run's Parquet footers and three small columns with pyarrow: no Spark job.
    """
    written = pq.read_table(published, columns=["track_id", "status", "error"]).to_pandas()
    counts = {str(k): int(v) for k, v in written["status"].value_counts().items()}
    return counts, written[~written["status"].isin(success)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
