"""S3 access with boto3: list a prefix on the driver, read objects on the executors.

Each Python worker builds its own client once (:func:`client`, cached per process): clients
are never shipped from the driver. Endpoint, region and credentials follow boto3's usual
chain (environment, ``AWS_ENDPOINT_URL``, profiles, instance roles); ``[s3] endpoint_url``
and ``region`` in ``conf/`` override them for S3-compatible stores. Throttling and
transient errors are retried by botocore's adaptive retry mode with back-off. Error
messages name the bucket and key, never credentials.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Mapping

import pandas as pd

from .audio import AUDIO_EXTENSIONS, extension_of
from .errors import InputError, MissingTrackError, ReadError, TooLargeError

__all__ = ["split_uri", "client", "list_prefix", "head_objects", "read_object"]


def split_uri(uri: str) -> tuple[str, str]:
    """``("bucket", "key/prefix")`` of ``s3://bucket/key/prefix``."""
    if not uri.startswith("s3://"):
        raise InputError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise InputError(f"no bucket in S3 URI: {uri}")
    return bucket, key


def client(settings: Mapping | None = None):
    """A boto3 S3 client for these settings, built once per process."""
    settings = settings or {}
    return _client(
        settings.get("endpoint_url") or None,
        settings.get("region") or None,
        int(settings.get("max_attempts", 6)),
    )


@lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str | None, max_attempts: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "adaptive"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )


def _error_text(exc: Exception) -> str:
    """A readable reason from a botocore error, without request details or credentials."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip(": ")
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def list_prefix(uri: str, *, settings: Mapping | None = None) -> pd.DataFrame:
    """Audio objects under ``s3://bucket/prefix`` (paginated), as catalogue rows.

    ``track_id`` is the object key, ``fingerprint`` is ``"<ETag>:<size>"``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    rows = []
    try:
        pages = client(settings).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if extension_of(key) not in AUDIO_EXTENSIONS:
                    continue
                rows.append({
                    "track_id": key,
                    "uri": f"s3://{bucket}/{key}",
                    "fingerprint": f"{obj['ETag'].strip(chr(34))}:{obj['Size']}",
                    "size_bytes": int(obj["Size"]),
                    "truth_key": None,
                    "source": None,
                })
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot list s3://{bucket}/{prefix}: {_error_text(exc)}") from None
    frame = pd.DataFrame(rows, columns=["track_id", "uri", "fingerprint", "size_bytes", "truth_key", "source"])
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    return frame


def head_objects(uris: Iterable[str], *, settings: Mapping | None = None) -> pd.DataFrame:
    """``fingerprint`` and ``size_bytes`` of S3 objects named in a manifest, indexed by URI.

    Objects that do not exist are left out (they become ``missing`` rows).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    rows = {}
    for uri in uris:
        bucket, key = split_uri(uri)
        try:
            head = client(settings).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                continue
            raise InputError(f"cannot read {uri}: {_error_text(exc)}") from None
        except BotoCoreError as exc:
            raise InputError(f"cannot read {uri}: {_error_text(exc)}") from None
        size = int(head["ContentLength"])
        rows[uri] = {"fingerprint": f"{head['ETag'].strip(chr(34))}:{size}", "size_bytes": size}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["fingerprint", "size_bytes"])


def read_object(uri: str, *, max_bytes: int, settings: Mapping | None = None) -> bytes:
    """All bytes of an S3 object.

    Raises
    ------
    MissingTrackError
        the object does not exist (deleted since listing, say).
    TooLargeError
        it is larger than ``max_bytes`` (not downloaded).
    ReadError
        any other failure once botocore's retries are spent.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(uri)
    try:
        response = client(settings).get_object(Bucket=bucket, Key=key)
        size = int(response.get("ContentLength", 0))
        if size > max_bytes:
            response["Body"].close()
            raise TooLargeError(
                f"object is {size / 2**20:.1f} MiB, above the limit of {max_bytes / 2**20:.0f} MiB "
                f"(audio.max_file_mb): {uri}"
            )
        return response["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise MissingTrackError(f"object not found: {uri}") from None
        raise ReadError(f"cannot read {uri}: {_error_text(exc)}") from None
    except BotoCoreError as exc:
        raise ReadError(f"cannot read {uri}: {_error_text(exc)}") from None
