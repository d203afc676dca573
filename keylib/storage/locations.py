"""Where an output and its tables are, local or on S3: URIs, run ids, the ``pyarrow``
filesystem and the ``deltalake`` storage options of a location, and the one way a store's
failure becomes a :class:`~keylib.errors.StorageError` (redacted, one line).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ..errors import StorageError
from ..redact import redact
from .io import is_remote

__all__ = [
    "resolve_output", "table_uri", "new_run_id", "filesystem", "local_filesystem", "storage_options",
    "delta_options", "storage_error",
]


def resolve_output(output: str | os.PathLike) -> str:
    """An output root as a URI: ``s3://bucket/prefix`` unchanged (no trailing slash), a
    local path made absolute."""
    text = str(output)
    if is_remote(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = urlparse(text).path
    return str(Path(text).resolve())


def table_uri(output: str | os.PathLike, name: str) -> str:
    """``OUT/<name>`` for a local or ``s3://`` output root."""
    return f"{resolve_output(output)}/{name}"


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261124T200102Z-1a2b3c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _s3_endpoint(settings: Mapping | None) -> str | None:
    settings = settings or {}
    return (settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def _s3_region(settings: Mapping | None) -> str:
    settings = settings or {}
    return (settings.get("region") or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def filesystem(uri: str, s3_settings: Mapping | None = None) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow`` filesystem of ``uri`` and the path of ``uri`` inside it.

    S3 follows the ``[s3]`` settings (``endpoint_url``, ``region``, ``max_attempts``),
    then ``AWS_ENDPOINT_URL``; credentials come from the AWS SDK's usual chain on each
    machine (environment, profile, instance role) and are never passed around.
    """
    uri = str(uri)
    if not is_remote(uri):
        return local_filesystem(), resolve_output(uri)
    settings = s3_settings or {}
    fs = _s3_fs(_s3_endpoint(settings), _s3_region(settings), int(settings.get("max_attempts", 6)))
    return fs, uri[len("s3://"):].rstrip("/")


@lru_cache(maxsize=1)
def local_filesystem() -> pafs.FileSystem:
    """This machine's filesystem (one per process)."""
    return pafs.LocalFileSystem()


@lru_cache(maxsize=8)
def _s3_fs(endpoint: str | None, region: str, max_attempts: int) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(
        region=region,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        connect_timeout=10,
        request_timeout=60,
        **kwargs,
    )


def storage_options(uri: str, s3_settings: Mapping | None = None) -> dict[str, str] | None:
    """``deltalake`` storage options for ``uri``: endpoint, region and the conditional put
    that makes commits atomic on S3. No credentials: delta-rs finds them through the AWS
    chain itself."""
    if not is_remote(uri):
        return None
    settings = s3_settings or {}
    options = {"AWS_REGION": _s3_region(settings), "conditional_put": "etag"}
    endpoint = _s3_endpoint(settings)
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def delta_options(uri: str, s3_settings: Mapping | None) -> dict[str, str] | None:
    """:func:`storage_options` plus bounded retries: a dead endpoint fails a run in
    seconds, not after minutes of back-off."""
    options = storage_options(uri, s3_settings)
    if options is not None:
        options.update(max_retries=str(max(1, int((s3_settings or {}).get("max_attempts", 6)) - 1)),
                       retry_timeout="30s", timeout="60s", connect_timeout="10s")
    return options


def storage_error(what: str, exc: BaseException) -> StorageError:
    """``what`` failed because of ``exc``: one redacted line, the reason cut at 300 characters."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(redact(f"{what}: {type(exc).__name__}: {reason[:300]}"))
