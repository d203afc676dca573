"""Per-track extraction: uri -> bytes -> mono samples -> chroma row.

:func:`extract_track` is the pure function the Spark job maps over a catalogue; it never
raises for a bad track, it returns a row with a ``status`` and a readable ``error``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping


from . import audio, features, io
from .errors import STATUS_OK, STATUS_SILENT, TrackError

__all__ = ["CHROMA_COLUMNS", "ExtractSettings", "extract_track"]

# The chroma/ Parquet contract (see README, "Parquet contracts").
CHROMA_COLUMNS = [
    "track_id", "uri", "fingerprint", "identity", "size_bytes", "duration_s", "offset_s",
    "sample_rate", "source_sample_rate", "hop", "n_frames", "feature_version", "chroma",
    "tuning_cents", "status", "error", "truth_key", "source", "extracted_at",
]


@dataclass(frozen=True)
class ExtractSettings:
    """What extraction needs from the configuration (picklable, shipped to workers)."""

    max_duration_s: float = 600.0
    min_duration_s: float = 1.0
    max_file_mb: float = 512
    hash_content: bool = True
    s3: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExtractSettings":
        return cls(
            max_duration_s=config["audio"]["max_duration_s"],
            min_duration_s=config["audio"]["min_duration_s"],
            max_file_mb=config["audio"]["max_file_mb"],
            hash_content=config["extract"]["hash_content"],
            s3=dict(config["s3"]),
        )


def extract_track(track: Mapping[str, Any], *, settings: ExtractSettings) -> dict[str, Any]:
    """Chroma row of one catalogue row (``track_id``, ``uri``, ``fingerprint``, ...).

    Returns
    -------
    dict
        Keys :data:`CHROMA_COLUMNS`; ``chroma`` is the (12, n_frames) tensor flattened
        row-major as float32, ``None`` when the track failed; ``tuning_cents`` is the
        reference pitch's deviation from A440 that the chroma was folded with (``None``
        for silence and failures).
    """
    row: dict[str, Any] = {
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
        "feature_version": features.FEATURE_VERSION,
        "chroma": None,
        "tuning_cents": None,
        "status": STATUS_OK,
        "error": None,
        "truth_key": track.get("truth_key"),
        "source": track.get("source"),
        "extracted_at": None,
    }
    try:
        data = io.read_bytes(
            track["uri"], max_bytes=int(settings.max_file_mb * 2**20), s3_settings=dict(settings.s3 or {})
        )
        row["size_bytes"] = len(data)
        row["identity"] = (
            "sha256:" + hashlib.sha256(data).hexdigest() if settings.hash_content
            else f"stat:{track.get('fingerprint')}"
        )
        decoded = audio.decode(
            data,
            ext=audio.extension_of(track["uri"]),
            max_duration_s=settings.max_duration_s,
            min_duration_s=settings.min_duration_s,
        )
        del data
        tensor, tuning_cents = features.chroma(decoded.samples, return_tuning=True)
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
    row["extracted_at"] = datetime.now(timezone.utc)
    return row


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value != value else int(value)
    except (TypeError, ValueError):
        return None
