"""The small exception hierarchy of keylib.

Every per-track failure maps to a ``status`` string that lands in the Parquet rows, so a
batch never stops on one bad track: the code that processes a track catches
:class:`TrackError` and writes ``status`` and ``str(error)`` into the row.
"""

from __future__ import annotations

__all__ = [
    "KeylibError",
    "ConfigError",
    "InputError",
    "TrackError",
    "MissingTrackError",
    "ReadError",
    "EmptyFileError",
    "TooLargeError",
    "UnsupportedFormatError",
    "DecodeError",
    "TooShortError",
    "ModelError",
    "StorageError",
    "OutputBusyError",
    "SpecialFileError",
    "UnsupportedSourceError",
    "TrackTimeoutError",
    "TrackCrashedError",
    "STATUS_OK",
    "STATUS_SILENT",
    "RETRY_STATUSES",
]

STATUS_OK = "ok"
# Silence is not an error: the tensor is valid (all zeros) but carries no key.
STATUS_SILENT = "silent"


class KeylibError(Exception):
    """Base class of every error keylib raises on purpose."""


class ConfigError(KeylibError):
    """A configuration file or a command-line flag is invalid."""


class InputError(KeylibError):
    """The catalogue input (folder, manifest, S3 prefix) cannot be listed at all."""


class StorageError(KeylibError):
    """An output table or file cannot be read or written (store unreachable, commit
    refused); nothing of the run in progress became visible."""


class OutputBusyError(KeylibError):
    """Another run holds the output's lease (one run at a time per output); this run
    wrote nothing."""


class ModelError(KeylibError):
    """A model file or model card is missing or does not fit the features."""


class TrackError(KeylibError):
    """One track cannot be processed; the batch goes on.

    Subclasses set :attr:`status`, the machine-readable value written to the ``status``
    column; the message is the human-readable ``error`` column.
    """

    status = "error"


class MissingTrackError(TrackError):
    """The path or object named by the catalogue does not exist (any more)."""

    status = "missing"


class ReadError(TrackError):
    """The bytes could not be read (permissions, network, throttling after retries)."""

    status = "read_error"


class EmptyFileError(TrackError):
    """The file has zero bytes."""

    status = "empty"


class TooLargeError(TrackError):
    """The file is larger than the configured ``max_file_mb``."""

    status = "too_large"


class UnsupportedFormatError(TrackError):
    """The file extension is not one keylib decodes."""

    status = "unsupported_format"


class DecodeError(TrackError):
    """The bytes are not decodable audio (corrupt, truncated, not audio at all)."""

    status = "decode_error"


class TooShortError(TrackError):
    """The decoded audio is shorter than the configured ``min_duration_s``."""

    status = "too_short"


class SpecialFileError(TrackError):
    """The path is a FIFO, a device, a socket or a directory: never opened."""

    status = "not_a_file"


class UnsupportedSourceError(TrackError):
    """A URI scheme keylib does not read (``http://``, ``https://``, ...)."""

    status = "unsupported_source"


class TrackTimeoutError(TrackError):
    """Reading and decoding the track took longer than ``audio.track_timeout_s``."""

    status = "timeout"


class TrackCrashedError(TrackError):
    """The process working on the track died (killed by a signal, out of memory, a
    decoder crash) or outgrew ``audio.max_track_memory_mb``."""

    status = "crashed"


# Failures worth retrying on the next run even if the file did not change: they
# depend on the world (network, permissions, a file that may appear), not on the bytes.
# A crash or a timeout may come from the machine's load; a track that fails the same
# way on ``nightly.max_attempts`` runs in a row is no longer retried (--force retries it).
RETRY_STATUSES = frozenset({MissingTrackError.status, ReadError.status, TrackTimeoutError.status,
                            TrackCrashedError.status, "error"})
