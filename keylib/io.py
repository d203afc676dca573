"""Read the bytes of a track from its URI: a local path (or ``file://``) or ``s3://``.

Every failure becomes a :class:`~keylib.errors.TrackError` with a readable message, so
the caller can write an error row and go on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlparse

from .errors import MissingTrackError, ReadError, TooLargeError

__all__ = ["atomic_write_text", "is_s3", "local_path", "read_bytes", "stat_fingerprint"]


def is_s3(uri: str) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or ``file://``).

    A ``file://`` URI is percent-decoded to bytes, so a name that is not valid UTF-8 (listed
    as ``file://`` with its raw bytes percent-encoded) names the same file again.
    """
    if uri.startswith("file://"):
        return Path(os.fsdecode(unquote_to_bytes(urlparse(uri).path)))
    return Path(uri)


def read_bytes(uri: str, *, max_bytes: int, s3_settings: dict | None = None) -> bytes:
    """All bytes of the track at ``uri``.

    Parameters
    ----------
    uri : str
        Local path, ``file://`` URI or ``s3://bucket/key``.
    max_bytes : int
        Larger objects raise :class:`TooLargeError` without being read.
    s3_settings : dict, optional
        The ``[s3]`` configuration section, for ``s3://`` URIs.

    Raises
    ------
    MissingTrackError, TooLargeError, ReadError
    """
    if is_s3(uri):
        from . import s3  # boto3 is imported only where S3 is used

        return s3.read_object(uri, max_bytes=max_bytes, settings=s3_settings or {})
    path = local_path(uri)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingTrackError(f"no such file: {uri}") from None
    except OSError as exc:
        raise ReadError(f"cannot stat {uri}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ReadError(f"is a directory, not an audio file: {uri}")
    _check_size(size, max_bytes, uri)
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError:
        raise MissingTrackError(f"file disappeared before it could be read: {uri}") from None
    except OSError as exc:
        raise ReadError(f"cannot read {uri}: {exc.strerror or exc}") from None


def _check_size(size: int, max_bytes: int, uri: str) -> None:
    if size > max_bytes:
        raise TooLargeError(
            f"file is {size / 2**20:.1f} MiB, above the limit of {max_bytes / 2**20:.0f} MiB "
            f"(audio.max_file_mb): {uri}"
        )


def stat_fingerprint(path: str | os.PathLike) -> tuple[int, str]:
    """``(size, "size:mtime_ns")`` of a local file: cheap change detection on the driver."""
    st = os.stat(path)
    return st.st_size, f"{st.st_size}:{st.st_mtime_ns}"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one
    (hidden temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
