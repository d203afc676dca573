"""The annotate flow: audio to chroma and keys in one Spark pass, then (manifest with keys)
the MIREX report. ``nightly`` runs the same flow without the report."""

from __future__ import annotations

import logging
from functools import reduce
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from ...incremental import stale_tracks
from ...inference import KEYS_TABLE
from ...outcome import RunSummary
from ...serving import model_info
from ...storage.io import is_remote
from ...storage.lease import leased
from ...storage.locations import new_run_id, table_uri
from ..workers import annotate_dataframe, chroma_projection, keys_projection
from .evaluate import run_evaluate
from .extract import ExtractPlan, commit_table_run, configured_model_path, plan_extract
from .infer import infer_rows, only_tracks, previous_keys_meta, read_chroma

__all__ = ["run_annotate", "summarize_keys", "manifest_has_keys"]

log = logging.getLogger("keylib")


def summarize_keys(frame: pd.DataFrame, *, limit: int | None = None) -> str:
    """A plain-text table of keys rows (track, key, confidence, Camelot, status)."""
    frame = frame.sort_values("track_id")
    if limit is not None:
        frame = frame.head(limit)
    width = max([len("track"), *(len(str(t)) for t in frame["track_id"])])
    lines = [f"{'track':<{width}}  {'key':<9}  {'conf':>5}  {'cam':>3}  status"]
    for r in frame.itertuples(index=False):
        if isinstance(r.key, str):
            lines.append(f"{r.track_id:<{width}}  {r.key:<9}  {r.confidence:5.2f}  {r.camelot:>3}  {r.status}")
        else:
            lines.append(f"{r.track_id:<{width}}  {'-':<9}  {'':>5}  {'':>3}  {r.status}: {r.error}")
    return "\n".join(lines)


def manifest_has_keys(input_uri: str, listing: pd.DataFrame) -> bool:
    """True when ``input_uri`` is a local CSV manifest whose ``key`` column (``truth_key``
    of its ``listing``, already read by the run) labels at least one track."""
    if not str(input_uri).lower().endswith(".csv") or is_remote(input_uri):
        return False
    labels = listing["truth_key"].dropna().astype(str).str.strip()
    return bool((labels != "").any())


@leased("annotate")
def run_annotate(
    spark: SparkSession,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    model_path: str | None = None,
    run_id: str | None = None,
    with_report: bool = True,
) -> dict[str, Any]:
    """Chroma and keys for the new or changed tracks of a catalogue in one pass, then (a
    manifest with a ``key`` column, ``with_report`` and ``report.enabled``) the MIREX report.

    New or changed tracks (the extraction rule, :func:`~keylib.incremental.select_tracks`)
    go from audio to keys in one ``mapInPandas`` (:func:`keylib.spark.workers.annotate_dataframe`);
    tracks whose chroma is current but whose keys are stale (another model version, or a
    run killed between its two commits) go through the infer step over their chroma rows
    (:func:`~keylib.incremental.stale_tracks`). Each table gets one atomically committed
    run (chroma first, then keys, both ``run_id``); an unchanged catalogue writes nothing.
    The whole run holds the output's lease (:mod:`keylib.storage.lease`: another run on it raises
    :class:`~keylib.errors.OutputBusyError`).

    Returns
    -------
    dict
        ``extract`` and ``infer`` (:class:`~keylib.outcome.RunSummary`, counted as
        :func:`~keylib.spark.flows.run_extract` and :func:`~keylib.spark.flows.run_infer` count them),
        ``listing`` (the catalogue, :data:`~keylib.catalogue.CATALOGUE_COLUMNS`), ``report``
        (path of ``report.html`` or None), ``evaluation`` (:class:`~keylib.evaluate.Evaluation`
        or None).
    """
    run_id = run_id or new_run_id()
    model_path = configured_model_path(config, model_path)
    # The card, read once on the driver: a bad model fails before any task runs.
    model = model_info(model_path)
    version = model.version
    plan = plan_extract(spark, input_uri=input_uri, output=output, config=config, force=force, run_id=run_id,
                        feature_version=model.feature_version)
    extract = plan.summary
    infer = RunSummary(job="infer")
    infer.extra.update(run_id=run_id, model_version=version)
    keys_table = table_uri(output, KEYS_TABLE)

    todo_ids = set(plan.todo["track_id"])
    stale_ids: list[str] = []
    infer.listed = len(todo_ids)
    if plan.previous_meta is not None:
        kept = plan.previous_meta[~plan.previous_meta["track_id"].isin(todo_ids)]
        keys_meta = None if force else previous_keys_meta(keys_table, s3_settings=config["s3"])
        mask = stale_tracks(kept, keys_meta, model_version=version, force=force)
        stale_ids = kept.loc[mask, "track_id"].tolist()
        infer.listed += len(kept)
    infer.new = len(todo_ids) + len(stale_ids)
    infer.skipped = infer.listed - infer.new
    if infer.new:
        _one_pass(spark, plan, stale_ids, keys_table=keys_table, config=config, model_path=model_path,
                  run_id=run_id, extract=extract, infer=infer)
    else:
        log.info("nothing new to annotate: all %d tracks have current chroma and keys", infer.listed)
    result = {"extract": extract, "infer": infer, "listing": plan.listing, "report": None, "evaluation": None}
    if with_report and config["report"]["enabled"] and manifest_has_keys(input_uri, plan.listing):
        evaluation, report = run_evaluate(spark, keys=keys_table, truth=input_uri,
                                          output=table_uri(output, "report"), s3_settings=config["s3"])
        result.update(report=report, evaluation=evaluation)
    return result


def _one_pass(spark: SparkSession, plan: ExtractPlan, stale_ids: list[str], *, keys_table: str,
              config: Mapping[str, Any], model_path: str | None, run_id: str,
              extract: RunSummary, infer: RunSummary) -> None:
    """Commit the chroma run of ``plan.todo`` and the keys run of it and of ``stale_ids``
    (two Delta commits, chroma first: :func:`~keylib.spark.flows.extract.commit_table_run`)."""
    s3 = config["s3"]
    keys_parts: list[DataFrame] = []
    annotated = None
    try:
        if not plan.todo.empty:
            annotated = annotate_dataframe(
                spark, plan.todo,
                settings=plan.settings(config),
                tracks_per_partition=config["spark"]["tracks_per_partition"],
                model_path=model_path,
                task_cpus=int(config["spark"]["task_cpus"]),
            )
            # Two tables from one pass: persist the pass once and write its two projections.
            # Each table is committed by keylib.spark.frames.commit_run (executors write its
            # Parquet parts, the driver commits once); not persisting would decode every
            # track twice; the persisted rows (chroma
            # ~7 KB per 30 s track) spill to local disk when memory is short. Should a lost
            # executor recompute a partition, its keys rows carry a newer extracted_at than
            # the committed chroma rows: the next run sees them stale and re-infers them.
            annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
            commit_table_run(chroma_projection(annotated), plan.table, run_id=run_id, s3_settings=s3,
                             summary=extract)
            keys_parts.append(keys_projection(annotated))
        if stale_ids:
            chroma = read_chroma(spark, plan.table, s3_settings=s3)
            keys_parts.append(infer_rows(spark, only_tracks(spark, chroma, stale_ids), n_rows=len(stale_ids),
                                         config=config, model_path=model_path))
        commit_table_run(reduce(DataFrame.unionByName, keys_parts), keys_table, run_id=run_id, s3_settings=s3,
                         summary=infer)
    finally:
        if annotated is not None:
            annotated.unpersist()
