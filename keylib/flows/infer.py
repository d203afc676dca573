"""The infer flow: current chroma rows without current keys -> the UDF -> one keys run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..errors import InputError
from ..incremental import stale_tracks
from ..inference import KEYS_TABLE
from ..serving import model_info
from ..runner import RunSummary
from ..tables import committed_runs, new_run_id, read_current
from ..workers import infer_dataframe
from .extract import commit_table_run

__all__ = [
    "run_infer", "read_keys", "configured_model_path", "driver_model_version", "keys_partition",
    "previous_keys_meta", "only_tracks", "infer_rows",
]

log = logging.getLogger("keylib")


def configured_model_path(config: Mapping[str, Any], model_path: str | None) -> str | None:
    """``--model`` if given, else the configuration's ``model.path``; ``None`` = the shipped model."""
    return model_path or (config.get("model", {}).get("path") or None)


def driver_model_version(model_path: str | None) -> str:
    """The model's version from its files and card, checked on the driver so that a bad
    model fails before any task runs; the network itself loads only on executors."""
    return model_info(model_path).version


def keys_partition(run_date: str | None, run_id: str) -> str:
    """A keys run's folder under the table: ``date=<run_date>/run=<run_id>`` (default date: today, UTC)."""
    run_date = run_date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"date={run_date}/run={run_id}"


def previous_keys_meta(spark: SparkSession, root: Path) -> pd.DataFrame | None:
    """``track_id``, ``model_version``, ``extracted_at`` of the current keys rows, or ``None``."""
    previous = read_current(spark, root, order_by="inferred_at")
    if previous is None:
        return None
    return previous.select("track_id", "model_version", "extracted_at").toPandas()


def only_tracks(spark: SparkSession, frame: DataFrame, track_ids: Sequence[str]) -> DataFrame:
    """The rows of ``frame`` whose ``track_id`` is one of ``track_ids``."""
    ids = spark.createDataFrame([(t,) for t in track_ids], "track_id string")
    return frame.join(F.broadcast(ids), "track_id", "left_semi")


def infer_rows(spark: SparkSession, chroma: DataFrame, *, n_rows: int, config: Mapping[str, Any],
               model_path: str | None) -> DataFrame:
    """Keys rows of ``n_rows`` chroma rows, spread over enough tasks for every core."""
    cpus = int(config["spark"]["task_cpus"])
    batch_rows = int(config["spark"]["arrow_batch_rows"])
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    # Enough tasks for every core, and about four Arrow batches per task beyond that.
    n_partitions = max(spark.sparkContext.defaultParallelism, -(-n_rows // (4 * batch_rows)))
    return infer_dataframe(chroma.repartition(n_partitions), model_path=model_path, task_cpus=cpus)


def run_infer(
    spark: SparkSession,
    *,
    features: str | Path,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    run_id: str | None = None,
    run_date: str | None = None,
    model_path: str | None = None,
) -> RunSummary:
    """Predict keys for the current chroma rows that have no current keys row.

    Writes one run to ``output/keys/date=<run_date>/run=<run_id>/`` with the atomic
    :func:`keylib.tables.commit_run`.

    Returns
    -------
    RunSummary
        ``listed`` = current chroma rows, ``new`` = rows predicted this run, ``failed`` =
        rows without a key other than silent ones; ``extra``: ``run_id``, ``committed``,
        ``statuses``, ``model_version``.
    """
    summary = RunSummary(job="infer")
    run_id = run_id or new_run_id()
    model_path = configured_model_path(config, model_path)
    runs = committed_runs(features)
    if not runs:
        raise InputError(f"no committed chroma runs under {features} (run extract first)")
    # One committed run holds exactly the current rows: read it as is, with no window.
    chroma = spark.read.parquet(str(runs[0])) if len(runs) == 1 else read_current(spark, features)
    version = driver_model_version(model_path)
    summary.extra.update(run_id=run_id, model_version=version)

    root = Path(output) / KEYS_TABLE
    previous = None if force else previous_keys_meta(spark, root)
    todo = chroma
    if previous is None:
        # Every current chroma row gets a keys row: no need to collect the listing first;
        # the counts come from the written run (one keys row per chroma row).
        n_todo = _parquet_rows(runs)
    else:
        chroma_meta = chroma.select("track_id", "extracted_at").toPandas()
        summary.listed = len(chroma_meta)
        mask = stale_tracks(chroma_meta, previous, model_version=version)
        todo_ids = chroma_meta.loc[mask, "track_id"].tolist()
        summary.new, summary.skipped = len(todo_ids), int((~mask).sum())
        if not todo_ids:
            log.info("nothing new to infer: all %d tracks have current keys", summary.listed)
            return summary
        if len(todo_ids) < len(chroma_meta):
            todo = only_tracks(spark, chroma, todo_ids)
        n_todo = len(todo_ids)
    frame = infer_rows(spark, todo, n_rows=n_todo, config=config, model_path=model_path)
    commit_table_run(frame, root, keys_partition(run_date, run_id), run_id=run_id, summary=summary)
    if previous is None:
        summary.listed = summary.new = sum(summary.extra["statuses"].values())
    return summary


def _parquet_rows(runs: Sequence[Path]) -> int:
    """Rows in the Parquet files of ``runs`` (from the footers, reading no data)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for run in runs for f in Path(run).glob("*.parquet"))


def read_keys(spark: SparkSession, output: str | Path) -> DataFrame | None:
    """The current keys rows (newest per track over all runs) under ``output/keys`` or
    ``output`` itself when it is the keys table; ``None`` when there is none."""
    root = Path(output)
    if (root / KEYS_TABLE).is_dir():
        root = root / KEYS_TABLE
    return read_current(spark, root, order_by="inferred_at")
