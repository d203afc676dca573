"""S3 input over a real moto server: listing on the driver, reads on the executors, faults."""

from __future__ import annotations

import pytest

from servers import ACCESS_KEY_ID, SECRET_ACCESS_KEY, clip_bytes, fill_bucket, moto_server  # noqa: F401


def settings(server, **extra):
    return {"endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 2, **extra}


@pytest.mark.slow  # ~8 s: fills a moto bucket past one listing page
def test_listing_is_paginated_with_etag_size_and_last_modified(moto_server, monkeypatch, caplog):
    from keylib.storage import io, s3
    from keylib.catalogue import list_tracks

    monkeypatch.setattr(io, "LISTING_PROGRESS_S", 0.0)  # a progress line for every page

    client = moto_server.client()
    client.create_bucket(Bucket="big")
    for i in range(1005):  # more than one page of list_objects_v2 (1000 keys)
        client.put_object(Bucket="big", Key=f"p/{i:05d}.wav", Body=b"x" * (i % 7))
    client.put_object(Bucket="big", Key="p/readme.txt", Body=b"not audio")
    with caplog.at_level("INFO", logger="keylib"):
        frame = list_tracks("s3://big/p", s3_settings=settings(moto_server))
    assert len(frame) == 1005 and frame["track_id"].is_unique
    assert "listing s3://big/p: 1000 entries so far" in caplog.text  # the page before the last
    assert "listing s3://big/p: 1006 entries so far" in caplog.text  # readme.txt counted too
    row = frame.set_index("track_id").loc["p/00003.wav"]
    head = client.head_object(Bucket="big", Key="p/00003.wav")
    assert row["fingerprint"] == f"{head['ETag'].strip(chr(34))}:3" and row["size_bytes"] == 3
    assert row["uri"] == "s3://big/p/00003.wav" and row["last_modified"] is not None
    assert s3.read_object("s3://big/p/00005.wav", max_bytes=100, settings=settings(moto_server)) == b"xxxxx"


def test_read_errors_are_typed_and_carry_no_credentials(moto_server):
    from keylib.storage import s3
    from keylib.errors import InputError, MissingTrackError, TooLargeError

    fill_bucket(moto_server, "bkt", "x", 1)
    with pytest.raises(MissingTrackError, match="s3://bkt/x/gone.wav"):
        s3.read_object("s3://bkt/x/gone.wav", max_bytes=2**20, settings=settings(moto_server))
    with pytest.raises(TooLargeError):
        s3.read_object("s3://bkt/x/track0000.wav", max_bytes=100, settings=settings(moto_server))
    with pytest.raises(InputError, match="NoSuchBucket"):
        s3.list_prefix("s3://nobucket/x", settings=settings(moto_server))
    text = s3.redact(f"http://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@host/ and {SECRET_ACCESS_KEY}")
    assert ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text


def test_unreachable_endpoint_is_a_read_error_after_retries():
    from keylib.storage import s3
    from keylib.errors import ReadError
    from servers import free_port

    dead = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 2}
    with pytest.raises(ReadError, match="cannot read s3://b/k.wav") as info:
        s3.read_object("s3://b/k.wav", max_bytes=100, settings=dead)
    assert SECRET_ACCESS_KEY not in str(info.value)


def test_executors_read_s3_and_faults_become_error_rows(moto_server, spark, config):
    """Deleted between listing and reading, corrupt and empty objects end as error rows;
    the others are read by the executors and succeed."""
    from keylib.catalogue import list_tracks
    from keylib.features import FEATURE_VERSION
    from keylib.track import ExtractSettings
    from keylib.spark.workers import extract_dataframe

    fill_bucket(moto_server, "music", "cat", 5)
    client = moto_server.client()
    client.put_object(Bucket="music", Key="cat/corrupt.wav", Body=b"RIFF....WAVEfmt " + b"\x07" * 300)
    client.put_object(Bucket="music", Key="cat/empty.mp3", Body=b"")
    client.put_object(Bucket="music", Key="cat/deleted.wav", Body=clip_bytes(3))

    s3conf = settings(moto_server)
    listing = list_tracks("s3://music/cat", s3_settings=s3conf)
    assert len(listing) == 8
    client.delete_object(Bucket="music", Key="cat/deleted.wav")  # after listing, before reading

    extract_settings = ExtractSettings.from_config({**config, "s3": s3conf}, feature_version=FEATURE_VERSION)
    rows = (extract_dataframe(spark, listing, settings=extract_settings, tracks_per_partition=2)
            .select("track_id", "status", "error", "identity", "n_frames").toPandas().set_index("track_id"))
    assert len(rows) == 8
    assert rows.loc["cat/deleted.wav", "status"] == "missing"
    assert rows.loc["cat/corrupt.wav", "status"] == "decode_error"
    assert rows.loc["cat/empty.mp3", "status"] == "empty"
    good = rows.loc[[f"cat/track{i:04d}.wav" for i in range(5)]]
    assert (good["status"] == "ok").all() and (good["n_frames"] > 0).all()
    assert good["identity"].str.startswith("sha256:").all()
    errors = " ".join(rows["error"].dropna())
    assert errors and ACCESS_KEY_ID not in errors and SECRET_ACCESS_KEY not in errors


