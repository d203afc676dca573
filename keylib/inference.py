"""Key inference over chroma rows: the keys/ row, its schema, and the distributed UDF.

The pure part (:func:`keys_fields`, :func:`predict_frame`) is pandas + numpy and is shared
by the Spark job, the ``keylib analyze`` command and the tests; the Spark part
(:func:`infer_dataframe`, :func:`run_infer`) imports pyspark lazily so that the console
command starts without it.

``probs`` order
    The 24 probabilities of every row follow :mod:`keylib.keys` index order:
    0..11 = C major, Db major, D major, Eb major, E major, F major, F# major, G major,
    Ab major, A major, Bb major, B major; 12..23 = C minor, C# minor, D minor, Eb minor,
    E minor, F minor, F# minor, G minor, G# minor, A minor, Bb minor, B minor
    (``keylib.keys.KEY_NAMES[i]`` names entry ``i``).

Statuses
    ``ok``: a key was predicted. ``silent``: the audio is silent, no key. Any other
    extraction status (``decode_error``, ``missing``, ...) is copied with its error and no
    key. ``feature_mismatch``: the chroma was made by another feature version than the
    model expects (re-extract). ``model_error``: prediction itself failed for the batch.

Tracks of any length (each at its real length; never crop below 600 s)
    Each track's whole (12, n_frames) tensor goes to the served model
    (:meth:`keylib.serving.ServedModel.predict_probs`, ONNX Runtime, no TensorFlow):
    frames are averaged into 1-s steps and the network averages its evidence over exactly
    the track's steps (tracks of equal length share one call; nothing is tiled), then the
    card's calibration applies. Only extraction crops: it analyses the central
    ``audio.max_duration_s`` (600 s = 3,001 frames), which bounds a row's size. A 1-frame
    track works.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import STATUS_OK, STATUS_SILENT
from .keys import KEY_NAMES, MODES, N_KEYS, camelot, open_key

__all__ = [
    "KEYS_COLUMNS",
    "KEYS_TABLE",
    "STATUS_FEATURE_MISMATCH",
    "STATUS_MODEL_ERROR",
    "keys_fields",
    "empty_fields",
    "predict_frame",
    "keys_schema",
    "infer_dataframe",
    "run_infer",
]

KEYS_TABLE = "keys"
STATUS_FEATURE_MISMATCH = "feature_mismatch"
STATUS_MODEL_ERROR = "model_error"

# The keys/ Parquet contract (DESIGN.md) plus three bookkeeping columns:
# identity and extracted_at of the chroma row the prediction was made from (so that an
# incremental run knows which predictions are stale) and inferred_at (newest row wins).
KEYS_COLUMNS = [
    "track_id", "uri", "key", "tonic", "mode", "confidence", "margin", "probs", "camelot",
    "open_key", "model_version", "feature_version", "status", "error",
    "identity", "extracted_at", "inferred_at",
]

# Columns of the chroma/ table that inference reads.
CHROMA_INPUT_COLUMNS = [
    "track_id", "uri", "identity", "n_frames", "feature_version", "chroma", "status", "error",
    "extracted_at",
]

log = logging.getLogger("keylib")

_CAMELOT = tuple(camelot(i) for i in range(N_KEYS))
_OPEN_KEY = tuple(open_key(i) for i in range(N_KEYS))


def keys_fields(probs: np.ndarray) -> dict[str, Any]:
    """The key columns of one prediction.

    Parameters
    ----------
    probs : np.ndarray, shape (24,)
        Probabilities in :mod:`keylib.keys` index order.

    Returns
    -------
    dict
        ``key`` (mir_eval spelling), ``tonic`` (0..11, C = 0), ``mode``, ``confidence``
        (top probability), ``margin`` (top minus second), ``probs`` (list of 24 floats),
        ``camelot``, ``open_key``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (N_KEYS,):
        raise ValueError(f"probs must have shape (24,), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf")
    order = np.argsort(-p, kind="stable")
    best, second = int(order[0]), int(order[1])
    return {
        "key": KEY_NAMES[best],
        "tonic": best % 12,
        "mode": MODES[best // 12],
        "confidence": float(p[best]),
        "margin": float(p[best] - p[second]),
        "probs": [float(x) for x in p],
        "camelot": _CAMELOT[best],
        "open_key": _OPEN_KEY[best],
    }


def empty_fields() -> dict[str, Any]:
    """The key columns of a row without a key (failed or silent track)."""
    return dict.fromkeys(("key", "tonic", "mode", "confidence", "margin", "probs", "camelot", "open_key"))


def predict_frame(chroma_rows: pd.DataFrame, model, *, inferred_at: datetime | None = None) -> pd.DataFrame:
    """Keys rows for a batch of chroma rows.

    Parameters
    ----------
    chroma_rows : pd.DataFrame
        Rows of the chroma/ table with at least ``track_id``, ``uri``, ``n_frames``,
        ``feature_version``, ``chroma`` (flat, 12 x n_frames row-major), ``status`` and
        ``error``; ``identity`` and ``extracted_at`` are carried when present.
    model : keylib.serving.ServedModel
        Anything with ``version``, ``feature_version`` and ``predict_probs(list of
        (12, n) arrays) -> (n, 24)``.
    inferred_at : datetime, optional
        Timestamp written to every row (default: now, UTC).

    Returns
    -------
    pd.DataFrame
        Columns :data:`KEYS_COLUMNS`, one row per input row, same order. A row keeps its
        extraction status (no key) unless it was ``ok``; a silent track has status
        ``silent`` and no key. Never raises for a bad row.
    """
    inferred_at = inferred_at or datetime.now(timezone.utc)
    out: list[dict[str, Any]] = []
    todo: list[int] = []
    tensors: list[np.ndarray] = []
    for record in chroma_rows.to_dict("records"):
        row = {
            "track_id": record["track_id"],
            "uri": record.get("uri"),
            **empty_fields(),
            "model_version": model.version,
            "feature_version": record.get("feature_version"),
            "status": record.get("status") or "error",
            "error": _none_if_na(record.get("error")),
            "identity": _none_if_na(record.get("identity")),
            "extracted_at": _none_if_na(record.get("extracted_at")),
            "inferred_at": inferred_at,
        }
        out.append(row)
        if row["status"] != STATUS_OK:
            continue  # silent or failed extraction: the row flows through without a key
        if record.get("feature_version") != model.feature_version:
            row["status"] = STATUS_FEATURE_MISMATCH
            row["error"] = (
                f"chroma has feature version {record.get('feature_version')!r} but model "
                f"{model.version} expects {model.feature_version!r}: re-extract this track"
            )
            continue
        try:
            tensors.append(_tensor(record))
            todo.append(len(out) - 1)
        except ValueError as exc:
            row["status"], row["error"] = "error", str(exc)
    if tensors:
        try:
            probs = np.asarray(model.predict_probs(tensors), dtype=np.float64)
            if probs.shape != (len(tensors), N_KEYS):
                raise ValueError(f"model returned shape {probs.shape}, expected ({len(tensors)}, 24)")
        except Exception as exc:  # one bad batch must not kill the job: rows say why
            for i in todo:
                out[i]["status"] = STATUS_MODEL_ERROR
                out[i]["error"] = f"{type(exc).__name__}: {exc}"
        else:
            for i, p in zip(todo, probs):
                try:
                    out[i].update(keys_fields(p))
                except ValueError as exc:
                    out[i]["status"], out[i]["error"] = STATUS_MODEL_ERROR, str(exc)
    return pd.DataFrame(out, columns=KEYS_COLUMNS)


def _tensor(record: Mapping[str, Any]) -> np.ndarray:
    """The (12, n_frames) float32 tensor of a chroma row, or ValueError."""
    flat = record.get("chroma")
    if flat is None or (isinstance(flat, float) and flat != flat):
        raise ValueError("chroma row has status ok but no tensor")
    flat = np.asarray(flat, dtype=np.float32)
    n_frames = record.get("n_frames")
    if n_frames is None or n_frames != n_frames or flat.size != 12 * int(n_frames) or flat.size == 0:
        raise ValueError(f"chroma tensor of {flat.size} values does not match 12 x n_frames ({n_frames})")
    return flat.reshape(12, int(n_frames))


def _none_if_na(value):
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


# --------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------


def keys_schema():
    """The Spark schema of the keys/ table (columns :data:`KEYS_COLUMNS`)."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("track_id", T.StringType(), False),
        T.StructField("uri", T.StringType(), True),
        T.StructField("key", T.StringType(), True),
        T.StructField("tonic", T.IntegerType(), True),
        T.StructField("mode", T.StringType(), True),
        T.StructField("confidence", T.DoubleType(), True),
        T.StructField("margin", T.DoubleType(), True),
        T.StructField("probs", T.ArrayType(T.FloatType(), containsNull=False), True),
        T.StructField("camelot", T.StringType(), True),
        T.StructField("open_key", T.StringType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("feature_version", T.StringType(), True),
        T.StructField("status", T.StringType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("identity", T.StringType(), True),
        T.StructField("extracted_at", T.TimestampType(), True),
        T.StructField("inferred_at", T.TimestampType(), True),
    ])


def _task_cpus(default: int) -> int:
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else default
    except Exception:
        return default


def infer_dataframe(chroma, *, model_path: str | None = None, task_cpus: int = 1):
    """Distributed :func:`predict_frame` over a chroma DataFrame.

    An iterator-of-pandas UDF (``mapInPandas``): each Python worker loads the served model
    once with ONNX Runtime threads = its task's cores (``spark.task.cpus``;
    :func:`keylib.serving.load_model` caches it per process) and predicts whole Arrow
    batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, set small for tensor
    rows by the configuration's ``spark.arrow_batch_rows``) in one call each. Variable
    track lengths need no fixed tensor shape, unlike ``predict_batch_udf``.

    Parameters
    ----------
    chroma : pyspark.sql.DataFrame
        Rows of the chroma/ table (at least :data:`CHROMA_INPUT_COLUMNS`).
    model_path : str, optional
        A model (``.onnx``, or its ``.keras``/``.json`` sibling); ``None`` = the shipped model.
    task_cpus : int
        Fallback thread count when the task context does not say.

    Returns
    -------
    pyspark.sql.DataFrame
        Schema :func:`keys_schema`.
    """
    path = model_path or None

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from .serving import load_model

        # ONNX Runtime's threads follow the task's cores (spark.task.cpus).
        model = load_model(path, threads=_task_cpus(task_cpus))
        for batch in batches:
            yield predict_frame(batch, model)

    return chroma.select(*CHROMA_INPUT_COLUMNS).mapInPandas(run, keys_schema())


def stale_tracks(chroma_pdf: pd.DataFrame, keys_pdf: pd.DataFrame | None, *, model_version: str,
                 force: bool = False) -> pd.Series:
    """Boolean mask over ``chroma_pdf`` rows whose keys row is missing or stale.

    A keys row is current when it was made by ``model_version`` from the same chroma row
    (same ``extracted_at``, i.e. the same extraction run of that track).
    """
    if force or keys_pdf is None or keys_pdf.empty:
        return pd.Series(True, index=chroma_pdf.index)
    prev = keys_pdf.drop_duplicates("track_id", keep="last").set_index("track_id")
    same_model = chroma_pdf["track_id"].map(prev["model_version"]) == model_version
    prev_extracted = pd.to_datetime(chroma_pdf["track_id"].map(prev["extracted_at"]), utc=True)
    same_chroma = prev_extracted == pd.to_datetime(chroma_pdf["extracted_at"], utc=True)
    return ~(same_model & same_chroma)


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
    :func:`keylib.spark.commit_run`.

    Returns
    -------
    RunSummary
        ``listed`` = current chroma rows, ``new`` = rows predicted this run, ``failed`` =
        rows without a key other than silent ones; ``extra``: ``run_id``, ``committed``,
        ``statuses``, ``model_version``.
    """
    from pyspark.sql import functions as F

    from .errors import InputError
    from .runner import RunSummary
    from .serving import model_info
    from .spark import clear_staging, commit_run, committed_runs, new_run_id, read_current, run_statuses

    summary = RunSummary(job="infer")
    run_id = run_id or new_run_id()
    run_date = run_date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    model_path = model_path or (config.get("model", {}).get("path") or None)
    runs = committed_runs(features)
    if not runs:
        raise InputError(f"no committed chroma runs under {features} (run extract first)")
    # One committed run holds exactly the current rows: read it as is, with no window.
    chroma = spark.read.parquet(str(runs[0])) if len(runs) == 1 else read_current(spark, features)
    model = model_info(model_path)  # checks the files and card on the driver; the network loads on executors
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
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for run in runs for f in Path(run).glob("*.parquet"))


