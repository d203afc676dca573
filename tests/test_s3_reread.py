"""An S3 body that breaks off mid-read is fetched again (moto behind a proxy that cuts it)."""

from __future__ import annotations

import hashlib

import pytest

from faulty_s3 import FaultyS3Proxy
from servers import SECRET_ACCESS_KEY, clip_bytes, fill_bucket, moto_server  # noqa: F401


def settings(proxy, **extra):
    return {"endpoint_url": proxy.endpoint, "region": "us-east-1", "max_attempts": 3, **extra}


def test_a_body_that_breaks_off_is_read_again(moto_server):
    from keylib.storage import s3

    fill_bucket(moto_server, "bkt", "x", 2)
    with FaultyS3Proxy(moto_server.endpoint, break_bodies={"bkt/x/track0000.wav": 2}) as proxy:
        data = s3.read_object("s3://bkt/x/track0000.wav", max_bytes=2**24, settings=settings(proxy))
        assert data == clip_bytes(0)  # whole and intact after two broken reads
        assert proxy.object_reads == ["bkt/x/track0000.wav"] * 3
        assert s3.read_object("s3://bkt/x/track0001.wav", max_bytes=2**24, settings=settings(proxy)) == clip_bytes(1)
        assert proxy.object_reads[3:] == ["bkt/x/track0001.wav"]  # an intact body is read once


def test_a_body_that_keeps_breaking_is_a_read_error_after_max_attempts(moto_server):
    from keylib.storage import s3
    from keylib.errors import ReadError

    fill_bucket(moto_server, "bkt", "x", 1)
    with FaultyS3Proxy(moto_server.endpoint, break_bodies={"bkt/x/track0000.wav": 99}) as proxy:
        with pytest.raises(ReadError, match=r"cannot read s3://bkt/x/track0000.wav after 2 attempt\(s\)") as info:
            s3.read_object("s3://bkt/x/track0000.wav", max_bytes=2**24, settings=settings(proxy, max_attempts=2))
        assert proxy.object_reads == ["bkt/x/track0000.wav"] * 2
    assert SECRET_ACCESS_KEY not in str(info.value)


def test_executors_read_again_and_the_row_has_the_whole_object(moto_server, spark, config):
    from keylib.catalogue import list_tracks
    from keylib.features import FEATURE_VERSION
    from keylib.track import ExtractSettings
    from keylib.spark.workers import extract_dataframe

    fill_bucket(moto_server, "music", "cut", 3)
    with FaultyS3Proxy(moto_server.endpoint, break_bodies={"music/cut/track0001.wav": 1}) as proxy:
        s3conf = settings(proxy)
        listing = list_tracks("s3://music/cut", s3_settings=s3conf)
        extract_settings = ExtractSettings.from_config({**config, "s3": s3conf}, feature_version=FEATURE_VERSION)
        rows = (extract_dataframe(spark, listing, settings=extract_settings, tracks_per_partition=1)
                .select("track_id", "status", "identity", "size_bytes").toPandas().set_index("track_id"))
        reads = sorted(proxy.object_reads)
    assert reads == ["music/cut/track0000.wav", "music/cut/track0001.wav", "music/cut/track0001.wav",
                     "music/cut/track0002.wav"]
    for i in range(3):
        row = rows.loc[f"cut/track{i:04d}.wav"]
        assert row["status"] == "ok"
        assert row["identity"] == "sha256:" + hashlib.sha256(clip_bytes(i)).hexdigest()
        assert row["size_bytes"] == len(clip_bytes(i))
