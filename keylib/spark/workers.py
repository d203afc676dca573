"""What runs in Spark's Python workers: the ``mapInPandas`` steps over catalogue and chroma rows.

Each step ships only pure functions (:func:`keylib.track.extract_track`,
:func:`keylib.inference.predict_frame`) to the executors; flows (:mod:`keylib.spark.flows`)
build the DataFrames and commit them.

- :func:`extract_dataframe`: catalogue rows -> chroma rows (the ``extract`` job)
- :func:`infer_dataframe`: chroma rows -> keys rows (the ``infer`` job)
- :func:`annotate_dataframe`: catalogue rows -> chroma and keys fields in one pass
  (``annotate``, ``nightly``); :func:`chroma_projection` and :func:`keys_projection`
  give the two tables' rows from it
"""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import TrackError
from ..inference import CHROMA_INPUT_COLUMNS, KEYS_COLUMNS, predict_frame
from ..sandbox import TrackSandbox
from ..track import CHROMA_COLUMNS, ExtractSettings, extract_track, failed_row
from .schemas import CHROMA_SCHEMA, keys_schema

__all__ = [
    "ANNOTATED_SCHEMA", "worker_model", "extract_dataframe", "infer_dataframe", "annotate_dataframe",
    "chroma_projection", "keys_projection",
]

# Keys columns that a chroma row does not already hold; a keys row's own status and error
# (feature_mismatch, model_error) travel as key_status / key_error beside the chroma row's.
_KEY_ONLY = [c for c in KEYS_COLUMNS if c not in CHROMA_COLUMNS]
_KEY_RENAMED = {"status": "key_status", "error": "key_error"}

# One pass's rows: the chroma row, then the keys fields.
ANNOTATED_SCHEMA = T.StructType(
    list(CHROMA_SCHEMA.fields)
    + [f for f in keys_schema().fields if f.name in _KEY_ONLY]
    + [T.StructField(new, keys_schema()[old].dataType, keys_schema()[old].nullable)
       for old, new in _KEY_RENAMED.items()]
)


def worker_model(model_path: str | None, task_cpus: int):
    """The model of this Python worker, loaded once per process.

    :func:`keylib.serving.load_model` caches it per process and path; ONNX Runtime's
    threads follow the task's cores (``spark.task.cpus``, else ``task_cpus``).
    """
    from ..serving import load_model

    return load_model(model_path or None, threads=_task_cpus(task_cpus))


def _task_cpus(default: int) -> int:
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else default
    except Exception:
        return default


