"""Operations on chroma tensors shared by training and serving (pure numpy).

The feature scales each track by its own maximum before a log compression
(:func:`keylib.features.chroma`). A crop of a track (a window for local keys, a training
crop, the excerpt a benchmark scores) must look like the tensor extraction gives for that
stretch of audio alone, so it is re-normalised by its own maximum; the log compression
can be undone and redone exactly (:func:`linear`, :func:`compress`).
"""

from __future__ import annotations

import numpy as np

from .features import FRAME_RATE, LOG_GAIN

__all__ = ["linear", "compress", "crop", "excerpt"]

_LOG_NORM = float(np.log1p(LOG_GAIN))


def linear(chroma: np.ndarray) -> np.ndarray:
    """Inverse of the feature's log compression: magnitudes relative to the track's peak.

    Parameters
    ----------
    chroma : np.ndarray, shape (12, n), values 0..1

    Returns
    -------
    np.ndarray, shape (12, n), float64, values 0..1
    """
    return np.expm1(np.asarray(chroma, dtype=np.float64) * _LOG_NORM) / LOG_GAIN


def compress(magnitudes: np.ndarray) -> np.ndarray:
    """The feature's compression of relative magnitudes: scaled by their peak, log, 0..1.

    Returns float32 zeros for an all-zero input (silence), never NaN.
    """
    peak = float(np.max(magnitudes, initial=0.0))
    if peak <= 0.0:
        return np.zeros(np.shape(magnitudes), dtype=np.float32)
    return (np.log1p(LOG_GAIN * magnitudes / peak) / _LOG_NORM).astype(np.float32)


def crop(chroma: np.ndarray, frames: int, rng: np.random.Generator | None = None, *,
         start: int | None = None) -> np.ndarray:
    """``frames`` frames of a track (from ``start``, else at random, else the start),
    re-normalised as a track of their own.

    Parameters
    ----------
    chroma : np.ndarray, shape (12, n)
    frames : int
        Clipped to ``n``; the whole track comes back unchanged.
    """
    n = chroma.shape[1]
    frames = max(1, min(int(frames), n))
    if start is None:
        start = int(rng.integers(0, n - frames + 1)) if rng is not None else 0
    start = max(0, min(int(start), n - frames))
    if frames == n:
        return chroma
    return compress(linear(chroma[:, start:start + frames]))


def excerpt(chroma: np.ndarray, *, start_s: float = 15.0, length_s: float = 30.0) -> np.ndarray:
    """The ``length_s`` excerpt from ``start_s`` of a track, as extraction would give for
    that excerpt alone; a shorter track gives its last ``length_s``, or all of it."""
    return crop(chroma, int(length_s * FRAME_RATE), start=int(start_s * FRAME_RATE))
