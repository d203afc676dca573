"""Commit and read-back time of the keys table on S3 (moto's server on 127.0.0.1).

    .venv/bin/python bench/tables.py [--sizes 1000 10000] [--repeats 3]

For each size: a keys table of N tracks is committed through :func:`keylib.spark.frames.commit_run`
(Spark local[2]: executors write the Parquet files to S3, the driver commits once), then a
second run re-writes 1 % of the tracks (upsert: copy-on-write of the files holding them),
then the current rows are read back without Spark (``keylib keys``' reader, Polars, DuckDB).
The baseline, measured in the same run, is one plain Parquet PUT of the same rows with
pyarrow (no table, no commit): the ratio is what atomic commits and one-row-per-track cost.
Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def keys_rows(n: int, *, version: str = "bench-1") -> pd.DataFrame:
    """N realistic keys rows (24 probabilities each)."""
    from keylib.features import FEATURE_VERSION
    from keylib.inference import KEYS_COLUMNS, keys_fields

    rng = np.random.default_rng(n)
    probs = rng.dirichlet(np.ones(24) * 0.3, size=n)
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(n):
        key = keys_fields(probs[i])
        # A one-key 30 s track, as most rows are: tonal, one segment, a small detuning.
        described = {"tonal": True, "tuning_cents": float(rng.integers(-20, 21)),
                     "segments": [{"start_s": 0.0, "end_s": 30.0, "key": key["key"],
                                   "confidence": key["confidence"]}]}
        rows.append({"track_id": f"catalogue/artist{i % 997:04d}/track{i:07d}.mp3",
                     "uri": f"s3://music/catalogue/artist{i % 997:04d}/track{i:07d}.mp3",
                     **key, **described, "model_version": version, "feature_version": FEATURE_VERSION,
                     "status": "ok", "error": None, "identity": f"sha256:{i:064x}", "extracted_at": now,
                     "inferred_at": now})
    return pd.DataFrame(rows, columns=KEYS_COLUMNS)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def _write_times(spark, s3: dict, n: int, repeats: int) -> tuple[float, float, float, str]:
    """Median times of writing N tracks: a plain Parquet PUT, a commit, an upsert of 1 %.

    Returns
    -------
    tuple
        The baseline PUT's, the commit's and the upsert's seconds, and the URI of the last
        table committed (upserted too).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keylib.spark import frames
    from keylib.spark.schemas import keys_schema
    from keylib.storage import locations

    pdf = keys_rows(n)
    schema = frames.arrow_schema(keys_schema())
    arrow = pa.Table.from_pandas(pdf, schema=schema, preserve_index=False)
    fs, _ = locations.filesystem("s3://bench/x", s3)

    def baseline(counter=iter(range(10**6))):
        with fs.open_output_stream(f"bench/plain-{n}-{next(counter)}.parquet") as out:
            pq.write_table(arrow, out, compression="zstd")

    frame = spark.createDataFrame(pdf, keys_schema()).repartition(2).cache()
    frame.count()
    changed = spark.createDataFrame(keys_rows(n, version="bench-2").sample(frac=0.01, random_state=1),
                                    keys_schema()).repartition(2).cache()
    changed.count()
    base_s, _ = timed(baseline, repeats)
    counter = iter(range(10**6))
    uris: list[str] = []

    def commit():
        uri = f"s3://bench/keys-{n}-{next(counter)}"
        uris.append(uri)
        return frames.commit_run(frame, uri, run_id=locations.new_run_id(), s3_settings=s3)

    commit_s, result = timed(commit, repeats)
    assert result.rows == n
    upsert_s, result = timed(lambda: frames.commit_run(changed, uris[-1], run_id=locations.new_run_id(),
                                                       s3_settings=s3), repeats)
    frame.unpersist()
    changed.unpersist()
    return base_s, commit_s, upsert_s, uris[-1]


def _read_times(uri: str, s3: dict, n: int, repeats: int) -> tuple[float, float, float]:
    """Median times of reading the N current rows of ``uri`` back without Spark.

    Returns
    -------
    tuple
        Seconds of ``keylib keys``' reader (pandas), of Polars and of DuckDB.
    """
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    from keylib.cli import read_keys_table
    from keylib.storage import locations

    options = locations.storage_options(uri, s3)
    read_s, keys = timed(lambda: read_keys_table(uri, s3_settings=s3), repeats)
    assert len(keys) == n and keys["track_id"].is_unique
    polars_s, frame_pl = timed(lambda: pl.read_delta(uri, storage_options=options), repeats)
    assert frame_pl.height == n

    def duck():  # the README's two lines, then a query
        keys = duckdb.from_arrow(DeltaTable(uri, storage_options=options).to_pyarrow_dataset())
        return keys.aggregate("count(*)").fetchall()[0][0]

    duck_s, count = timed(duck, repeats)
    assert count == n
    return read_s, polars_s, duck_s


def main() -> None:
    args = _parse_args()
    from servers import CREDENTIALS, MotoServer  # the dummy credentials for boto3's chain

    os.environ.update(CREDENTIALS)
    from keylib.config import load_config
    from keylib.spark.session import get_session

    server = MotoServer().start()
    try:
        server.client().create_bucket(Bucket="bench")
        s3 = {"endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 3}
        config = load_config(REPO / "conf" / "local.toml")
        config["spark"]["conf"]["spark.ui.showConsoleProgress"] = "false"
        spark = get_session(config, app_name="keylib-bench-tables")
        print(f"moto S3 server {server.endpoint}; Spark {spark.sparkContext.master}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; median of {args.repeats}")
        header = (f"{'tracks':>7}  {'baseline PUT':>12}  {'commit':>8}  {'ratio':>6}  {'upsert 1%':>9}  "
                  f"{'read pandas':>11}  {'read polars':>11}  {'read duckdb':>11}")
        print(header)
        for n in args.sizes:
            base_s, commit_s, upsert_s, uri = _write_times(spark, s3, n, args.repeats)
            read_s, polars_s, duck_s = _read_times(uri, s3, n, args.repeats)
            print(f"{n:>7,}  {base_s:>11.2f}s  {commit_s:>7.2f}s  {commit_s / base_s:>5.1f}x  {upsert_s:>8.2f}s  "
                  f"{read_s:>10.2f}s  {polars_s:>10.2f}s  {duck_s:>10.2f}s")
        spark.stop()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
