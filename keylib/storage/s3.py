"""S3 access with boto3: list a prefix on the driver, read objects on the executors.

Each Python worker builds its own client once (:func:`client`, cached per process): clients
are never shipped from the driver. Endpoint, region and credentials follow boto3's usual
chain (environment, ``AWS_ENDPOINT_URL``, profiles, instance roles); ``[s3] endpoint_url``
and ``region`` in ``conf/`` override them for S3-compatible stores. Credentials are never
read from ``conf/`` nor shipped to executors: each node finds its own through the chain.

Throttling and transient errors of each request are retried by botocore's adaptive retry
mode (exponential back-off with jitter, client-side rate limiting); a body stream that
breaks half-way (connection reset, read timeout) is fetched again here, with back-off, up
to ``max_attempts`` times. Error messages name the bucket and key and the S3 error code,
never credentials (:func:`keylib.redact.redact`, also importable from here, scrubs them
from any text that leaves this module).
"""

from __future__ import annotations

import logging
import random
import time
from functools import lru_cache
from typing import Iterable, Mapping

import pandas as pd

from ..audio import AUDIO_EXTENSIONS, extension_of
from ..errors import InputError, MissingTrackError, ReadError, TooLargeError
from ..redact import redact
from .io import ListingProgress

__all__ = ["split_uri", "client", "list_prefix", "head_objects", "read_object", "redact"]

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}

log = logging.getLogger("keylib")


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
        text = f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip(": ")
    else:
        text = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return redact(text)


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


def list_prefix(uri: str, *, settings: Mapping | None = None) -> pd.DataFrame:
    """Audio objects under ``s3://bucket/prefix`` (paginated), as catalogue rows.

    ``track_id`` is the object key, ``fingerprint`` is ``"<ETag>:<size>"``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    rows = []
    try:
        pages = client(settings).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        progress = ListingProgress(redact(uri))
        for page in pages:
            progress.add(len(page.get("Contents", [])))
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
                    "last_modified": obj.get("LastModified"),
                })
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot list s3://{bucket}/{prefix}: {_error_text(exc)}") from None
    columns = ["track_id", "uri", "fingerprint", "size_bytes", "truth_key", "source", "last_modified"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    frame["last_modified"] = pd.to_datetime(frame["last_modified"], utc=True)
    return frame


def head_objects(uris: Iterable[str], *, settings: Mapping | None = None) -> pd.DataFrame:
    """``fingerprint`` and ``size_bytes`` of S3 objects named in a manifest, indexed by URI.

    Every object is the problem of its own track, never of the run: one that does not
    exist (404) is left out (it becomes a ``missing`` row); one that S3 answers with any
    other error (403, say: S3 answers 403 for a missing key to a caller without
    ``s3:ListBucket``), or whose URI names no bucket, gets a row with no fingerprint and
    no size, so the executors' read reports it on that row (a 403 as ``read_error``).
    Those are summed up in one warning.

    Raises
    ------
    InputError
        no answer came at all (endpoint unreachable, no credentials): the run cannot
        list its catalogue.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    rows = {}
    refused = []
    for uri in uris:
        try:
            bucket, key = split_uri(uri)
            head = client(settings).head_object(Bucket=bucket, Key=key)
        except InputError as exc:
            refused.append(str(exc))
            rows[uri] = {"fingerprint": None, "size_bytes": None}
            continue
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                continue
            refused.append(f"{uri}: {_error_text(exc)}")
            rows[uri] = {"fingerprint": None, "size_bytes": None}
            continue
        except BotoCoreError as exc:
            raise InputError(f"cannot read {uri}: {_error_text(exc)}") from None
        size = int(head["ContentLength"])
        rows[uri] = {"fingerprint": f"{head['ETag'].strip(chr(34))}:{size}", "size_bytes": size}
    if refused:
        log.warning("HEAD failed for %d object(s) of the manifest, each reported on its own row (first: %s)",
                    len(refused), redact(refused[0]))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["fingerprint", "size_bytes"])


def read_object(uri: str, *, max_bytes: int, settings: Mapping | None = None) -> bytes:
    """All bytes of an S3 object.

    Each request is retried by botocore (throttling, 5xx, connection errors); a body that
    breaks while streaming is requested again, with exponential back-off and jitter, up to
    ``[s3] max_attempts`` times in all.

    Raises
    ------
    MissingTrackError
        the object does not exist (deleted since listing, say).
    TooLargeError
        it is larger than ``max_bytes`` (not downloaded).
    ReadError
        any other failure once the retries are spent.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    settings = settings or {}
    bucket, key = split_uri(uri)
    attempts = max(1, int(settings.get("max_attempts", 6)))
    for attempt in range(1, attempts + 1):
        try:
            response = client(settings).get_object(Bucket=bucket, Key=key)
            size = int(response.get("ContentLength", 0))
            if size > max_bytes:
                response["Body"].close()
                raise TooLargeError(
                    f"object is {size / 2**20:.1f} MiB, above the limit of {max_bytes / 2**20:.0f} MiB "
                    f"(audio.max_file_mb): {uri}"
                )
            data = response["Body"].read()
            if len(data) != size:
                raise _ShortRead(f"got {len(data)} of {size} bytes")
            return data
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise MissingTrackError(f"object not found (deleted since listing?): {uri}") from None
            # botocore has already retried throttling and 5xx with back-off.
            raise ReadError(f"cannot read {uri}: {_error_text(exc)}") from None
        except (BotoCoreError, _ShortRead, OSError) as exc:
            # A broken stream (ResponseStreamingError, IncompleteRead, reset) is not retried
            # by botocore; connection errors were, so a dead endpoint fails after one more round.
            if attempt == attempts or _is_connection_error(exc):
                raise ReadError(f"cannot read {uri} after {attempt} attempt(s): {_error_text(exc)}") from None
            time.sleep(min(20.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


class _ShortRead(Exception):
    """The body ended before ``ContentLength`` bytes."""


def _is_connection_error(exc: Exception) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError

    # EndpointConnectionError, ConnectTimeoutError...: botocore retried these already.
    return isinstance(exc, BotoConnectionError)
