"""The nightly run manifest ``OUT/_runs/<run_id>.json``; the run itself is
:func:`keylib.spark.flows.nightly.run_nightly`.

``./submit.sh nightly --input X --output OUT [--conf conf/nightly.toml]``:

1. list the catalogue on the driver (S3: paginated, ETag + size + last-modified);
2. annotate, in one pass from audio to keys (:func:`keylib.spark.flows.run_annotate`), only
   what is new or changed since the committed results (identity: ETag + size on S3, size +
   mtime or content hash locally), or written by another feature version, or failed for a
   reason worth retrying (missing, read_error); keys of another model version are redone
   from the committed chroma;
3. commit the new rows as one atomic Delta commit per table (``OUT/chroma``, then
   ``OUT/keys``; ``--extract-only``: chroma alone; :mod:`keylib.storage.tables`): one current row
   per track, earlier versions kept;
4. write the run manifest ``OUT/_runs/<run_id>.json`` last (whole or not at all).

``OUT`` is a local folder or ``s3://bucket/prefix``, through the same code. What is
"done" is read from the committed tables themselves, not from manifests: a run killed
after committing its rows but before its manifest loses nothing, and a run killed before
its commit left nothing visible (its uncommitted files are deleted by the next commit).
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from ..config import config_hash
from ..outcome import RunSummary
from ..redact import redact as redact_text  # the one redaction; None stays None
from .files import write_text
from .locations import resolve_output, table_uri

__all__ = [
    "MANIFEST_DIR", "start_manifest", "stage_record", "finish_manifest", "write_manifest",
    "package_version", "redact_text",
]

MANIFEST_DIR = "_runs"

log = logging.getLogger("keylib")


def package_version() -> str:
    try:
        return metadata.version("keylib")
    except metadata.PackageNotFoundError:  # shipped as code on a cluster
        return "unknown"


def start_manifest(*, run_id: str, input_uri: str, output: str | Path, config: Mapping[str, Any],
                   conf_path: str | None, spark_master: str, spark_app_id: str,
                   feature_version: str) -> dict[str, Any]:
    """The manifest of a run that starts now (no counts yet); ``feature_version``: the
    features the run extracts (the served model's)."""
    return {
        "run_id": run_id,
        "job": "nightly",
        "started": datetime.now(timezone.utc).isoformat(),
        "input": redact_text(input_uri),
        "output": redact_text(resolve_output(output)),
        "config_file": conf_path,
        "config_hash": config_hash(dict(config)),
        "versions": {
            "package": package_version(),
            "feature": feature_version,
            "model": None,  # filled in by the inference stage
        },
        "spark": {"master": spark_master, "app_id": spark_app_id},
        "host": socket.gethostname(),
    }


def write_manifest(output: str | Path, manifest: Mapping[str, Any], *, s3_settings: Mapping | None = None) -> str:
    """Write ``OUT/_runs/<run_id>.json`` whole or not at all (local: temp file, fsync,
    rename; S3: one PUT)."""
    target = f"{table_uri(output, MANIFEST_DIR)}/{manifest['run_id']}.json"
    return write_text(target, json.dumps(manifest, indent=2, sort_keys=True, default=str), s3_settings=s3_settings)


def stage_record(summary: RunSummary) -> dict[str, Any]:
    """A stage's counts for the manifest's ``stages``."""
    return {
        "listed": summary.listed, "new": summary.new, "skipped": summary.skipped,
        "failed": summary.failed, "seconds": round(summary.seconds, 3),
        "committed": summary.extra.get("committed"),
        "statuses": {str(k): int(v) for k, v in summary.extra.get("statuses", {}).items()},
    }


def finish_manifest(manifest: dict, summary: RunSummary, stages: dict, output: str | Path, *,
                    s3_settings: Mapping | None = None) -> str:
    """Add the end time, counts, stages and failures, and write the manifest (last)."""
    ended = datetime.now(timezone.utc)
    manifest.update(
        ended=ended.isoformat(),
        seconds=round(summary.seconds, 3),
        counts={"listed": summary.listed, "new": summary.new, "skipped": summary.skipped,
                "failed": summary.failed},
        stages=stages,
        failures=[{"track_id": t, "status": s, "error": redact_text(e)} for t, s, e in summary.failures],
    )
    return write_manifest(output, manifest, s3_settings=s3_settings)
