"""Spark glue: the session from configuration, Parquet schemas, atomic run commits, the
current-row view over all runs, and the distributed extraction.

Output tables are folders of committed runs (``OUT/chroma/run=<run_id>/``). A run writes
into ``OUT/<table>/_staging/`` (ignored by Parquet readers) and is published by one
``rename``, so a run killed at any point leaves nothing half-written visible; readers take
the newest row per track across runs (:func:`read_current`).
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .extract import CHROMA_COLUMNS, ExtractSettings, extract_track

__all__ = [
    "CHROMA_SCHEMA",
    "get_session",
    "new_run_id",
    "committed_runs",
    "read_current",
    "commit_run",
    "clear_staging",
    "run_statuses",
    "extract_dataframe",
]

CHROMA_SCHEMA = T.StructType([
    T.StructField("track_id", T.StringType(), False),
    T.StructField("uri", T.StringType(), False),
    T.StructField("fingerprint", T.StringType(), True),
    T.StructField("identity", T.StringType(), True),
    T.StructField("size_bytes", T.LongType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("offset_s", T.DoubleType(), True),
    T.StructField("sample_rate", T.IntegerType(), True),
    T.StructField("source_sample_rate", T.IntegerType(), True),
    T.StructField("hop", T.IntegerType(), True),
    T.StructField("n_frames", T.IntegerType(), True),
    T.StructField("feature_version", T.StringType(), True),
    T.StructField("chroma", T.ArrayType(T.FloatType(), containsNull=False), True),
    T.StructField("tuning_cents", T.DoubleType(), True),
    T.StructField("status", T.StringType(), False),
    T.StructField("error", T.StringType(), True),
    T.StructField("truth_key", T.StringType(), True),
    T.StructField("source", T.StringType(), True),
    T.StructField("extracted_at", T.TimestampType(), True),
])
assert [f.name for f in CHROMA_SCHEMA.fields] == CHROMA_COLUMNS


def get_session(config: Mapping[str, Any], app_name: str = "keylib") -> SparkSession:
    """The Spark session for ``config`` (``[spark]`` section).

    Under ``spark-submit`` the master comes from its ``--master`` flag; elsewhere (tests,
    notebooks) from ``spark.master`` in the configuration.
    """
    spark_conf = config["spark"]
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        builder = builder.master(spark_conf["master"]).config("spark.driver.memory", spark_conf["driver_memory"])
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(spark_conf["arrow_batch_rows"]))
        .config("spark.task.cpus", str(spark_conf["task_cpus"]))
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    for key, value in spark_conf["conf"].items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


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


def extract_dataframe(
    spark: SparkSession,
    tracks: pd.DataFrame,
    *,
    settings: ExtractSettings,
    tracks_per_partition: int,
) -> DataFrame:
    """Distributed :func:`keylib.extract.extract_track` over catalogue rows.

    The catalogue (paths only) goes to the executors; each one reads, decodes and
    computes the chroma of its own tracks.
    """
    n_partitions = max(1, math.ceil(len(tracks) / tracks_per_partition))
    listing_schema = T.StructType([
        T.StructField("track_id", T.StringType()),
        T.StructField("uri", T.StringType()),
        T.StructField("fingerprint", T.StringType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("truth_key", T.StringType()),
        T.StructField("source", T.StringType()),
    ])
    records = [
        (r.track_id, r.uri, r.fingerprint, None if pd.isna(r.size_bytes) else int(r.size_bytes),
         r.truth_key, r.source)
        for r in tracks.itertuples(index=False)
    ]
    listing = spark.createDataFrame(records, listing_schema).repartition(n_partitions)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [
                extract_track({k: (None if pd.isna(v) else v) for k, v in rec.items()}, settings=settings)
                for rec in batch.to_dict("records")
            ]
            yield pd.DataFrame(rows, columns=CHROMA_COLUMNS)

    return listing.mapInPandas(run, CHROMA_SCHEMA)
