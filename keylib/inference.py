"""Key inference over chroma rows: the keys/ row (its Spark schema is
:func:`keylib.spark.schemas.keys_schema`).

Pure numpy (:func:`keys_fields`, :func:`predict_records`) with a pandas face
(:func:`predict_frame`, what the Spark workers (:mod:`keylib.spark.workers`) call), shared by
the ``keylib analyze`` command and the tests. Nothing here imports pandas at import time
(:func:`predict_frame` imports it when called) and nothing imports pyspark, so the console
command starts without either: pandas alone took 0.6 of its 0.9 s.

``probs`` order
    The 24 probabilities of every row follow :mod:`keylib.keys` index order:
    0..11 = C major, Db major, D major, Eb major, E major, F major, F# major, G major,
    Ab major, A major, Bb major, B major; 12..23 = C minor, C# minor, D minor, Eb minor,
    E minor, F minor, F# minor, G minor, G# minor, A minor, Bb minor, B minor
    (``keylib.keys.KEY_NAMES[i]`` names entry ``i``).

Statuses
    ``ok``: a key was predicted. ``silent``: the audio is silent, no key. Any other
    extraction status (``decode_error``, ``missing``, ...) is copied with its error and no
    key. ``feature_mismatch``: the chroma was made by another feature version than the
    model expects (re-extract). ``model_error``: prediction itself failed for the batch.

More than a key
    ``confidence`` and ``probs`` are calibrated (the card's temperature at the track's
    length, :func:`keylib.serving.temperatures`, fitted on music the network did not train
    on). ``tonal`` says whether the track has a key at all (:mod:`keylib.tonality`; false
    for noise, drum loops, speech, atonal music).
    ``tuning_cents`` is the recording's reference pitch against A440, from the feature
    code's tuning estimate. ``segments`` are the key's changes over the analysed window
    (:mod:`keylib.segments`); ``key`` stays the track's global key.

Tracks of any length (each at its real length; never crop below 600 s)
    Each track's whole (rows, n_frames) tensor goes to the served model
    (:meth:`keylib.serving.ServedModel.predict_probs`, ONNX Runtime, no TensorFlow):
    frames are averaged into 1-s steps and the network averages its evidence over exactly
    the track's steps (tracks of equal length share one call; nothing is tiled), then the
    card's calibration applies. Only extraction crops: it analyses the central
    ``audio.max_duration_s`` (600 s = 3,001 frames), which bounds a row's size. A 1-frame
    track works.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .errors import STATUS_OK
from .features import n_rows
from .keys import KEY_NAMES, MODES, N_KEYS, camelot, open_key
from .segments import key_segments
from .tonality import is_tonal

__all__ = [
    "KEYS_COLUMNS",
    "KEYS_TABLE",
    "STATUS_FEATURE_MISMATCH",
    "STATUS_MODEL_ERROR",
    "keys_fields",
    "empty_fields",
    "describe_track",
    "predict_records",
    "predict_frame",
]

KEYS_TABLE = "keys"
STATUS_FEATURE_MISMATCH = "feature_mismatch"
STATUS_MODEL_ERROR = "model_error"

# The keys/ table's columns (types: keylib.spark.schemas.keys_schema, checked against
# this list there; meanings: docs/tables.md) with three bookkeeping columns:
# identity and extracted_at of the chroma row the prediction was made from (so that an
# incremental run knows which predictions are stale) and inferred_at (newest row wins).
KEYS_COLUMNS = [
    "track_id", "uri", "key", "tonic", "mode", "confidence", "margin", "probs", "camelot",
    "open_key", "tonal", "tuning_cents", "segments", "model_version", "feature_version", "status", "error",
    "identity", "extracted_at", "inferred_at",
]

# Columns of the chroma/ table that inference reads.
CHROMA_INPUT_COLUMNS = [
    "track_id", "uri", "identity", "n_frames", "offset_s", "tuning_cents", "feature_version", "chroma",
    "status", "error", "extracted_at",
]

_CAMELOT = tuple(camelot(i) for i in range(N_KEYS))
_OPEN_KEY = tuple(open_key(i) for i in range(N_KEYS))


def keys_fields(probs: np.ndarray) -> dict[str, Any]:
    """The key columns of one prediction.

    Parameters
    ----------
    probs : np.ndarray, shape (24,)
        Probabilities in :mod:`keylib.keys` index order.

    Returns
    -------
    dict
        ``key`` (mir_eval spelling), ``tonic`` (0..11, C = 0), ``mode``, ``confidence``
        (top probability), ``margin`` (top minus second), ``probs`` (list of 24 floats),
        ``camelot``, ``open_key``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (N_KEYS,):
        raise ValueError(f"probs must have shape (24,), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf")
    order = np.argsort(-p, kind="stable")
    best, second = int(order[0]), int(order[1])
    return {
        "key": KEY_NAMES[best],
        "tonic": best % 12,
        "mode": MODES[best // 12],
        "confidence": float(p[best]),
        "margin": float(p[best] - p[second]),
        "probs": [float(x) for x in p],
        "camelot": _CAMELOT[best],
        "open_key": _OPEN_KEY[best],
    }


def empty_fields() -> dict[str, Any]:
    """The key columns of a row without a key (failed or silent track)."""
    return dict.fromkeys(("key", "tonic", "mode", "confidence", "margin", "probs", "camelot", "open_key",
                          "tonal", "segments"))


def describe_track(chroma: np.ndarray, probs: np.ndarray, model, *, offset_s: float = 0.0) -> dict[str, Any]:
    """What keylib says about a track beyond its key: ``tonal`` and ``segments``.

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames)
        Of the model's feature version (12 or 24 rows).
    probs : np.ndarray, shape (24,)
        The track's calibrated key probabilities.
    model : keylib.serving.ServedModel
        Its ``predict_probs`` gives the windows' keys; its card's ``tonality`` entry the
        tonality classifier (``tonal`` is None for a model without one).
    offset_s : float
        Start of the analysed window in the track, so segment times are the track's.

    Returns
    -------
    dict
        ``tonal`` (bool or None) and ``segments`` (list of dicts ``start_s``, ``end_s``,
        ``key``, ``confidence``; see :mod:`keylib.segments`).
    """
    params = (getattr(model, "card", None) or {}).get("tonality")
    tonal = is_tonal(chroma, probs, params) if params else None
    return {"tonal": tonal, "segments": key_segments(chroma, model.predict_probs, offset_s=offset_s)}


def predict_frame(chroma_rows, model, *, inferred_at: datetime | None = None):
    """Keys rows for a batch of chroma rows, as a DataFrame (:func:`predict_records`).

    Parameters
    ----------
    chroma_rows : pd.DataFrame
        Rows of the chroma/ table (see :func:`predict_records`).
    model : keylib.serving.ServedModel
    inferred_at : datetime, optional

    Returns
    -------
    pd.DataFrame
        Columns :data:`KEYS_COLUMNS`, one row per input row, same order.
    """
    import pandas as pd

    rows = predict_records(chroma_rows.to_dict("records"), model, inferred_at=inferred_at)
    return pd.DataFrame(rows, columns=KEYS_COLUMNS)


def predict_records(chroma_rows: list[Mapping[str, Any]], model, *,
                    inferred_at: datetime | None = None) -> list[dict[str, Any]]:
    """Keys rows for a batch of chroma rows.

    Parameters
    ----------
    chroma_rows : list of mapping
        Rows of the chroma/ table with at least ``track_id``, ``uri``, ``n_frames``,
        ``feature_version``, ``chroma`` (flat, rows x n_frames row-major, rows those of the
        feature version: :data:`keylib.features.FEATURE_VERSIONS`), ``status`` and
        ``error``; ``identity`` and ``extracted_at`` are carried when present.
    model : keylib.serving.ServedModel
        Anything with ``version``, ``feature_version`` and ``predict_probs(list of
        (rows, n) arrays) -> (n, 24)``. Rows of another feature version than the model's
        get status ``feature_mismatch`` and no key.
    inferred_at : datetime, optional
        Timestamp written to every row (default: now, UTC).

    Returns
    -------
    list of dict
        Keys :data:`KEYS_COLUMNS`, one row per input row, same order. A row keeps its
        extraction status (no key) unless it was ``ok``; a silent track has status
        ``silent`` and no key. Never raises for a bad row.
    """
    inferred_at = inferred_at or datetime.now(timezone.utc)
    out: list[dict[str, Any]] = []
    todo: list[int] = []
    tensors: list[np.ndarray] = []
    offsets: list[float] = []
    for record in chroma_rows:
        row = {
            "track_id": record["track_id"],
            "uri": record.get("uri"),
            **empty_fields(),
            "model_version": model.version,
            "tuning_cents": _none_if_na(record.get("tuning_cents")),
            "feature_version": record.get("feature_version"),
            "status": record.get("status") or "error",
            "error": _none_if_na(record.get("error")),
            "identity": _none_if_na(record.get("identity")),
            "extracted_at": _none_if_na(record.get("extracted_at")),
            "inferred_at": inferred_at,
        }
        out.append(row)
        if row["status"] != STATUS_OK:
            continue  # silent or failed extraction: the row flows through without a key
        if record.get("feature_version") != model.feature_version:
            row["status"] = STATUS_FEATURE_MISMATCH
            row["error"] = (
                f"chroma has feature version {record.get('feature_version')!r} but model "
                f"{model.version} expects {model.feature_version!r}: re-extract this track"
            )
            continue
        try:
            tensors.append(_tensor(record))
            todo.append(len(out) - 1)
            offsets.append(float(_none_if_na(record.get("offset_s")) or 0.0))
        except ValueError as exc:
            row["status"], row["error"] = "error", str(exc)
    if tensors:
        try:
            probs = np.asarray(model.predict_probs(tensors), dtype=np.float64)
            if probs.shape != (len(tensors), N_KEYS):
                raise ValueError(f"model returned shape {probs.shape}, expected ({len(tensors)}, 24)")
        except Exception as exc:  # one bad batch must not kill the job: rows say why
            for i in todo:
                out[i]["status"] = STATUS_MODEL_ERROR
                out[i]["error"] = f"{type(exc).__name__}: {exc}"
        else:
            for i, p, tensor, offset in zip(todo, probs, tensors, offsets):
                try:
                    out[i].update(keys_fields(p))
                    out[i].update(describe_track(tensor, p, model, offset_s=offset))
                except Exception as exc:  # a failing row must not kill the batch: it says why
                    out[i].update(empty_fields())
                    out[i]["status"], out[i]["error"] = STATUS_MODEL_ERROR, f"{type(exc).__name__}: {exc}"
    return out


def _tensor(record: Mapping[str, Any]) -> np.ndarray:
    """The (rows, n_frames) float32 tensor of a chroma row (rows: its ``feature_version``'s),
    or ValueError."""
    flat = record.get("chroma")
    if flat is None or (isinstance(flat, float) and flat != flat):
        raise ValueError("chroma row has status ok but no tensor")
    flat = np.asarray(flat, dtype=np.float32)
    rows = n_rows(record.get("feature_version"))
    n_frames = record.get("n_frames")
    if n_frames is None or n_frames != n_frames or flat.size != rows * int(n_frames) or flat.size == 0:
        raise ValueError(f"chroma tensor of {flat.size} values does not match {rows} x n_frames ({n_frames})")
    return flat.reshape(rows, int(n_frames))


def _none_if_na(value):
    """None for None, NaN, NaT and pandas' NA (without importing pandas); else ``value``."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    try:
        if value != value:  # NaN
            return None
    except (TypeError, ValueError):  # arrays, and values that do not compare
        pass
    return value
