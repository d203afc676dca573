"""The infer flow: current chroma rows without current keys -> the UDF -> one keys run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ...errors import InputError
from ...incremental import stale_tracks
from ...inference import CHROMA_INPUT_COLUMNS, KEYS_TABLE
from ...outcome import RunSummary
from ...serving import model_info
from ...storage.lease import leased
from ...storage.locations import new_run_id, resolve_output, table_uri
from ...storage.tables import count_rows, read_rows, table_exists
from ..frames import read_current
from ..workers import infer_dataframe
from .extract import commit_table_run, configured_model_path

__all__ = [
    "run_infer", "read_keys", "read_chroma",
    "previous_keys_meta", "only_tracks", "infer_rows",
]

log = logging.getLogger("keylib")


def read_chroma(spark: SparkSession, table: str, *, s3_settings: Mapping | None = None) -> DataFrame | None:
    """The current rows of a chroma table, the columns inference needs
    (:data:`~keylib.inference.CHROMA_INPUT_COLUMNS`), read by the executors themselves
    (pyarrow, local or S3: no Spark S3 connector); ``None`` when there is no table."""
    return read_current(spark, table, columns=CHROMA_INPUT_COLUMNS, s3_settings=s3_settings)


def previous_keys_meta(table: str, *, s3_settings: Mapping | None = None) -> pd.DataFrame | None:
    """``track_id``, ``model_version``, ``extracted_at`` of the current keys rows, or ``None``
    (read on the driver, these columns only)."""
    return read_rows(table, columns=["track_id", "model_version", "extracted_at"], s3_settings=s3_settings)


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


@leased("infer")
def run_infer(
    spark: SparkSession,
    *,
    features: str | Path,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    run_id: str | None = None,
    model_path: str | None = None,
) -> RunSummary:
    """Predict keys for the current chroma rows that have no current keys row.

    Commits one run to the ``output/keys`` table (local or ``s3://``) with
    :func:`keylib.spark.frames.commit_run`: one current row per track, holding the output's
    lease (:mod:`keylib.storage.lease`: another run on it raises
    :class:`~keylib.errors.OutputBusyError`).

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
    s3 = config["s3"]
    features = resolve_output(features)
    chroma = read_chroma(spark, features, s3_settings=s3)
    if chroma is None:
        raise InputError(f"no committed chroma table at {features} (run extract first)")
    # The card, checked on the driver so that a bad model fails before any task runs; the
    # network itself loads only on the executors.
    version = model_info(model_path).version
    summary.extra.update(run_id=run_id, model_version=version)

    root = table_uri(output, KEYS_TABLE)
    previous = None if force else previous_keys_meta(root, s3_settings=s3)
    todo = chroma
    if previous is None:
        # Every current chroma row gets a keys row: the count comes from the commit log.
        n_todo = count_rows(features, s3_settings=s3)
    else:
        chroma_meta = read_rows(features, columns=["track_id", "extracted_at"], s3_settings=s3)
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
    commit_table_run(frame, root, run_id=run_id, s3_settings=s3, summary=summary)
    if previous is None:
        summary.listed = summary.new = sum(summary.extra["statuses"].values())
    return summary


def read_keys(spark: SparkSession, output: str | Path, *, s3_settings: Mapping | None = None) -> DataFrame | None:
    """The current keys rows (one per track) of ``output/keys``, or of ``output`` itself
    when it is the keys table, as a Spark DataFrame; ``None`` when there is none."""
    root = table_uri(output, KEYS_TABLE)
    if not table_exists(root, s3_settings=s3_settings):
        root = resolve_output(output)
    return read_current(spark, root, s3_settings=s3_settings)
