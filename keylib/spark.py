"""Spark glue: the session from configuration and the chroma table's Spark schema.

Committed runs and current rows are :mod:`keylib.tables`; what runs in the Python
workers is :mod:`keylib.workers`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from .extract import CHROMA_COLUMNS

__all__ = [
    "CHROMA_SCHEMA",
    "get_session",
]

CHROMA_SCHEMA = T.StructType([
    T.StructField("track_id", T.StringType(), False),
    T.StructField("uri", T.StringType(), False),
    T.StructField("fingerprint", T.StringType(), True),
    T.StructField("identity", T.StringType(), True),
    T.StructField("size_bytes", T.LongType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("offset_s", T.DoubleType(), True),
    T.StructField("sample_rate", T.IntegerType(), True),
    T.StructField("source_sample_rate", T.IntegerType(), True),
    T.StructField("hop", T.IntegerType(), True),
    T.StructField("n_frames", T.IntegerType(), True),
    T.StructField("feature_version", T.StringType(), True),
    T.StructField("chroma", T.ArrayType(T.FloatType(), containsNull=False), True),
    T.StructField("tuning_cents", T.DoubleType(), True),
    T.StructField("status", T.StringType(), False),
    T.StructField("error", T.StringType(), True),
    T.StructField("truth_key", T.StringType(), True),
    T.StructField("source", T.StringType(), True),
    T.StructField("extracted_at", T.TimestampType(), True),
])
assert [f.name for f in CHROMA_SCHEMA.fields] == CHROMA_COLUMNS


def get_session(config: Mapping[str, Any], app_name: str = "keylib") -> SparkSession:
    """The Spark session for ``config`` (``[spark]`` section).

    Under ``spark-submit`` the master comes from its ``--master`` flag; elsewhere (tests,
    notebooks) from ``spark.master`` in the configuration.
    """
    spark_conf = config["spark"]
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        builder = (builder.master(spark_conf["master"]).config("spark.driver.memory", spark_conf["driver_memory"])
                   .config("spark.driver.extraJavaOptions", spark_conf["driver_java_options"]))
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(spark_conf["arrow_batch_rows"]))
        .config("spark.task.cpus", str(spark_conf["task_cpus"]))
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    for key, value in spark_conf["conf"].items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