def _listing_dataframe(spark: SparkSession, tracks: pd.DataFrame, *, tracks_per_partition: int) -> DataFrame:
    """Catalogue rows (paths only) as a DataFrame spread over small partitions: at most
    ``tracks_per_partition`` tracks each, and at least two tasks per core while there are
    tracks for them (40 whole songs in 5 tasks of 8 left the last round to one core)."""
    cores = max(1, int(spark.sparkContext.defaultParallelism))
    n_partitions = max(1, math.ceil(len(tracks) / tracks_per_partition), min(len(tracks), 2 * cores))
    listing_schema = T.StructType([
        T.StructField("track_id", T.StringType()),
        T.StructField("uri", T.StringType()),
        T.StructField("fingerprint", T.StringType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("truth_key", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("previous_status", T.StringType()),
        T.StructField("previous_attempts", T.IntegerType()),
    ])
    # From pandas through Arrow: the JVM reads the rows itself, no Python worker unpickles
    # them (a list of tuples would cost a Python job before the first track is decoded).
    def strings(column: str) -> pd.Series:  # None, not NaN, where a value is missing
        return tracks[column].astype(object).where(tracks[column].notna(), None)

    def column(name: str) -> pd.Series:  # previous_*: only tracks with a row of the same file have them
        return tracks[name] if name in tracks.columns else pd.Series(None, index=tracks.index, dtype=object)

    frame = pd.DataFrame({
        **{c: strings(c) for c in ("track_id", "uri", "fingerprint", "truth_key", "source")},
        "size_bytes": pd.to_numeric(tracks["size_bytes"], errors="coerce").astype("Int64"),
        "previous_status": column("previous_status").astype(object).where(column("previous_status").notna(), None),
        "previous_attempts": pd.to_numeric(column("previous_attempts"), errors="coerce").astype("Int32"),
    })[listing_schema.names]
    return spark.createDataFrame(frame, listing_schema).repartition(n_partitions)


def _chroma_rows(batch: pd.DataFrame, settings: ExtractSettings) -> pd.DataFrame:
    """Chroma rows (:data:`~keylib.track.CHROMA_COLUMNS`) of a batch of catalogue rows.

    Each track is read and decoded in this worker's sandbox (:func:`worker_sandbox`): a
    track that crashes its process, overruns ``audio.track_timeout_s`` or outgrows
    ``audio.max_track_memory_mb`` gets a ``crashed`` or ``timeout`` row, and the rest of
    the task goes on.
    """
    sandbox = worker_sandbox(settings)
    rows = []
    for rec in batch.to_dict("records"):
        track = {k: (None if _missing(v) else v) for k, v in rec.items()}
        try:
            rows.append(sandbox.run(track, name=str(track["track_id"])))
        except TrackError as exc:
            rows.append(failed_row(track, exc, settings))
    return pd.DataFrame(rows, columns=CHROMA_COLUMNS)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


_SANDBOX: list[tuple[ExtractSettings, TrackSandbox]] = []


def worker_sandbox(settings: ExtractSettings) -> TrackSandbox:
    """The sandbox of this Python worker for ``settings``, started once per process (Spark
    reuses Python workers across tasks, so one child decodes for many tasks)."""
    if _SANDBOX and _SANDBOX[0][0] == settings:
        return _SANDBOX[0][1]
    while _SANDBOX:
        _SANDBOX.pop()[1].close()
    sandbox = TrackSandbox(partial(extract_track, settings=settings), timeout_s=settings.track_timeout_s,
                           max_memory_mb=settings.max_track_memory_mb)
    _SANDBOX.append((settings, sandbox))
    return sandbox


def extract_dataframe(
    spark: SparkSession,
    tracks: pd.DataFrame,
    *,
    settings: ExtractSettings,
    tracks_per_partition: int,
) -> DataFrame:
    """Distributed :func:`keylib.track.extract_track` over catalogue rows.

    The catalogue (paths only) goes to the executors; each one reads, decodes and
    computes the chroma of its own tracks.
    """
    listing = _listing_dataframe(spark, tracks, tracks_per_partition=tracks_per_partition)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield _chroma_rows(batch, settings)

    return listing.mapInPandas(run, CHROMA_SCHEMA)


def annotate_dataframe(
    spark: SparkSession,
    tracks: pd.DataFrame,
    *,
    settings: ExtractSettings,
    tracks_per_partition: int,
    model_path: str | None = None,
    task_cpus: int = 1,
) -> DataFrame:
    """Audio to keys in one pass: decode, chroma and key of each track in the same task.

    Each batch of catalogue rows becomes chroma rows (:func:`keylib.track.extract_track`)
    and, from the tensors still in memory, keys fields (:func:`keylib.inference.predict_frame`,
    the worker's model loaded once by :func:`worker_model`): the chroma is never read back.

    Returns
    -------
    pyspark.sql.DataFrame
        Schema :data:`ANNOTATED_SCHEMA`: the chroma row, then the keys fields, the keys
        row's ``status`` and ``error`` as ``key_status`` and ``key_error``. The rows of
        the chroma and keys tables are :func:`chroma_projection` and :func:`keys_projection`.
    """
    listing = _listing_dataframe(spark, tracks, tracks_per_partition=tracks_per_partition)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        worker_sandbox(settings).start()  # forked before the model's thread pools exist
        model = worker_model(model_path, task_cpus)
        for batch in batches:
            chroma = _chroma_rows(batch, settings)
            keys = predict_frame(chroma, model).rename(columns=_KEY_RENAMED)
            yield pd.concat([chroma, keys[_KEY_ONLY + list(_KEY_RENAMED.values())]], axis=1)

    return listing.mapInPandas(run, ANNOTATED_SCHEMA)


def chroma_projection(annotated: DataFrame) -> DataFrame:
    """The chroma table's rows (:data:`~keylib.spark.schemas.CHROMA_SCHEMA`) of one-pass rows."""
    return annotated.select(*CHROMA_COLUMNS)


def keys_projection(annotated: DataFrame) -> DataFrame:
    """The keys table's rows (:func:`~keylib.inference.keys_schema`) of one-pass rows."""
    return annotated.select(*(F.col(_KEY_RENAMED.get(c, c)).alias(c) for c in KEYS_COLUMNS))


def infer_dataframe(chroma, *, model_path: str | None = None, task_cpus: int = 1):
    """Distributed :func:`predict_frame` over a chroma DataFrame.

    An iterator-of-pandas UDF (``mapInPandas``): each Python worker loads the model
    once (:func:`worker_model`, threads following ``spark.task.cpus``) and predicts whole Arrow
    batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, set small for tensor
    rows by the configuration's ``spark.arrow_batch_rows``) in one call each. Variable
    track lengths need no fixed tensor shape, unlike ``predict_batch_udf``.

    Parameters
    ----------
    chroma : pyspark.sql.DataFrame
        Rows of the chroma/ table (at least :data:`CHROMA_INPUT_COLUMNS`).
    model_path : str, optional
        A ``.keras`` model file; ``None`` = the shipped model.
    task_cpus : int
        Fallback thread count when the task context does not say.

    Returns
    -------
    pyspark.sql.DataFrame
        Schema :func:`keys_schema`.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = worker_model(model_path, task_cpus)
        for batch in batches:
            yield predict_frame(batch, model)

    return chroma.select(*CHROMA_INPUT_COLUMNS).mapInPandas(run, keys_schema())
