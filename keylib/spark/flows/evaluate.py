"""The evaluate flow: current keys rows + a truth manifest -> the MIREX report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...errors import InputError
from ...evaluate import Evaluation, evaluate_keys, read_truth
from ...report import write_report
from ...storage.files import upload_folder
from ...storage.io import is_remote
from .infer import read_keys

__all__ = ["run_evaluate"]


def run_evaluate(spark, *, keys: str, truth: str | Path, output: str | Path,
                 title: str = "keylib MIREX key evaluation", s3_settings=None) -> tuple[Evaluation, Path | str]:
    """Score the current keys rows under ``keys`` (``OUT`` or ``OUT/keys``, local or
    ``s3://``) against a truth manifest and write the report into ``output`` (a folder or
    an ``s3://`` prefix).

    Returns
    -------
    (Evaluation, Path)
        The evaluation and the path of ``report.html``.

    Raises
    ------
    InputError
        when there is no keys table or the manifest cannot be read.
    """
    truth_pdf = read_truth(truth)
    frame = read_keys(spark, keys, s3_settings=s3_settings)
    if frame is None:
        raise InputError(f"no committed keys runs under {keys} (run infer or annotate first)")
    # The columns beyond the key (tonal, tuning, key changes) feed the report's own section.
    wanted = ["track_id", "uri", "key", "confidence", "status", "error", "model_version",
              "tonal", "tuning_cents", "segments"]
    keys_pdf = frame.select(*[c for c in wanted if c in frame.columns]).toPandas()
    result = evaluate_keys(keys_pdf, truth_pdf)
    versions = sorted(keys_pdf["model_version"].dropna().unique().tolist())
    metadata = {"keys": str(keys), "truth": str(truth), "model_version": ", ".join(versions) or None}
    if not is_remote(output):
        return result, write_report(result, output, title=title, metadata=metadata)
    with tempfile.TemporaryDirectory(prefix="keylib-report-") as folder:
        report = write_report(result, folder, title=title, metadata=metadata)
        upload_folder(folder, str(output), s3_settings=s3_settings)
    return result, f"{str(output).rstrip('/')}/{Path(report).name}"
