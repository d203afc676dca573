"""What runs in Spark's Python workers: the ``mapInPandas`` steps over catalogue and chroma rows.

Each step ships only pure functions (:func:`keylib.extract.extract_track`,
:func:`keylib.inference.predict_frame`) to the executors; flows (:mod:`keylib.flows`)
build the DataFrames and commit them.
"""

from __future__ import annotations

import math
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from .extract import CHROMA_COLUMNS, ExtractSettings, extract_track
from .inference import CHROMA_INPUT_COLUMNS, keys_schema, predict_frame
from .spark import CHROMA_SCHEMA

__all__ = ["extract_dataframe", "infer_dataframe"]


def extract_dataframe(
    spark: SparkSession,
    tracks: pd.DataFrame,
    *,
    settings: ExtractSettings,
    tracks_per_partition: int,
) -> DataFrame:
    """Distributed :func:`keylib.extract.extract_track` over catalogue rows.

    The catalogue (paths only) goes to the executors; each one reads, decodes and
    computes the chroma of its own tracks.
    """
    n_partitions = max(1, math.ceil(len(tracks) / tracks_per_partition))
    listing_schema = T.StructType([
        T.StructField("track_id", T.StringType()),
        T.StructField("uri", T.StringType()),
        T.StructField("fingerprint", T.StringType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("truth_key", T.StringType()),
        T.StructField("source", T.StringType()),
    ])
    records = [
        (r.track_id, r.uri, r.fingerprint, None if pd.isna(r.size_bytes) else int(r.size_bytes),
         r.truth_key, r.source)
        for r in tracks.itertuples(index=False)
    ]
    listing = spark.createDataFrame(records, listing_schema).repartition(n_partitions)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [
                extract_track({k: (None if pd.isna(v) else v) for k, v in rec.items()}, settings=settings)
                for rec in batch.to_dict("records")
            ]
            yield pd.DataFrame(rows, columns=CHROMA_COLUMNS)

    return listing.mapInPandas(run, CHROMA_SCHEMA)


def _task_cpus(default: int) -> int:
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else default
    except Exception:
        return default


def infer_dataframe(chroma, *, model_path: str | None = None, task_cpus: int = 1):
    """Distributed :func:`predict_frame` over a chroma DataFrame.

    An iterator-of-pandas UDF (``mapInPandas``): each Python worker sets TensorFlow's
    threads to its task's cores (``spark.task.cpus``), loads the model once
    (:func:`keylib.model.load_model` caches it per process) and predicts whole Arrow
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
    path = model_path or None

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from .model import load_model

        # TensorFlow's thread pools follow the task's cores (spark.task.cpus).
        model = load_model(path, threads=_task_cpus(task_cpus))
        for batch in batches:
            yield predict_frame(batch, model)

    return chroma.select(*CHROMA_INPUT_COLUMNS).mapInPandas(run, keys_schema())
