"""Crash safety: a run SIGKILLed mid-write, and the S3 store going away mid-run, then reruns."""

from __future__ import annotations

import pytest

from faulty_s3 import FaultyS3Proxy
from servers import (  # noqa: F401 - moto_server is a fixture
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, fill_bucket, kill_group, make_model, moto_server,
    start_submit, submit, wait_for, write_conf,
)

pytestmark = pytest.mark.slow

# Bounds on waits, not timings: generous, because the suite may share a loaded machine
# (a JVM start and a nightly run of 16-24 short clips took over 3 minutes at a load of 30).
START_TIMEOUT_S = 420
RUN_TIMEOUT_S = 600


def committed(table_root, columns=("track_id", "status")):
    """The rows a Delta reader sees in a table (its latest committed version), or None."""
    from keylib.storage.tables import read_rows

    return read_rows(str(table_root), columns=list(columns))


def files_written(table_root):
    """A run has written Parquet files into the table's folder (committed or not)."""
    return any(table_root.glob("run=*/*.parquet"))


def uncommitted_folders(table_root):
    from keylib.storage.tables import committed_runs

    runs = set(committed_runs(str(table_root)))
    return [p for p in table_root.glob("run=*") if p.name[len("run="):] not in runs]


def test_sigkill_mid_write_then_rerun_gives_one_row_per_track(tmp_path, spark):
    from keylib.spark.frames import read_current
    from keylib.synth import chord_progression, write_audio

    catalogue = tmp_path / "catalogue"
    n = 16
    for i in range(n):
        write_audio(catalogue / f"t{i:02d}.wav", chord_progression(i % 24, duration_s=3.0, seed=i), sr=22050)
    conf = write_conf(tmp_path / "t.toml", model=make_model(tmp_path), tracks_per_partition=2)
    out = tmp_path / "out"
    args = ("--conf", str(conf), "--input", str(catalogue), "--output", str(out))

    proc = start_submit("nightly", *args, log=tmp_path / "killed.log")
    wait_for(lambda: files_written(out / "chroma") or proc.poll() is not None, timeout=START_TIMEOUT_S,
             interval=0.05, what="the run to start writing")
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()
    kill_group(proc)  # tasks are writing Parquet parts into the run's folder now
    assert files_written(out / "chroma")
    # Nothing partial is visible. The one pass commits chroma, then keys: a kill that lands
    # between the two leaves a whole chroma run and no keys run (the rerun infers those).
    everything = sorted(f"t{i:02d}.wav" for i in range(n))
    for table in ("chroma", "keys"):
        rows = committed(out / table)
        assert rows is None or sorted(rows["track_id"]) == everything, f"a killed run published part of {table}"

    code, log = submit("nightly", *args, timeout=RUN_TIMEOUT_S)
    assert code == 0, log
    assert f"listed {n}, new {n}, skipped 0, failed 0" in log
    for table in ("chroma", "keys"):
        rows = committed(out / table)
        assert sorted(rows["track_id"]) == sorted(f"t{i:02d}.wav" for i in range(n)), table  # exactly once
        current = read_current(spark, str(out / table)).toPandas()
        assert len(current) == n and current["track_id"].is_unique and set(current["status"]) == {"ok"}
    for table in ("chroma", "keys"):
        assert not uncommitted_folders(out / table), f"the killed run's files were left behind in {table}"

    code, log = submit("nightly", *args, "--extract-only", timeout=RUN_TIMEOUT_S)
    assert code == 0 and f"new 0, skipped {n}" in log, log


def test_s3_store_going_away_mid_run_then_rerun_completes(tmp_path, moto_server):
    """The store answers the listing and the first 10 object reads, then stops listening (a
    proxy in front of moto, so the point is exact): 10 tracks are ok, the other 14 are
    retryable read_error rows, 14/24 failed is over max_failed_share (exit 4). A rerun
    against the store, back again, reads only those 14."""
    n, served = 24, 10
    fill_bucket(moto_server, "music", "night", n)
    out = tmp_path / "out"

    def nightly(proxy):
        conf = write_conf(tmp_path / "t.toml", endpoint=proxy.endpoint, max_attempts=2, tracks_per_partition=2)
        return submit("nightly", "--conf", str(conf), "--input", "s3://music/night", "--output", str(out),
                      "--extract-only", env={**moto_server.env(), "AWS_ENDPOINT_URL": proxy.endpoint},
                      timeout=RUN_TIMEOUT_S)

    with FaultyS3Proxy(moto_server.endpoint, reads_before_death=served) as proxy:
        code, first_log = nightly(proxy)
        assert proxy.dead and len(proxy.object_reads) == served
    assert code == 4, first_log
    assert f"listed {n}, new {n}, skipped 0, failed {n - served}" in first_log, first_log
    assert "Traceback" not in first_log
    first = committed(out / "chroma").set_index("track_id")
    ok = sorted(first.index[first["status"] == "ok"])
    assert ok == sorted(read.split("/", 1)[1] for read in proxy.object_reads)  # exactly what was served
    failed = first[first["status"] != "ok"]
    assert len(failed) == n - served and set(failed["status"]) == {"read_error"}

    with FaultyS3Proxy(moto_server.endpoint) as proxy:  # the store is back
        code, log = nightly(proxy)
        assert sorted(read.split("/", 1)[1] for read in proxy.object_reads) == sorted(failed.index)
    assert code == 0, log
    assert f"listed {n}, new {n - served}, skipped {served}, failed 0" in log, log
    current = committed(out / "chroma")  # the retried tracks' rows replaced their read_error rows
    assert sorted(current["track_id"]) == sorted(f"night/track{i:04d}.wav" for i in range(n))  # one row each
    assert set(current["status"]) == {"ok"}
    # Nothing the first run wrote is lost: its version of the table is still readable.
    from keylib.storage.tables import read_rows

    history = read_rows(str(out / "chroma"), columns=["track_id", "status"], version=0).set_index("track_id")
    assert history.sort_index()["status"].equals(first.sort_index()["status"])
    for text in (first_log, log, *[p.read_text() for p in (out / "_runs").glob("*.json")]):
        assert ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text
