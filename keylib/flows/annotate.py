"""The annotate flow: extract, infer, and (manifest with keys) the MIREX report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..inference import KEYS_TABLE
from ..tables import table_uri
from .evaluate import run_evaluate
from .extract import CHROMA_TABLE, run_extract
from .infer import run_infer

__all__ = ["run_annotate", "summarize_keys", "manifest_has_keys"]


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


def manifest_has_keys(input_uri: str) -> bool:
    """True when ``input_uri`` is a local CSV manifest with a non-empty ``key`` column."""
    if not str(input_uri).lower().endswith(".csv") or str(input_uri).startswith("s3://"):
        return False
    try:
        table = pd.read_csv(input_uri, dtype=str, keep_default_na=False)
    except Exception:
        return False
    return "key" in table.columns and bool((table["key"].str.strip() != "").any())


def run_annotate(
    spark,
    *,
    input_uri: str,
    output: str | Path,
    config: Mapping[str, Any],
    force: bool = False,
    model_path: str | None = None,
) -> dict[str, Any]:
    """Extraction, then inference, then (manifest with a ``key`` column) the MIREX report.

    Both steps are incremental: unchanged tracks are neither re-extracted nor re-predicted.

    Returns
    -------
    dict
        ``extract`` and ``infer`` (:class:`~keylib.runner.RunSummary`), ``report`` (path of
        ``report.html`` or None), ``evaluation`` (:class:`~keylib.evaluate.Evaluation` or None).
    """
    extract = run_extract(spark, input_uri=input_uri, output=output, config=config, force=force)
    infer = run_infer(spark, features=table_uri(output, CHROMA_TABLE), output=output, config=config,
                      force=force, model_path=model_path)
    result = {"extract": extract, "infer": infer, "report": None, "evaluation": None}
    if config.get("report", {}).get("enabled", True) and manifest_has_keys(input_uri):
        evaluation, report = run_evaluate(spark, keys=table_uri(output, KEYS_TABLE), truth=input_uri,
                                          output=table_uri(output, "report"), s3_settings=config["s3"])
        result.update(report=report, evaluation=evaluation)
    return result
