"""The infer flow: current chroma rows without current keys -> the UDF -> one keys run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from ..errors import STATUS_OK, STATUS_SILENT, InputError
from ..incremental import stale_tracks
from ..inference import CHROMA_INPUT_COLUMNS, KEYS_TABLE
from ..model import load_model
from ..runner import RunSummary
from ..tables import (commit_run, count_rows, new_run_id, read_current, read_rows, resolve_output, run_statuses,
                      table_exists, table_uri)
from ..workers import infer_dataframe

__all__ = ["run_infer", "read_keys"]

log = logging.getLogger("keylib")


def run_infer(
    spark,
    *,
    features: str | Path,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    run_id: str | None = None,
    model_path: str | None = None,
):
    """Predict keys for the current chroma rows that have no current keys row.

    Commits one run to the ``output/keys`` table (local or ``s3://``) with
    :func:`keylib.tables.commit_run`: one current row per track.

    Returns
    -------
    RunSummary
        ``listed`` = current chroma rows, ``new`` = rows predicted this run, ``failed`` =
        rows without a key other than silent ones; ``extra``: ``run_id``, ``committed``,
        ``statuses``, ``model_version``.
    """
    summary = RunSummary(job="infer")
    run_id = run_id or new_run_id()
    model_path = model_path or (config.get("model", {}).get("path") or None)
    s3 = config["s3"]
    features = resolve_output(features)
    # The executors read the chroma files themselves (pyarrow, local or S3).
    chroma = read_current(spark, features, columns=CHROMA_INPUT_COLUMNS, s3_settings=s3)
    if chroma is None:
        raise InputError(f"no committed chroma table at {features} (run extract first)")
    model = load_model(model_path)  # validates the model on the driver before any task runs
    summary.extra.update(run_id=run_id, model_version=model.version)

    root = table_uri(output, KEYS_TABLE)
    previous = None if force else read_rows(root, columns=["track_id", "model_version", "extracted_at"],
                                            s3_settings=s3)
    todo = chroma
    if previous is None:
        # Every current chroma row gets a keys row: the count comes from the commit log.
        n_todo = count_rows(features, s3_settings=s3)
    else:
        chroma_meta = read_rows(features, columns=["track_id", "extracted_at"], s3_settings=s3)
        summary.listed = len(chroma_meta)
        mask = stale_tracks(chroma_meta, previous, model_version=model.version)
        todo_ids = chroma_meta.loc[mask, "track_id"].tolist()
        summary.new, summary.skipped = len(todo_ids), int((~mask).sum())
        if not todo_ids:
            log.info("nothing new to infer: all %d tracks have current keys", summary.listed)
            return summary
        if len(todo_ids) < len(chroma_meta):
            ids = spark.createDataFrame([(t,) for t in todo_ids], "track_id string")
            todo = chroma.join(F.broadcast(ids), "track_id", "left_semi")
        n_todo = len(todo_ids)
    cpus = int(config["spark"]["task_cpus"])
    batch_rows = int(config["spark"]["arrow_batch_rows"])
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    # Enough tasks for every core, and about four Arrow batches per task beyond that.
    n_partitions = max(spark.sparkContext.defaultParallelism, -(-n_todo // (4 * batch_rows)))
    frame = infer_dataframe(todo.repartition(n_partitions), model_path=model_path, task_cpus=cpus)
    commit = commit_run(frame, root, run_id=run_id, s3_settings=s3, success=(STATUS_OK, STATUS_SILENT))
    counts, failed = run_statuses(commit)
    summary.failed = len(failed)
    summary.extra.update(committed=str(commit), statuses=counts)
    summary.failures = [(r.track_id, r.status, r.error) for r in failed.head(50).itertuples(index=False)]
    if previous is None:
        summary.listed = summary.new = sum(counts.values())
    return summary


def read_keys(spark, output: str | Path, *, s3_settings: Mapping | None = None):
    """The current keys rows (one per track) of ``output/keys``, or of ``output`` itself
    when it is the keys table, as a Spark DataFrame; ``None`` when there is none."""
    root = table_uri(output, KEYS_TABLE)
    if not table_exists(root, s3_settings=s3_settings):
        root = resolve_output(output)
    return read_current(spark, root, s3_settings=s3_settings)
