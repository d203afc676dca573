"""The extract flow: list -> select what is new -> chroma in the workers -> one committed run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from ...catalogue import list_tracks
from ...errors import STATUS_OK, STATUS_SILENT
from ...incremental import select_tracks
from ...outcome import RunSummary
from ...serving import model_info
from ...storage.commit import run_statuses
from ...storage.lease import leased
from ...storage.locations import new_run_id, table_uri
from ...storage.tables import read_rows
from ...track import ExtractSettings
from ..frames import commit_run
from ..workers import extract_dataframe

__all__ = ["CHROMA_TABLE", "SUCCESS_STATUSES", "ExtractPlan", "plan_extract", "commit_table_run", "run_extract",
           "configured_model_path", "served_feature_version"]

CHROMA_TABLE = "chroma"
SUCCESS_STATUSES = (STATUS_OK, STATUS_SILENT)

log = logging.getLogger("keylib")


@dataclass
class ExtractPlan:
    """What an extraction run must do: the catalogue, the tracks to (re)extract, and the
    chroma table's current rows before the run.

    Attributes
    ----------
    listing : pd.DataFrame
        The catalogue (:data:`keylib.catalogue.CATALOGUE_COLUMNS`), listed once per run.
    todo : pd.DataFrame
        Catalogue rows to extract (new, changed, retryable, other feature version).
    table : str
        The chroma table (``OUT/chroma``, a local folder or ``s3://``).
    previous_meta : pd.DataFrame or None
        ``track_id``, ``fingerprint``, ``status``, ``feature_version``, ``extracted_at`` of
        the table's current rows before the run (``None``: no committed run yet). Read on
        the driver without Spark (:func:`keylib.storage.tables.read_rows`, these columns only).
    summary : RunSummary
        ``job="extract"`` with listed / new / skipped and ``extra["run_id"]``.
    feature_version : str
        The features this run computes: the served model's (:func:`served_feature_version`).
    """

    listing: pd.DataFrame
    todo: pd.DataFrame
    table: str
    previous_meta: pd.DataFrame | None
    summary: RunSummary
    feature_version: str

    def settings(self, config: Mapping[str, Any]) -> ExtractSettings:
        """The workers' extraction settings: the configuration's, with this run's features."""
        return ExtractSettings.from_config(config, feature_version=self.feature_version)


def configured_model_path(config: Mapping[str, Any], model_path: str | None) -> str | None:
    """``--model`` if given, else the configuration's ``model.path``; ``None`` = the shipped model."""
    return model_path or (config.get("model", {}).get("path") or None)


def served_feature_version(config: Mapping[str, Any], model_path: str | None = None) -> str:
    """The features extraction computes: the ``feature_version`` of the model served
    (``model_path``, else the configuration's, else the shipped one), read from its card on
    the driver (:func:`keylib.serving.model_info`: a bad model fails before any task)."""
    return model_info(configured_model_path(config, model_path)).feature_version


# "attempts" is absent from tables written before it existed (read_rows leaves it out).
_PLAN_COLUMNS = ["track_id", "fingerprint", "status", "error", "attempts", "feature_version", "extracted_at"]


def plan_extract(spark: SparkSession, *, input_uri: str, output: str | Path, config: Mapping[str, Any],
                 force: bool = False, run_id: str, feature_version: str) -> ExtractPlan:
    """List the catalogue and select its new or changed tracks against ``output/chroma``:
    rows of another ``feature_version`` than this run's are re-extracted."""
    summary = RunSummary(job="extract")
    table = table_uri(output, CHROMA_TABLE)
    listing = list_tracks(input_uri, s3_settings=config["s3"])
    summary.listed = len(listing)
    log.info("listed %d tracks from %s", len(listing), input_uri)
    # A few small columns of the current rows, read on the driver (no Spark job).
    previous_meta = read_rows(table, columns=_PLAN_COLUMNS, s3_settings=config["s3"])
    todo, skipped = select_tracks(
        listing, previous_meta, versions={"feature_version": feature_version}, force=force,
        max_attempts=config["nightly"]["max_attempts"],
    )
    summary.new, summary.skipped = len(todo), len(skipped)
    summary.extra["run_id"] = run_id
    summary.extra["exhausted"] = _exhausted_failures(skipped, previous_meta)
    if summary.extra["exhausted"]:
        log.warning("%d track(s) failed the same way on %d runs in a row and are not retried (--force retries "
                    "them; the run manifest lists them)", len(summary.extra["exhausted"]),
                    config["nightly"]["max_attempts"])
    if todo.empty:
        log.info("nothing new to extract: all %d tracks are up to date", summary.listed)
    else:
        log.info("extracting %d tracks (%d up to date)", len(todo), len(skipped))
    return ExtractPlan(listing, todo, table, previous_meta, summary, feature_version)


def _exhausted_failures(skipped: pd.DataFrame, previous_meta: pd.DataFrame | None) -> list[dict[str, Any]]:
    """``track_id``, ``status``, ``attempts``, ``error`` of the skipped tracks whose retries
    are spent (:func:`~keylib.incremental.select_tracks`), for the run manifest."""
    ids = skipped.loc[skipped["exhausted"], "track_id"]
    if ids.empty or previous_meta is None:
        return []
    rows = previous_meta.drop_duplicates("track_id", keep="last").set_index("track_id").loc[ids]
    return [{"track_id": track_id, "status": r.status, "attempts": int(r.attempts), "error": r.error}
            for track_id, r in zip(rows.index, rows.itertuples(index=False))]


def commit_table_run(frame: DataFrame, table: str, *, run_id: str, s3_settings: Mapping[str, Any] | None,
                     summary: RunSummary) -> None:
    """Commit ``frame`` as one run of ``table`` (:func:`keylib.spark.frames.commit_run`: an
    upsert on ``track_id``, atomic, local or ``s3://``) and count its statuses into
    ``summary`` (``failed``, ``failures``, ``extra["committed"]`` and ``["statuses"]``)."""
    commit = commit_run(frame, table, run_id=run_id, s3_settings=s3_settings, success=SUCCESS_STATUSES)
    counts, failed = run_statuses(commit)
    summary.failed = len(failed)
    summary.extra.update(committed=str(commit), statuses=counts)
    summary.failures = [(r.track_id, r.status, r.error) for r in failed.head(50).itertuples(index=False)]


@leased("extract")
def run_extract(
    spark: SparkSession,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    run_id: str | None = None,
    model_path: str | None = None,
) -> RunSummary:
    """Extract chroma for the new or changed tracks of a catalogue into ``output/chroma``
    (a local folder or ``s3://``; one committed run, see :mod:`keylib.storage.tables`), with
    the features of the model served (``model_path``, else ``model.path``, else the shipped
    model: :func:`served_feature_version`), holding
    the output's lease (:mod:`keylib.storage.lease`: another run on it raises
    :class:`~keylib.errors.OutputBusyError`).

    Returns
    -------
    RunSummary
        listed / new / skipped / failed counts; ``extra["run_id"]`` and
        ``extra["committed"]`` (the table and its new version, absent when nothing was new).
    """
    run_id = run_id or new_run_id()
    plan = plan_extract(spark, input_uri=input_uri, output=output, config=config, force=force, run_id=run_id,
                        feature_version=served_feature_version(config, model_path))
    if plan.todo.empty:
        return plan.summary
    frame = extract_dataframe(
        spark, plan.todo,
        settings=plan.settings(config),
        tracks_per_partition=config["spark"]["tracks_per_partition"],
    )
    commit_table_run(frame, plan.table, run_id=run_id, s3_settings=config["s3"], summary=plan.summary)
    return plan.summary