# ------------------------------------------------------------------ output on S3 (issue 9)

def _objects(server, bucket, prefix):
    """{key: body} of the objects under ``prefix``."""
    client = server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _keys_cli(server, *args):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "keylib"
    proc = subprocess.run([str(cli), "keys", *args], capture_output=True, env=server.env(), timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _table(server, uri):
    from keylib.storage import tables

    return tables.read_rows(uri, s3_settings=settings(server))


def _part_files(server, bucket, prefix):
    client = server.client()
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", []) if "/run=" in o["Key"] and o["Key"].endswith(".parquet")]


@pytest.mark.slow
def test_nightly_s3_to_s3_incremental_and_keys_cli(moto_server, tmp_path):
    """s3://in -> s3://out: 6 annotated, a rerun 0, an added object 1; `keylib keys` lists
    7 rows, one per track; no credentials in logs, rows, manifests or the Delta log."""
    import json

    from servers import make_model, submit, write_conf

    fill_bucket(moto_server, "music", "catalogue", 6)
    moto_server.client().create_bucket(Bucket="out")
    conf = write_conf(tmp_path / "t.toml", endpoint=moto_server.endpoint, model=make_model(tmp_path))
    args = ("--conf", str(conf), "--input", "s3://music/catalogue", "--output", "s3://out/night")
    logs = []
    for added, expected in ((0, "listed 6, new 6, skipped 0, failed 0"), (0, "listed 6, new 0, skipped 6, failed 0"),
                            (1, "listed 7, new 1, skipped 6, failed 0")):
        if added:
            fill_bucket(moto_server, "music", "catalogue", added, start=6)
        code, log = submit("nightly", *args, env=moto_server.env(), timeout=900)
        assert code == 0, log
        assert f"keylib nightly: {expected}" in log, log
        logs.append(log)

    code, out, err = _keys_cli(moto_server, "s3://out/night", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["track_id"] for r in rows) == [f"catalogue/track{i:04d}.wav" for i in range(7)]
    assert {r["status"] for r in rows} == {"ok"} and all(r["key"] and r["camelot"] for r in rows)
    assert set(rows[0]) == {"track_id", "uri", "key", "confidence", "camelot", "open_key", "status", "error",
                            "model_version", "inferred_at"}
    code, csv_text, err = _keys_cli(moto_server, "s3://out/night/keys", "--format", "csv", "--out",
                                    str(tmp_path / "keys.csv"))
    assert code == 0 and (tmp_path / "keys.csv").read_text().count("\n") == 8, err  # header + 7

    for table in ("chroma", "keys"):
        current = _table(moto_server, f"s3://out/night/{table}")
        assert len(current) == 7 and current["track_id"].is_unique, table
    manifests = _objects(moto_server, "out", "night/_runs/")
    runs = [json.loads(body) for _, body in sorted(manifests.items())]
    assert [m["counts"]["new"] for m in runs] == [6, 0, 1]
    assert runs[0]["output"] == "s3://out/night" and runs[0]["status"] == "ok"
    stored = b"".join(_objects(moto_server, "out", "night/").values()).decode("latin-1")  # logs, parquet, manifests
    keys_rows = _table(moto_server, "s3://out/night/keys").astype(str).to_csv()
    for text in (*logs, out, stored, keys_rows):
        assert ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text


@pytest.mark.slow
def test_driver_killed_during_commit_to_s3_then_rerun(moto_server, tmp_path):
    """SIGKILL while the run's files are being written to S3: nothing partial is visible,
    and the rerun ends with exactly one current row per track. (Features only: the keys
    table commits through the same function, see the test above.)"""
    from servers import kill_group, make_model, start_submit, submit, wait_for, write_conf

    fill_bucket(moto_server, "music", "cat", 4)
    moto_server.client().create_bucket(Bucket="out")
    conf = write_conf(tmp_path / "t.toml", endpoint=moto_server.endpoint, model=make_model(tmp_path),
                      tracks_per_partition=1)
    args = ("--conf", str(conf), "--input", "s3://music/cat", "--output", "s3://out/o", "--extract-only")
    code, log = submit("nightly", *args, env=moto_server.env(), timeout=900)
    assert code == 0, log
    committed_files = set(_part_files(moto_server, "out", "o/chroma/"))

    fill_bucket(moto_server, "music", "cat", 8, start=4)
    proc = start_submit("nightly", *args, env=moto_server.env(), log=tmp_path / "killed.log")
    wait_for(lambda: set(_part_files(moto_server, "out", "o/chroma/")) - committed_files or proc.poll() is not None,
             timeout=600, interval=0.05, what="the run to write its first files")
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()
    kill_group(proc)
    assert set(_part_files(moto_server, "out", "o/chroma/")) - committed_files  # files written, no commit
    visible = _table(moto_server, "s3://out/o/chroma")
    assert sorted(visible["track_id"]) == [f"cat/track{i:04d}.wav" for i in range(4)]  # nothing partial

    code, log = submit("nightly", *args, env=moto_server.env(), timeout=900)
    assert code == 0, log
    assert "listed 12, new 8, skipped 4, failed 0" in log, log
    current = _table(moto_server, "s3://out/o/chroma")
    assert sorted(current["track_id"]) == [f"cat/track{i:04d}.wav" for i in range(12)]  # one row each
    assert set(current["status"]) == {"ok"}
    # the killed run's files are gone: every file left is named by some commit
    from keylib.storage import tables

    runs = set(tables.committed_runs("s3://out/o/chroma", s3_settings=settings(moto_server)))
    assert {k.split("/run=")[1].split("/")[0] for k in _part_files(moto_server, "out", "o/chroma/")} <= runs


@pytest.mark.slow
def test_s3_stopped_during_commit_is_a_clean_exit_then_next_run_completes(tmp_path):
    from servers import MotoServer, make_model, start_submit, submit, wait_for, write_conf

    n = 12
    server = MotoServer(log_dir=tmp_path).start()
    model = make_model(tmp_path)
    try:
        fill_bucket(server, "music", "cat", n)
        server.client().create_bucket(Bucket="out")
        conf = write_conf(tmp_path / "t.toml", endpoint=server.endpoint, max_attempts=2, model=model,
                          tracks_per_partition=1)
        args = ("--conf", str(conf), "--input", "s3://music/cat", "--output", "s3://out/o", "--extract-only")
        proc = start_submit("nightly", *args, env=server.env(), log=tmp_path / "first.log")
        wait_for(lambda: _part_files(server, "out", "o/chroma/") or proc.poll() is not None, timeout=600,
                 interval=0.05, what="the run to write its first files")
        server.kill()  # the store goes away while the run commits
        proc.wait(timeout=900)
        first_log = (tmp_path / "first.log").read_text()
        assert proc.returncode == 5, first_log  # storage error: documented, nothing visible
        assert "storage error" in first_log and "Traceback" not in first_log
        assert ACCESS_KEY_ID not in first_log and SECRET_ACCESS_KEY not in first_log
    finally:
        server.stop()

    server = MotoServer(log_dir=tmp_path).start()  # the store comes back (moto: empty, refilled)
    try:
        fill_bucket(server, "music", "cat", n)
        server.client().create_bucket(Bucket="out")
        conf = write_conf(tmp_path / "t.toml", endpoint=server.endpoint, max_attempts=2, model=model)
        code, log = submit("nightly", *args, env=server.env(), timeout=900)
        assert code == 0 and f"listed {n}, new {n}, skipped 0, failed 0" in log, log
        current = _table(server, "s3://out/o/chroma")
        assert len(current) == n and current["track_id"].is_unique and set(current["status"]) == {"ok"}
    finally:
        server.stop()
