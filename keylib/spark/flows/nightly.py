"""The nightly flow: incremental chroma and keys (one pass), then the run manifest.

See :mod:`keylib.storage.manifest` for the manifest and what "done" means.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from pyspark.sql import SparkSession

from ...errors import InputError, StorageError
from ...outcome import EXIT_INPUT, EXIT_STORAGE, RunSummary
from ...storage.lease import leased
from ...storage.locations import new_run_id
from ...storage.manifest import finish_manifest, redact_text, stage_record, start_manifest
from .annotate import run_annotate
from .extract import run_extract, served_feature_version

__all__ = ["run_nightly"]

log = logging.getLogger("keylib")


@leased("nightly")
def run_nightly(
    spark: SparkSession,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    conf_path: str | None = None,
    run_id: str | None = None,
    with_keys: bool = True,
    force: bool = False,
) -> RunSummary:
    """One nightly run: incremental chroma and keys in one pass, then the manifest.

    ``with_keys=False`` stops after extraction (``--extract-only``: features for training);
    ``force`` redoes every track, failures whose retries are spent included.

    Returns
    -------
    RunSummary
        ``job="nightly"``; ``extra["manifest"]`` is the manifest's path and
        ``extra["exit_code"]`` the code the job returns.

    Raises
    ------
    InputError
        the catalogue cannot be listed; a manifest with ``status = "input_error"`` is
        written first.
    StorageError
        the output (local or ``s3://``) cannot be read or written; nothing of the run is
        visible, and a manifest with ``status = "storage_error"`` is written when the
        store still takes it.
    OutputBusyError
        another run holds the output's lease (:mod:`keylib.storage.lease`, held for the whole
        run); this run wrote nothing, not even a manifest.
    """
    run_id = run_id or new_run_id()
    summary = RunSummary(job="nightly")
    summary.extra["run_id"] = run_id
    manifest = start_manifest(run_id=run_id, input_uri=input_uri, output=output, config=config,
                              feature_version=served_feature_version(config),
                              conf_path=conf_path, spark_master=spark.sparkContext.master,
                              spark_app_id=spark.sparkContext.applicationId)
    stages: dict[str, Any] = {}
    max_failed_share = config["nightly"]["max_failed_share"]
    try:
        extract, final = _stages(spark, input_uri=input_uri, output=output, config=config, run_id=run_id,
                                 with_keys=with_keys, force=force, manifest=manifest, stages=stages)
        _count(summary, extract, final)
        # Retryable failures whose attempts are spent: skipped tonight, listed for a person.
        exhausted = extract.extra.get("exhausted", [])
        manifest["exhausted"] = {"count": len(exhausted), "max_attempts": config["nightly"]["max_attempts"],
                                 "tracks": [{**t, "error": redact_text(t["error"])} for t in exhausted[:1000]]}
        code = summary.exit_code(max_failed_share)
        status = "ok" if code == 0 else "too_many_failures"
    except (InputError, StorageError) as exc:
        storage = isinstance(exc, StorageError)  # the output store failed: nothing of the run is visible
        manifest.update(status="storage_error" if storage else "input_error", error=redact_text(exc),
                        exit_code=EXIT_STORAGE if storage else EXIT_INPUT)
        try:
            finish_manifest(manifest, summary, stages, output, s3_settings=config["s3"])
        except StorageError as missed:  # the first error is the one to report
            log.warning("no run manifest: %s", missed)
        raise
    manifest.update(status=status, error=None, exit_code=code)
    summary.extra["exit_code"] = code
    summary.extra["manifest"] = str(finish_manifest(manifest, summary, stages, output, s3_settings=config["s3"]))
    return summary


def _stages(spark: SparkSession, *, input_uri: str, output: str | Path, config: Mapping[str, Any], run_id: str,
            with_keys: bool, force: bool, manifest: dict, stages: dict) -> tuple[RunSummary, RunSummary]:
    """The night's extraction and its last stage (inference, or extraction again with
    ``with_keys=False``), each recorded in ``stages``."""
    if with_keys:
        # One pass for tonight's new or changed tracks; the infer step for any track whose
        # chroma is current but whose keys are not (another model, a run killed between
        # its two commits).
        result = run_annotate(spark, input_uri=input_uri, output=output, config=config, run_id=run_id,
                              with_report=False, force=force)
        extract, final = result["extract"], result["infer"]
        stages["extract"], stages["infer"] = stage_record(extract), stage_record(final)
        manifest["versions"]["model"] = final.extra.get("model_version")
    else:
        extract = final = run_extract(spark, input_uri=input_uri, output=output, config=config, run_id=run_id,
                                      force=force)
        stages["extract"] = stage_record(extract)
    return extract, final


def _count(summary: RunSummary, extract: RunSummary, final: RunSummary) -> None:
    """The night's counts in ``summary``, from its two stages."""
    summary.listed = extract.listed
    # What the night annotated: tracks new or changed at the last stage (a track
    # whose chroma was fresh but whose key row was missing counts once, as new).
    summary.new = max(extract.new, final.new)
    summary.skipped = summary.listed - summary.new
    summary.failed = max(extract.failed, final.failed)
    # Keys rows carry the extraction failures too: the last stage lists every failure once.
    summary.failures = final.failures[:50]
