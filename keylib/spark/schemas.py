"""The Spark schemas of keylib's two tables: ``chroma`` (:data:`CHROMA_SCHEMA`, columns
:data:`keylib.track.CHROMA_COLUMNS`) and ``keys`` (:func:`keys_schema`, columns
:data:`keylib.inference.KEYS_COLUMNS`)."""

from __future__ import annotations

from pyspark.sql import types as T

from ..inference import KEYS_COLUMNS
from ..track import CHROMA_COLUMNS

__all__ = ["CHROMA_SCHEMA", "keys_schema"]

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
    T.StructField("attempts", T.IntegerType(), True),
    T.StructField("truth_key", T.StringType(), True),
    T.StructField("source", T.StringType(), True),
    T.StructField("extracted_at", T.TimestampType(), True),
])
assert [f.name for f in CHROMA_SCHEMA.fields] == CHROMA_COLUMNS


def keys_schema():
    """The Spark schema of the keys/ table (columns :data:`keylib.inference.KEYS_COLUMNS`)."""
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
        T.StructField("tonal", T.BooleanType(), True),
        T.StructField("tuning_cents", T.DoubleType(), True),
        T.StructField("segments", T.ArrayType(T.StructType([
            T.StructField("start_s", T.DoubleType(), False),
            T.StructField("end_s", T.DoubleType(), False),
            T.StructField("key", T.StringType(), False),
            T.StructField("confidence", T.DoubleType(), False),
        ]), containsNull=False), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("feature_version", T.StringType(), True),
        T.StructField("status", T.StringType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("identity", T.StringType(), True),
        T.StructField("extracted_at", T.TimestampType(), True),
        T.StructField("inferred_at", T.TimestampType(), True),
    ])


assert [f.name for f in keys_schema().fields] == KEYS_COLUMNS
