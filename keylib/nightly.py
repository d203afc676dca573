"""The nightly incremental run and its run manifest.

``./submit.sh nightly --input X --output OUT [--conf conf/nightly.toml]``:

1. list the catalogue on the driver (S3: paginated, ETag + size + last-modified);
2. annotate only what is new or changed since the committed results (identity:
   ETag + size on S3, size + mtime or content hash locally), or written by another
   feature / model version, or failed for a reason worth retrying (missing, read_error);
3. append the new rows as one atomically committed run per table (``OUT/chroma``, and
   ``OUT/keys`` when the inference stage is installed); earlier runs are never touched;
4. write the run manifest ``OUT/_runs/<run_id>.json`` last (atomically).

What is "done" is read from the committed tables themselves, not from manifests: a run
killed after committing its rows but before its manifest loses nothing, and a run killed
before its commit left nothing visible (its staging folder is removed by the next run).
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from pyspark.sql import SparkSession

from . import features
from .config import config_hash
from .errors import InputError
from .io import atomic_write_text
from .runner import EXIT_INPUT, RunSummary

__all__ = ["MANIFEST_DIR", "run_nightly", "write_manifest", "read_manifests", "package_version"]

MANIFEST_DIR = "_runs"

log = logging.getLogger("keylib")


def package_version() -> str:
    try:
        return metadata.version("keylib")
    except metadata.PackageNotFoundError:  # shipped as code on a cluster
        return "unknown"


def _redact(text: Any) -> Any:
    from .s3 import redact

    return None if text is None else redact(str(text))


def write_manifest(output: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``OUT/_runs/<run_id>.json`` atomically (temp file, fsync, rename)."""
    target = Path(output) / MANIFEST_DIR / f"{manifest['run_id']}.json"
    return atomic_write_text(target, json.dumps(manifest, indent=2, sort_keys=True, default=str))


def read_manifests(output: str | Path) -> list[dict]:
    """All run manifests of an output root, oldest first."""
    folder = Path(output) / MANIFEST_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def run_nightly(
    spark: SparkSession,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    conf_path: str | None = None,
    run_id: str | None = None,
    with_keys: bool = True,
) -> RunSummary:
    """One nightly run: incremental extraction (and inference), then the manifest.

    ``with_keys=False`` stops after extraction (``--extract-only``: features for training).

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
    """
    from .inference import run_infer
    from .pipeline import run_extract
    from .spark import new_run_id

    run_id = run_id or new_run_id()
    started = datetime.now(timezone.utc)
    summary = RunSummary(job="nightly")
    summary.extra["run_id"] = run_id
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "job": "nightly",
        "started": started.isoformat(),
        "input": _redact(input_uri),
        "output": str(Path(output).resolve()),
        "config_file": conf_path,
        "config_hash": config_hash(dict(config)),
        "versions": {
            "package": package_version(),
            "feature": features.FEATURE_VERSION,
            "model": None,  # filled in by the inference stage
        },
        "spark": {"master": spark.sparkContext.master, "app_id": spark.sparkContext.applicationId},
        "host": socket.gethostname(),
    }
    stages: dict[str, Any] = {}
    max_failed_share = config["nightly"]["max_failed_share"]
    try:
        extract = run_extract(spark, input_uri=input_uri, output=output, config=config, run_id=run_id)
        stages["extract"] = _stage(extract)
        final = extract
        if with_keys:
            # Infers every current chroma row without a current keys row of this model:
            # tonight's new tracks, and any left without keys by a run killed in between.
            keys = run_infer(spark, features=Path(output) / "chroma", output=output, config=config, run_id=run_id)
            stages["infer"] = _stage(keys)
            manifest["versions"]["model"] = keys.extra.get("model_version")
            final = keys
        summary.listed = extract.listed
        # What the night annotated: tracks new or changed at the last stage (a track
        # whose chroma was fresh but whose key row was missing counts once, as new).
        summary.new = max(extract.new, final.new)
        summary.skipped = summary.listed - summary.new
        summary.failed = max(extract.failed, final.failed)
        # Keys rows carry the extraction failures too: the last stage lists every failure once.
        summary.failures = final.failures[:50]
        code = summary.exit_code(max_failed_share)
        status = "ok" if code == 0 else "too_many_failures"
    except InputError as exc:
        manifest.update(status="input_error", error=_redact(exc), exit_code=EXIT_INPUT)
        _finish(manifest, summary, stages, output)
        raise
    manifest.update(status=status, error=None, exit_code=code)
    summary.extra["exit_code"] = code
    summary.extra["manifest"] = str(_finish(manifest, summary, stages, output))
    return summary


def _stage(summary: RunSummary) -> dict[str, Any]:
    return {
        "listed": summary.listed, "new": summary.new, "skipped": summary.skipped,
        "failed": summary.failed, "seconds": round(summary.seconds, 3),
        "committed": summary.extra.get("committed"),
        "statuses": {str(k): int(v) for k, v in summary.extra.get("statuses", {}).items()},
    }


def _finish(manifest: dict, summary: RunSummary, stages: dict, output: str | Path) -> Path:
    ended = datetime.now(timezone.utc)
    manifest.update(
        ended=ended.isoformat(),
        seconds=round(summary.seconds, 3),
        counts={"listed": summary.listed, "new": summary.new, "skipped": summary.skipped,
                "failed": summary.failed},
        stages=stages,
        failures=[{"track_id": t, "status": s, "error": _redact(e)} for t, s, e in summary.failures],
    )
    return write_manifest(output, manifest)
