"""Find the bytes of a track from its URI: a local path (or ``file://``) or ``s3://``.

Every failure becomes a :class:`~keylib.errors.TrackError` with a readable message, so
the caller can write an error row and go on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlparse

from ..errors import MissingTrackError, ReadError, SpecialFileError, TooLargeError, UnsupportedSourceError

__all__ = ["ListingProgress", "atomic_write_text", "content_hash", "is_remote", "is_url", "local_path", "open_source",
           "stat_fingerprint"]

log = logging.getLogger("keylib")

# Seconds between two "listing ..." progress lines: a catalogue of millions of files or
# objects takes minutes to list, and a nightly run that prints nothing meanwhile looks hung.
LISTING_PROGRESS_S = 30.0


class ListingProgress:
    """Counts what a listing has found and logs the count at most every
    :data:`LISTING_PROGRESS_S` seconds (read when the listing starts)."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self._every = LISTING_PROGRESS_S
        self._next = time.monotonic() + self._every

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now >= self._next:
            log.info("listing %s: %d entries so far", self.what, self.count)
            self._next = now + self._every


def is_remote(uri: str | os.PathLike) -> bool:
    """True for ``s3://`` URIs (object storage), False for local paths: the one test of
    where a track, a listing or an output lives."""
    return str(uri).startswith("s3://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or ``file://``).

    A ``file://`` URI is percent-decoded to bytes, so a name that is not valid UTF-8 (listed
    as ``file://`` with its raw bytes percent-encoded) names the same file again.
    """
    if uri.startswith("file://"):
        return Path(os.fsdecode(unquote_to_bytes(urlparse(uri).path)))
    return Path(uri)


def is_url(uri: str) -> bool:
    """True for a URI with a scheme keylib does not read tracks from (``http(s)://``, ...):
    anything with ``://`` that is neither ``s3://`` nor ``file://``."""
    return "://" in uri and not uri.startswith(("s3://", "file://"))


def open_source(uri: str, *, max_bytes: int, s3_settings: dict | None = None) -> bytes | Path:
    """What the decoder reads for the track at ``uri``: the path of a local regular file
    (checked, not opened), or the bytes of an S3 object.

    Nothing but a regular file is ever opened: a FIFO would block the reader for ever, a
    link to ``/dev/zero`` would never end, a socket or a device has no audio.

    Parameters
    ----------
    uri : str
        Local path, ``file://`` URI or ``s3://bucket/key``.
    max_bytes : int
        Larger files and objects raise :class:`TooLargeError` without being read.
    s3_settings : dict, optional
        The ``[s3]`` configuration section, for ``s3://`` URIs.

    Raises
    ------
    UnsupportedSourceError, MissingTrackError, SpecialFileError, TooLargeError, ReadError
    """
    if is_url(uri):
        scheme = uri.split("://", 1)[0]
        raise UnsupportedSourceError(
            f"keylib does not read {scheme}:// URLs: list the track as a local path or an s3:// URI"
        )
    if is_remote(uri):
        from . import s3  # boto3 is imported only where S3 is used

        return s3.read_object(uri, max_bytes=max_bytes, settings=s3_settings or {})
    path = local_path(uri)
    try:
        mode = path.stat().st_mode  # follows links: a link to /dev/zero is a device
    except FileNotFoundError:
        dangling = path.is_symlink()
        raise MissingTrackError(f"{'dangling symbolic link' if dangling else 'no such file'}: {uri}") from None
    except OSError as exc:
        raise ReadError(f"cannot stat {uri}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SpecialFileError(f"{_file_kind(mode)}, not an audio file (not opened): {uri}")
    _check_size(path.stat().st_size, max_bytes, uri)
    if not os.access(path, os.R_OK):
        raise ReadError(f"cannot read {uri}: permission denied")
    return path


def content_hash(source: bytes | Path) -> str:
    """``sha256:<hex>`` of bytes or of a file's contents (read in blocks)."""
    if isinstance(source, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(source).hexdigest()
    try:
        with open(source, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise MissingTrackError(f"file disappeared before it could be read: {source}") from None
    except OSError as exc:
        raise ReadError(f"cannot read {source}: {exc.strerror or exc}") from None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a regular file"


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
