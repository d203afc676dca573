"""S3 input over a real moto server: listing on the driver, reads on the executors, faults."""

from __future__ import annotations

import pytest

from servers import ACCESS_KEY_ID, SECRET_ACCESS_KEY, clip_bytes, fill_bucket, moto_server  # noqa: F401


def settings(server, **extra):
    return {"endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 2, **extra}


def test_listing_is_paginated_with_etag_size_and_last_modified(moto_server):
    from keylib import s3
    from keylib.catalogue import list_tracks

    client = moto_server.client()
    client.create_bucket(Bucket="big")
    for i in range(1005):  # more than one page of list_objects_v2 (1000 keys)
        client.put_object(Bucket="big", Key=f"p/{i:05d}.wav", Body=b"x" * (i % 7))
    client.put_object(Bucket="big", Key="p/readme.txt", Body=b"not audio")
    frame = list_tracks("s3://big/p", s3_settings=settings(moto_server))
    assert len(frame) == 1005 and frame["track_id"].is_unique
    row = frame.set_index("track_id").loc["p/00003.wav"]
    head = client.head_object(Bucket="big", Key="p/00003.wav")
    assert row["fingerprint"] == f"{head['ETag'].strip(chr(34))}:3" and row["size_bytes"] == 3
    assert row["uri"] == "s3://big/p/00003.wav" and row["last_modified"] is not None
    assert s3.read_object("s3://big/p/00005.wav", max_bytes=100, settings=settings(moto_server)) == b"xxxxx"


def test_read_errors_are_typed_and_carry_no_credentials(moto_server):
    from keylib import s3
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
    from keylib import s3
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
    from keylib.extract import ExtractSettings
    from keylib.workers import extract_dataframe

    fill_bucket(moto_server, "music", "cat", 5)
    client = moto_server.client()
    client.put_object(Bucket="music", Key="cat/corrupt.wav", Body=b"RIFF....WAVEfmt " + b"\x07" * 300)
    client.put_object(Bucket="music", Key="cat/empty.mp3", Body=b"")
    client.put_object(Bucket="music", Key="cat/deleted.wav", Body=clip_bytes(3))

    s3conf = settings(moto_server)
    listing = list_tracks("s3://music/cat", s3_settings=s3conf)
    assert len(listing) == 8
    client.delete_object(Bucket="music", Key="cat/deleted.wav")  # after listing, before reading

    extract_settings = ExtractSettings.from_config({**config, "s3": s3conf})
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
