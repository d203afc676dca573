"""Nightly incremental annotation over a real moto S3 server, through ./submit.sh."""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from servers import (  # noqa: F401 - moto_server is a fixture
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, fill_bucket, moto_server, submit, write_conf,
)

pytestmark = pytest.mark.slow


def committed_rows(table_root):
    """All committed rows of a table (every run), read with pyarrow as any reader would."""
    dataset = ds.dataset(str(table_root), format="parquet", partitioning="hive",
                         exclude_invalid_files=True, ignore_prefixes=["_", "."])
    return dataset.to_table(columns=["track_id", "status", "run"]).to_pandas()


def manifests(out):
    return [json.loads(p.read_text()) for p in sorted((out / "_runs").glob("*.json"))]


def assert_no_credentials(*texts):
    for text in texts:
        assert ACCESS_KEY_ID not in text
        assert SECRET_ACCESS_KEY not in text


def test_nightly_over_s3_is_incremental(moto_server, tmp_path):
    fill_bucket(moto_server, "music", "catalogue", 6)
    conf = write_conf(tmp_path / "test.toml", endpoint=moto_server.endpoint)  # the shipped model
    out = tmp_path / "out"
    args = ("--conf", str(conf), "--input", "s3://music/catalogue", "--output", str(out))
    env = moto_server.env()

    code, log1 = submit("nightly", *args, env=env)
    assert code == 0, log1
    assert "keylib nightly: listed 6, new 6, skipped 0, failed 0" in log1

    code, log2 = submit("nightly", *args, env=env)
    assert code == 0, log2
    assert "listed 6, new 0, skipped 6, failed 0" in log2

    fill_bucket(moto_server, "music", "catalogue", 1, start=6)
    code, log3 = submit("nightly", *args, env=env)
    assert code == 0, log3
    assert "listed 7, new 1, skipped 6, failed 0" in log3

    expected = sorted(f"catalogue/track{i:04d}.wav" for i in range(7))
    for table in ("chroma", "keys"):
        rows = committed_rows(out / table)
        assert sorted(rows["track_id"]) == expected, table  # each track once over all runs
        assert set(rows["status"]) == {"ok"}, table

    runs = manifests(out)
    assert [m["counts"]["new"] for m in runs] == [6, 0, 1]
    assert [m["counts"]["skipped"] for m in runs] == [0, 6, 6]
    first = runs[0]
    for field in ("run_id", "started", "ended", "config_hash", "input", "output", "versions", "exit_code"):
        assert first[field] is not None, field
    assert first["versions"]["feature"] and first["versions"]["package"] and first["versions"]["model"]
    assert first["input"] == "s3://music/catalogue" and first["status"] == "ok"
    assert first["started"] <= first["ended"]
    assert_no_credentials(log1, log2, log3, *[p.read_text() for p in (out / "_runs").glob("*.json")])


def test_unreachable_s3_is_exit_3_with_a_manifest(tmp_path):
    from servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    conf = write_conf(tmp_path / "test.toml", endpoint=dead, max_attempts=1)
    out = tmp_path / "out"
    code, log = submit("nightly", "--conf", str(conf), "--input", "s3://music/x", "--output", str(out),
                       timeout=180)
    assert code == 3, log
    assert "input error" in log
    (manifest,) = manifests(out)
    assert manifest["status"] == "input_error" and manifest["exit_code"] == 3
    assert_no_credentials(log, json.dumps(manifest))


def test_bad_configuration_is_exit_2(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("[nightly]\nmax_failed_share = 3.0\n")
    code, log = submit("nightly", "--conf", str(conf), "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert code == 2, log
    assert "max_failed_share" in log
