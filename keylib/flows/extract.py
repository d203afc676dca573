"""The extract flow: list -> select what is new -> chroma in the workers -> one committed run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from pyspark.sql import SparkSession

from .. import features
from ..catalogue import list_tracks
from ..errors import STATUS_OK, STATUS_SILENT
from ..extract import ExtractSettings
from ..incremental import select_tracks
from ..runner import RunSummary
from ..tables import commit_run, new_run_id, read_rows, run_statuses, table_uri
from ..workers import extract_dataframe

__all__ = ["CHROMA_TABLE", "run_extract"]

CHROMA_TABLE = "chroma"
SUCCESS_STATUSES = (STATUS_OK, STATUS_SILENT)

log = logging.getLogger("keylib")


def run_extract(
    spark: SparkSession,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    run_id: str | None = None,
) -> RunSummary:
    """Extract chroma for the new or changed tracks of a catalogue into ``output/chroma``
    (a local folder or ``s3://``; one committed run, see :mod:`keylib.tables`).

    Returns
    -------
    RunSummary
        listed / new / skipped / failed counts; ``extra["run_id"]`` and
        ``extra["committed"]`` (the table and its new version, absent when nothing was new).
    """
    summary = RunSummary(job="extract")
    run_id = run_id or new_run_id()
    root = table_uri(output, CHROMA_TABLE)
    listing = list_tracks(input_uri, s3_settings=config["s3"])
    summary.listed = len(listing)
    log.info("listed %d tracks from %s", len(listing), input_uri)

    previous_pdf = None
    if not force:  # a few small columns of the current rows, read on the driver
        previous_pdf = read_rows(root, columns=["track_id", "fingerprint", "status", "feature_version"],
                                 s3_settings=config["s3"])
    todo, skipped = select_tracks(
        listing, previous_pdf, versions={"feature_version": features.FEATURE_VERSION}, force=force
    )
    summary.new, summary.skipped = len(todo), len(skipped)
    summary.extra["run_id"] = run_id
    if todo.empty:
        log.info("nothing new to extract: all %d tracks are up to date", summary.listed)
        return summary

    log.info("extracting %d tracks (%d up to date)", len(todo), len(skipped))
    frame = extract_dataframe(
        spark, todo,
        settings=ExtractSettings.from_config(config),
        tracks_per_partition=config["spark"]["tracks_per_partition"],
    )
    commit = commit_run(frame, root, run_id=run_id, s3_settings=config["s3"], success=SUCCESS_STATUSES)
    counts, failed = run_statuses(commit)
    summary.failed = len(failed)
    summary.extra["committed"] = str(commit)
    summary.extra["statuses"] = counts
    summary.failures = [(r.track_id, r.status, r.error) for r in failed.head(50).itertuples(index=False)]
    return summary
