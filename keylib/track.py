"""Per-track extraction: uri -> bytes -> mono samples -> chroma row.

:func:`extract_track` is the pure function the Spark job maps over a catalogue; it never
raises for a bad track, it returns a row with a ``status`` and a readable ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping


from . import audio, features
from .errors import STATUS_OK, STATUS_SILENT, TrackError
from .storage import io

__all__ = ["CHROMA_COLUMNS", "ExtractSettings", "extract_track", "failed_row", "count_attempts"]

# The chroma/ Parquet contract (see README, "Parquet contracts").
CHROMA_COLUMNS = [
    "track_id", "uri", "fingerprint", "identity", "size_bytes", "duration_s", "offset_s",
    "sample_rate", "source_sample_rate", "hop", "n_frames", "feature_version", "chroma",
    "tuning_cents", "status", "error", "attempts", "truth_key", "source", "extracted_at",
]


@dataclass(frozen=True)
class ExtractSettings:
    """What extraction needs from the configuration (picklable, shipped to workers), and
    the features to compute: ``feature_version``, the served model's (its card's), so a
    model is always served the features it was trained on."""

    max_duration_s: float = 600.0
    min_duration_s: float = 1.0
    max_file_mb: float = 512
    hash_content: bool = True
    s3: Mapping[str, Any] | None = None
    track_timeout_s: float = 120.0
    max_track_memory_mb: float = 1024
    feature_version: str = features.FEATURE_VERSION

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, feature_version: str) -> "ExtractSettings":
        """The configuration's settings, extracting ``feature_version`` (the served model's:
        :func:`keylib.spark.flows.extract.served_feature_version`)."""
        return cls(
            feature_version=feature_version,
            max_duration_s=config["audio"]["max_duration_s"],
            min_duration_s=config["audio"]["min_duration_s"],
            max_file_mb=config["audio"]["max_file_mb"],
            hash_content=config["extract"]["hash_content"],
            s3=dict(config["s3"]),
            track_timeout_s=config["audio"]["track_timeout_s"],
            max_track_memory_mb=config["audio"]["max_track_memory_mb"],
        )


def extract_track(track: Mapping[str, Any], *, settings: ExtractSettings) -> dict[str, Any]:
    """Chroma row of one catalogue row (``track_id``, ``uri``, ``fingerprint``, ...).

    Returns
    -------
    dict
        Keys :data:`CHROMA_COLUMNS`; ``chroma`` is the (rows, n_frames) tensor of
        ``settings.feature_version`` (its ``feature_version`` column; 12 or 24 rows) flattened
        row-major as float32, ``None`` when the track failed; ``tuning_cents`` is the
        reference pitch's deviation from A440 that the chroma was folded with (``None``
        for silence and failures).
    """
    row = _empty_row(track, settings)
    try:
        ext = audio.extension_of(track["uri"])
        if not io.is_url(track["uri"]):
            audio.check_format(ext)  # before any byte is read
        source = io.open_source(
            track["uri"], max_bytes=int(settings.max_file_mb * 2**20), s3_settings=dict(settings.s3 or {})
        )
        row["size_bytes"] = len(source) if isinstance(source, bytes) else source.stat().st_size
        row["identity"] = io.content_hash(source) if settings.hash_content else f"stat:{track.get('fingerprint')}"
        decoded = audio.decode(
            source,
            ext=ext,
            max_duration_s=settings.max_duration_s,
            min_duration_s=settings.min_duration_s,
        )
        del source
        tensor, tuning_cents = features.chroma(decoded.samples, return_tuning=True,
                                               feature_version=settings.feature_version)
        row.update(
            duration_s=decoded.duration_s,
            offset_s=decoded.offset_s,
            source_sample_rate=decoded.source_sample_rate,
            n_frames=int(tensor.shape[1]),
            chroma=tensor.reshape(-1),
            tuning_cents=tuning_cents,
        )
        if audio.is_silent(decoded.samples):
            row["status"] = STATUS_SILENT
            row["tuning_cents"] = None  # no pitch to measure
            row["error"] = "no audible signal (peak level below -60 dBFS): no key to find"
    except TrackError as exc:
        row["status"], row["error"] = exc.status, str(exc)
    except Exception as exc:  # a bug or a library failure must not stop the batch either
        row["status"], row["error"] = "error", f"{type(exc).__name__}: {exc}"
    return _finish(row, track)


def failed_row(track: Mapping[str, Any], error: TrackError, settings: ExtractSettings) -> dict[str, Any]:
    """The chroma row of a track whose extraction never returned (the process working on it
    crashed or ran out of time: :class:`~keylib.sandbox.TrackSandbox`)."""
    row = _empty_row(track, settings)
    row["status"], row["error"] = error.status, str(error)
    return _finish(row, track)


def count_attempts(status: str, track: Mapping[str, Any]) -> int:
    """How many runs in a row have given this track ``status``: one more than before when
    its previous row (same file) had the same status, else 1.

    ``track`` carries ``previous_status`` and ``previous_attempts`` when the catalogue row
    is unchanged since that row (:func:`keylib.incremental.select_tracks`).
    """
    previous = track.get("previous_attempts")
    if track.get("previous_status") == status and previous is not None and previous == previous:
        return int(previous) + 1
    return 1


def _empty_row(track: Mapping[str, Any], settings: ExtractSettings) -> dict[str, Any]:
    return {
        "track_id": track["track_id"],
        "uri": track["uri"],
        "fingerprint": track.get("fingerprint"),
        "identity": None,
        "size_bytes": _int_or_none(track.get("size_bytes")),
        "duration_s": None,
        "offset_s": None,
        "sample_rate": features.SAMPLE_RATE,
        "source_sample_rate": None,
        "hop": features.HOP_LENGTH,
        "n_frames": None,
        "feature_version": settings.feature_version,
        "chroma": None,
        "tuning_cents": None,
        "status": STATUS_OK,
        "error": None,
        "attempts": None,
        "truth_key": track.get("truth_key"),
        "source": track.get("source"),
        "extracted_at": None,
    }


def _finish(row: dict[str, Any], track: Mapping[str, Any]) -> dict[str, Any]:
    row["attempts"] = count_attempts(row["status"], track)
    row["extracted_at"] = datetime.now(timezone.utc)
    return row


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value != value else int(value)
    except (TypeError, ValueError):
        return None