def read_keys(spark, output: str | Path):
    """The current keys rows (newest per track over all runs) under ``output/keys`` or
    ``output`` itself when it is the keys table; ``None`` when there is none."""
    from .spark import read_current

    root = Path(output)
    if (root / KEYS_TABLE).is_dir():
        root = root / KEYS_TABLE
    return read_current(spark, root, order_by="inferred_at")


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
    run_date: str | None = None,
) -> dict[str, Any]:
    """Extraction, then inference, then (manifest with a ``key`` column) the MIREX report.

    Both steps are incremental: unchanged tracks are neither re-extracted nor re-predicted.

    Returns
    -------
    dict
        ``extract`` and ``infer`` (:class:`~keylib.runner.RunSummary`), ``report`` (path of
        ``report.html`` or None), ``evaluation`` (:class:`~keylib.evaluate.Evaluation` or None).
    """
    from .pipeline import CHROMA_TABLE, run_extract

    output = Path(output)
    extract = run_extract(spark, input_uri=input_uri, output=output, config=config, force=force)
    infer = run_infer(spark, features=output / CHROMA_TABLE, output=output, config=config,
                      force=force, model_path=model_path, run_date=run_date)
    result = {"extract": extract, "infer": infer, "report": None, "evaluation": None}
    if config.get("report", {}).get("enabled", True) and manifest_has_keys(input_uri):
        from .evaluate import run_evaluate

        evaluation, report = run_evaluate(spark, keys=output / KEYS_TABLE, truth=input_uri,
                                          output=output / "report")
        result.update(report=report, evaluation=evaluation)
    return result
