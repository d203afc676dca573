"""The infer flow: current chroma rows without current keys -> the UDF -> one keys run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import functions as F

from ..errors import STATUS_OK, STATUS_SILENT, InputError
from ..incremental import stale_tracks
from ..inference import KEYS_TABLE
from ..model import load_model
from ..runner import RunSummary
from ..tables import clear_staging, commit_run, committed_runs, new_run_id, read_current, run_statuses
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
    run_date: str | None = None,
    model_path: str | None = None,
):
    """Predict keys for the current chroma rows that have no current keys row.

    Writes one run to ``output/keys/date=<run_date>/run=<run_id>/`` with the lead's atomic
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
    run_date = run_date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    model_path = model_path or (config.get("model", {}).get("path") or None)
    runs = committed_runs(features)
    if not runs:
        raise InputError(f"no committed chroma runs under {features} (run extract first)")
    # One committed run holds exactly the current rows: read it as is, with no window.
    chroma = spark.read.parquet(str(runs[0])) if len(runs) == 1 else read_current(spark, features)
    model = load_model(model_path)  # validates the model on the driver before any task runs
    summary.extra.update(run_id=run_id, model_version=model.version)

    root = Path(output) / KEYS_TABLE
    previous = None if force else read_current(spark, root, order_by="inferred_at")
    todo = chroma
    if previous is None:
        # Every current chroma row gets a keys row: no need to collect the listing first;
        # the counts come from the written run (one keys row per chroma row).
        n_todo = _parquet_rows(runs)
    else:
        chroma_meta = chroma.select("track_id", "extracted_at").toPandas()
        summary.listed = len(chroma_meta)
        prev_pdf = previous.select("track_id", "model_version", "extracted_at").toPandas()
        mask = stale_tracks(chroma_meta, prev_pdf, model_version=model.version)
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
    clear_staging(root)
    published = commit_run(frame, root, f"date={run_date}/run={run_id}", run_id=run_id)
    counts, failed = run_statuses(published, success=(STATUS_OK, STATUS_SILENT))
    summary.failed = len(failed)
    summary.extra.update(committed=str(published), statuses=counts)
    summary.failures = [(r.track_id, r.status, r.error) for r in failed.head(50).itertuples(index=False)]
    if previous is None:
        summary.listed = summary.new = sum(counts.values())
    return summary


def _parquet_rows(runs: Sequence[Path]) -> int:
    """Rows in the Parquet files of ``runs`` (from the footers, reading no data)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for run in runs for f in Path(run).glob("*.parquet"))


def read_keys(spark, output: str | Path):
    """The current keys rows (newest per track over all runs) under ``output/keys`` or
    ``output`` itself when it is the keys table; ``None`` when there is none."""
    root = Path(output)
    if (root / KEYS_TABLE).is_dir():
        root = root / KEYS_TABLE
    return read_current(spark, root, order_by="inferred_at")
