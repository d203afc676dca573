"""Operations on chroma tensors shared by training and serving (pure numpy).

The feature scales each track by its own maximum before a log compression
(:func:`keylib.features.chroma`). A crop of a track (a window for local keys, a training
crop, the excerpt a benchmark scores) must look like the tensor extraction gives for that
stretch of audio alone, so it is re-normalised by its own maximum; the log compression
can be undone and redone exactly (:func:`linear`, :func:`compress`).

Every function takes a tensor of any feature version: (12, n), or (24, n) with a second
band of 12 pitch classes (:data:`keylib.features.FEATURE_VERSIONS`); one peak scales all
rows, as extraction scales them, and :func:`roll_pitch` transposes each band on its own.
"""

from __future__ import annotations

import numpy as np

from .features import FRAME_RATE, LOG_GAIN, N_CHROMA, n_rows

__all__ = ["linear", "compress", "crop", "excerpt", "roll_pitch", "pitch_classes", "check_rows"]

_LOG_NORM = float(np.log1p(LOG_GAIN))


def linear(chroma: np.ndarray) -> np.ndarray:
    """Inverse of the feature's log compression: magnitudes relative to the track's peak.

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n), values 0..1

    Returns
    -------
    np.ndarray, shape (rows, n), float64, values 0..1
    """
    return np.expm1(np.asarray(chroma, dtype=np.float64) * _LOG_NORM) / LOG_GAIN


def compress(magnitudes: np.ndarray) -> np.ndarray:
    """The feature's compression of relative magnitudes: scaled by their one peak over all
    rows (as extraction scales a v3 tensor's two bands), log, 0..1.

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
    chroma : np.ndarray, shape (rows, n)
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


def roll_pitch(chroma: np.ndarray, semitones: int) -> np.ndarray:
    """Transpose a chroma tensor by ``semitones``: each band of 12 pitch-class rows rolled
    on its own (row ``r`` of a band moves to row ``(r + semitones) % 12`` of that band).

    Parameters
    ----------
    chroma : np.ndarray, shape (12 * bands, ...)
        A chroma tensor (rows, n) or profile (rows,) of any feature version.
    semitones : int

    Returns
    -------
    np.ndarray, same shape and dtype
    """
    c = np.asarray(chroma)
    if c.ndim < 1 or c.shape[0] % N_CHROMA or not c.shape[0]:
        raise ValueError(f"chroma rows must be a multiple of {N_CHROMA}, got shape {c.shape}")
    bands = c.reshape((c.shape[0] // N_CHROMA, N_CHROMA) + c.shape[1:])
    return np.roll(bands, int(semitones), axis=1).reshape(c.shape)


def pitch_classes(chroma: np.ndarray) -> np.ndarray:
    """The full-band chroma every feature version starts with: rows 0-11 of a (rows, ...)
    tensor or profile (a v3 tensor's bass band, rows 12-23, left out); what pitch-class
    profiles (key templates, the tonality features) read."""
    return np.asarray(chroma)[:N_CHROMA]


def check_rows(chromas, feature_version: str) -> None:
    """ValueError unless every tensor of ``chromas`` has the rows of ``feature_version``
    (:func:`keylib.features.n_rows`): what a model trained on those features takes."""
    rows = n_rows(feature_version)
    for c in chromas:
        if np.ndim(c) != 2 or np.shape(c)[0] != rows:
            raise ValueError(f"chroma of shape {np.shape(c)} given to a model of features {feature_version!r}, "
                             f"which takes ({rows}, n_frames)")
