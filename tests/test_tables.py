"""Delta tables of committed runs, on a local folder and on moto's S3 server (real HTTP)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from servers import ACCESS_KEY_ID, SECRET_ACCESS_KEY, local_or_s3, moto_server  # noqa: F401 - fixture

SCHEMA = ("track_id string, uri string, status string, error string, n long, "
          "chroma array<float>, extracted_at timestamp")


def rows(spark, ids, *, n=0, status="ok"):
    at = datetime(2026, 11, 28, tzinfo=timezone.utc)
    data = [(t, f"/music/{t}", status, None if status == "ok" else "boom", n, [float(n)] * 24, at) for t in ids]
    return spark.createDataFrame(data, SCHEMA).repartition(3)


@pytest.fixture(params=["local", "s3"])
def table(request, tmp_path):
    """A table URI and the [s3] settings to reach it."""
    with local_or_s3(request.param, tmp_path, local=tmp_path / "out" / "t", s3_uri="s3://out/prefix/t") as root:
        yield root


def test_runs_upsert_one_current_row_per_track_and_keep_history(spark, table):
    from keylib.spark import frames
    from keylib.storage import tables

    uri, s3 = table
    first = frames.commit_run(rows(spark, ["a", "b", "c", "d"], n=1), uri, run_id="r1", s3_settings=s3)
    assert first.rows == 4 and first.statuses == {"ok": 4} and first.failed.empty and first.version == 0
    second = frames.commit_run(rows(spark, ["c", "e"], n=2, status="read_error"), uri, run_id="r2", s3_settings=s3)
    assert second.rows == 2 and second.replaced == 1 and second.version == 1
    assert sorted(second.failed["track_id"]) == ["c", "e"] and set(second.failed["error"]) == {"boom"}

    current = tables.read_rows(uri, s3_settings=s3).set_index("track_id")
    assert sorted(current.index) == ["a", "b", "c", "d", "e"]  # one row per track
    assert current.loc["c", "n"] == 2 and current.loc["a", "n"] == 1 and current.loc["e", "status"] == "read_error"
    assert list(current.loc["a", "chroma"]) == [1.0] * 24
    # Nothing a run wrote is lost: the first version still reads as it was committed.
    before = tables.read_rows(uri, s3_settings=s3, version=0).set_index("track_id")
    assert sorted(before.index) == ["a", "b", "c", "d"] and before.loc["c", "n"] == 1
    assert tables.committed_runs(uri, s3_settings=s3) == ["r1", "r2"]
    assert tables.count_rows(uri, s3_settings=s3) == 5

    frame = frames.read_current(spark, uri, s3_settings=s3)  # through the executors, no S3 connector
    got = {r.track_id: r.n for r in frame.select("track_id", "n").collect()}
    assert got == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 2}
    assert frame.schema["chroma"].dataType.simpleString() == "array<float>"
    assert frames.read_current(spark, uri + "-missing", s3_settings=s3) is None
    assert tables.read_rows(uri + "-missing", s3_settings=s3) is None


def test_uncommitted_files_are_invisible_and_cleared(spark, table):
    from keylib.spark import frames
    from keylib.storage import commit, locations, staging, tables

    uri, s3 = table
    frames.commit_run(rows(spark, ["a", "b"], n=1), uri, run_id="r1", s3_settings=s3)
    # A run killed after writing its files and before its commit:
    fs, root = locations.filesystem(uri, s3)
    meta = rows(spark, ["a", "z"], n=9).mapInArrow(
        commit.part_writer(uri, s3, "dead", frames.arrow_schema(rows(spark, ["x"]).schema)),
        commit.FILE_META).collect()
    assert meta and fs.get_file_info(f"{root}/{meta[0]['path']}").size > 0
    current = tables.read_rows(uri, s3_settings=s3)
    assert sorted(current["track_id"]) == ["a", "b"] and set(current["n"]) == {1}  # invisible

    import polars as pl

    assert pl.read_delta(uri, storage_options=locations.storage_options(uri, s3)).height == 2
    assert staging.clear_staging(uri, s3_settings=s3) == ["run=dead"]
    assert fs.get_file_info(f"{root}/run=dead").type.name == "NotFound"
    assert sorted(tables.read_rows(uri, s3_settings=s3)["track_id"]) == ["a", "b"]


def test_readme_readers_pandas_duckdb_polars(spark, table):
    """The two-line reads shown in the README give one row per track."""
    from keylib.spark import frames
    from keylib.storage import locations

    uri, s3 = table
    frames.commit_run(rows(spark, ["a", "b"], n=1), uri, run_id="r1", s3_settings=s3)
    frames.commit_run(rows(spark, ["b"], n=2), uri, run_id="r2", s3_settings=s3)
    options = locations.storage_options(uri, s3)

    from deltalake import DeltaTable
    keys = DeltaTable(uri, storage_options=options).to_pandas()
    assert sorted(keys["track_id"]) == ["a", "b"]

    import duckdb; from deltalake import DeltaTable  # noqa: E401, E702
    keys = duckdb.from_arrow(DeltaTable(uri, storage_options=options).to_pyarrow_dataset())
    assert keys.order("track_id").project("track_id, n").fetchall() == [("a", 1), ("b", 2)]

    import polars as pl
    keys = pl.read_delta(uri, storage_options=options)
    assert sorted(keys["track_id"].to_list()) == ["a", "b"]


def test_unreachable_store_is_a_storage_error_without_credentials(spark, tmp_path):
    from keylib.spark import frames
    from keylib.errors import StorageError
    from servers import free_port

    dead = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 1}
    with pytest.raises(StorageError) as info:
        frames.commit_run(rows(spark, ["a"]), "s3://out/t", run_id="r1", s3_settings=dead)
    text = str(info.value)
    assert "s3://out/t" in text and ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text


def test_text_files_local_and_s3(table):
    from keylib.storage import files

    uri, s3 = table
    files.write_text(f"{uri}/_runs/b.json", '{"b": 2}', s3_settings=s3)
    files.write_text(f"{uri}/_runs/a.json", '{"a": 1}', s3_settings=s3)
    assert files.read_texts(f"{uri}/_runs", s3_settings=s3) == ['{"a": 1}', '{"b": 2}']
    assert files.read_texts(f"{uri}/_none", s3_settings=s3) == []


def test_keys_command_reads_a_local_output(spark, tmp_path, capsysbinary):
    """`keylib keys OUT` (no Spark in the command itself): csv to stdout, json and parquet to files."""
    import json

    import pandas as pd

    from keylib import cli
    from keylib.spark import frames
    from keylib.storage import locations, tables
    from keylib.spark.schemas import keys_schema

    at = datetime(2026, 11, 28, 2, 30, tzinfo=timezone.utc)
    base = dict(tonic=0, mode="major", margin=0.5, probs=[0.0] * 24, feature_version="f", identity=None,
                extracted_at=at, inferred_at=at, tonal=True, tuning_cents=-12.0,
                segments=[{"start_s": 0.0, "end_s": 2.5, "key": "C major", "confidence": 0.9},
                          {"start_s": 2.5, "end_s": 4.0, "key": "G major", "confidence": 0.7}])
    data = [dict(track_id="b.wav", uri="/m/b.wav", key="C major", confidence=0.9, camelot="8B", open_key="1d",
                 model_version="m1", status="ok", error=None, **base),
            dict(track_id="a.wav", uri="/m/a.wav", key=None, confidence=None, camelot=None, open_key=None,
                 model_version="m1", status="decode_error", error="not decodable audio",
                 **{**base, "tonic": None, "mode": None, "probs": None, "tonal": None, "tuning_cents": None,
                    "segments": None})]
    frame = spark.createDataFrame(pd.DataFrame(data)[[f.name for f in keys_schema().fields]], keys_schema())
    out = tmp_path / "out"
    frames.commit_run(frame, locations.table_uri(out, "keys"), run_id="r1")
    # the nested segments column round-trips through Delta, without Spark and through the executors
    for current in (tables.read_rows(locations.table_uri(out, "keys")),
                    frames.read_current(spark, locations.table_uri(out, "keys")).toPandas()):
        current = current.set_index("track_id")
        segments = [s.asDict() if hasattr(s, "asDict") else dict(s) for s in current.loc["b.wav", "segments"]]
        assert segments == base["segments"]
        assert current.loc["b.wav", "tonal"] and current.loc["b.wav", "tuning_cents"] == -12.0
        assert current.loc["a.wav", "segments"] is None

    assert cli.main(["keys", str(out)]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert lines[0] == ",".join(cli.KEYS_EXPORT_COLUMNS)
    assert lines[1].startswith("a.wav,/m/a.wav,,,,,decode_error,not decodable audio,m1,2026-11-28")
    assert lines[2].startswith("b.wav,/m/b.wav,C major,0.9,8B,1d,ok,,m1,")
    assert cli.main(["keys", str(out / "keys"), "--format", "json", "--out", str(tmp_path / "k.json")]) == 0
    rows = json.loads((tmp_path / "k.json").read_text())
    assert [r["track_id"] for r in rows] == ["a.wav", "b.wav"] and rows[1]["inferred_at"].startswith("2026-11-28T02:30")
    assert cli.main(["keys", str(out), "--format", "parquet", "--out", str(tmp_path / "k.parquet")]) == 0
    assert list(pd.read_parquet(tmp_path / "k.parquet").columns) == cli.KEYS_EXPORT_COLUMNS
    assert cli.main(["keys", str(tmp_path / "nothing")]) == 3


def test_a_table_written_before_a_column_existed_gains_it(spark, table):
    """A table of an earlier keylib (no ``attempts`` column) takes a run with it: the column
    is added (null in earlier rows), replaced files are copied with it, and the executors'
    reader fills it in for files that lack it."""
    from pyspark.sql import functions as F

    from keylib.spark import frames

    from keylib.storage import tables

    uri, s3 = table
    frames.commit_run(rows(spark, ["a", "b", "c"], n=1), uri, run_id="old", s3_settings=s3)
    newer = rows(spark, ["b", "d"], n=2, status="crashed").withColumn("attempts", F.lit(2).cast("int"))
    commit = frames.commit_run(newer, uri, run_id="new", s3_settings=s3)
    assert commit.replaced == 1
    current = tables.read_rows(uri, s3_settings=s3).set_index("track_id")
    assert sorted(current.index) == ["a", "b", "c", "d"]
    assert current.loc["b", "attempts"] == 2 and current.loc["d", "attempts"] == 2
    assert current[["attempts"]].loc[["a", "c"]].isna().all().all()  # rows written before it existed
    frame = frames.read_current(spark, uri, s3_settings=s3)
    got = {r.track_id: r.attempts for r in frame.select("track_id", "attempts").collect()}
    assert got == {"a": None, "b": 2, "c": None, "d": 2}
