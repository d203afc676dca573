"""THE feature function: a chroma tensor (12 or 24 rows x frames), shared by extraction,
training and ``keylib analyze`` so that there is no train/serve skew.

Each recipe is fixed in code under a name (:data:`FEATURE_VERSIONS`, name -> rows), not in
configuration, because a model is trained on exactly its features and its card names them
(:data:`FEATURE_VERSION` is the shipped model's). ``chroma-stft-11k-5fps-v2``:

1. mono audio at :data:`SAMPLE_RATE` (11,025 Hz: keys live below 2.1 kHz, and a low rate
   makes decoding, resampling and the FFT cheap);
2. magnitude STFT with an 8,192-sample Hann window (0.74 s, 1.35 Hz per bin, enough to
   separate semitones down to C2) and a hop giving :data:`FRAME_RATE` frames a second;
3. tuning estimated from the spectrum (librosa's estimator), so detuned recordings fold
   correctly, and returned on request (``tuning_cents``); where the tuning changes inside
   the track (a medley or DJ mix of recordings tuned apart, a tape that drifts) each
   :data:`TUNING_BLOCK_S` block that departs from the track's tuning by more than
   :data:`TUNING_CHANGE_CENTS` (with a neighbour that agrees) is folded with its own;
4. a chroma filterbank (librosa's Gaussian bumps, centred on the estimated tuning)
   restricted to :data:`FMIN` .. :data:`FMAX`, the band where pitched harmony sits (as in
   Korzeniowski & Widmer's key CNN);
5. log compression ``log1p(100 x / max)``, scaled to 0..1 by the track's maximum, so that
   level does not matter and silence gives zeros, never NaN.

``chroma-stft-11k-5fps-v3`` (24 rows) adds register: rows 0-11 are v2's chroma, rows 12-23
a bass chroma folded from the same STFT with the same filterbank, tuning and block tunings,
restricted to :data:`BASS_FMIN` .. :data:`BASS_FMAX` (C1 .. C3), where a song's bass line
sits. Both bands share one peak in step 5, so the bass keeps its level relative to the
whole: a minor song whose bass dwells on its tonic no longer looks like its relative major.

Steps 2-4 are librosa's (``librosa.stft``, ``librosa.estimate_tuning``,
``librosa.filters.chroma``) written out in numpy with the same float64 operations: the
spectrogram and the filterbank are librosa's bit for bit, the chroma equal within float32
rounding (tests/test_features.py). Written out so that a bank costs the same for every
tuning (it is computed for the band's bins only, in a fraction of a millisecond) and so
that extraction never imports librosa (numba start-up costs seconds in every Python
worker, and its on-disk cache is not safe when several workers compile at once).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "FEATURE_VERSION",
    "FEATURE_VERSION_V2",
    "FEATURE_VERSION_V3",
    "FEATURE_VERSIONS",
    "SAMPLE_RATE",
    "FRAME_RATE",
    "HOP_LENGTH",
    "N_FFT",
    "N_CHROMA",
    "FMIN",
    "FMAX",
    "BASS_FMIN",
    "BASS_FMAX",
    "TUNING_BLOCK_S",
    "TUNING_CHANGE_CENTS",
    "chroma",
    "n_rows",
    "frames_for_duration",
]

FEATURE_VERSION_V2 = "chroma-stft-11k-5fps-v2"
FEATURE_VERSION_V3 = "chroma-stft-11k-5fps-v3"
# The shipped model's features: the default of every function that takes a feature version
# (tests/test_model.py checks that the shipped card names it).
FEATURE_VERSION = FEATURE_VERSION_V2
SAMPLE_RATE = 11025
FRAME_RATE = 5.0
HOP_LENGTH = int(SAMPLE_RATE / FRAME_RATE)  # 2205 samples = 0.2 s
N_FFT = 8192
N_CHROMA = 12
FMIN = 65.4  # C2
FMAX = 2100.0
# The bass band of v3's rows 12-23 (C1 .. C3); tests/test_features.py checks that A1 lights
# them and A5 does not.
BASS_FMIN = 32.7
BASS_FMAX = 130.8
LOG_GAIN = 100.0
# Below this spectral magnitude the track is treated as silent and gets an all-zero tensor.
_SILENCE_FLOOR = 1e-6
_TUNING_FRAMES = 50
# Tuning followed through the track: blocks this long, each estimated from every other
# frame (25 frames: a block's estimate then lands within a cent or two of the track's on
# constant-tuning music). A block departing by more than TUNING_CHANGE_CENTS is folded with
# its own tuning, so a clip 30 cents off in a medley keeps its notes in their bins; smaller
# departures keep the track's tuning, so a track tuned alike throughout gets the same
# tensor as with one tuning. tests/test_features.py checks both (no benchmark measures it).
TUNING_BLOCK_S = 10.0
TUNING_CHANGE_CENTS = 8
_BLOCK_FRAMES = int(TUNING_BLOCK_S * FRAME_RATE)
_BLOCK_STEP = 2


def _bins(fmin: float, fmax: float) -> tuple[int, int]:
    """FFT bins [lo, hi) with fmin <= frequency < fmax."""
    return int(np.ceil(fmin * N_FFT / SAMPLE_RATE)), int(np.ceil(fmax * N_FFT / SAMPLE_RATE))


# The chroma band: v2's 12 rows, v3's rows 0-11, and the bins the tuning is estimated from.
_BAND_BINS = _bins(FMIN, FMAX)
_BASS_BINS = _bins(BASS_FMIN, BASS_FMAX)
# Each feature version's bands, 12 rows each, in row order.
_BANDS = {FEATURE_VERSION_V2: (_BAND_BINS,), FEATURE_VERSION_V3: (_BAND_BINS, _BASS_BINS)}
FEATURE_VERSIONS = {name: N_CHROMA * len(bands) for name, bands in _BANDS.items()}


def frames_for_duration(duration_s: float) -> int:
    """Number of chroma frames for ``duration_s`` seconds of audio (centred frames)."""
    return int(round(duration_s * SAMPLE_RATE)) // HOP_LENGTH + 1


def n_rows(feature_version: str) -> int:
    """Rows of a feature version's chroma tensor (12 or 24).

    Raises
    ------
    ValueError
        for a name not in :data:`FEATURE_VERSIONS`, naming the known ones.
    """
    try:
        return FEATURE_VERSIONS[feature_version]
    except (KeyError, TypeError):
        raise ValueError(f"unknown feature version {feature_version!r}; "
                         f"known: {', '.join(sorted(FEATURE_VERSIONS))}") from None


@lru_cache(maxsize=256)
def _filterbank(tuning_hundredths: int, bins: tuple[int, int] = _BAND_BINS) -> np.ndarray:
    """Chroma filterbank (12, hi - lo) over the FFT bins ``lo .. hi - 1`` of ``bins``.

    The weights of ``librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=t,
    ctroct=5.0, octwidth=None, norm=None)`` on the band's bins, computed with the same
    float64 operations (so the same values, bit for bit), for the band's bins only (~1,500
    for the chroma band): about 0.3 ms for any tuning, where librosa builds the whole bank.
    A tuning is a whole number of hundredths of a semitone (-50 .. 49), so the cache holds
    every bank a process can ever need.
    """
    lo, hi = bins
    # librosa: frequencies = linspace(0, sr, n_fft, endpoint=False)[1:], so bin k is entry k.
    freqs = np.linspace(0, SAMPLE_RATE, N_FFT, endpoint=False)[lo:hi]
    a440 = 440.0 * 2.0 ** ((tuning_hundredths / 100.0) / N_CHROMA)
    semitones = N_CHROMA * np.log2(freqs / (float(a440) / 16))
    # librosa's rows are A-based and rolled by -3 to start at C: our row r is its row r + 3.
    pitch_class = (np.arange(N_CHROMA, dtype="d") + 3) % N_CHROMA
    distance = semitones[np.newaxis, :] - pitch_class[:, np.newaxis]
    half = np.round(float(N_CHROMA) / 2)
    distance = np.remainder(distance + half + 10 * N_CHROMA, N_CHROMA) - half
    # Gaussian bumps; librosa's bump width is max(bin spacing in semitones, 1), which is 1
    # everywhere above 23 Hz at this resolution (so in both bands).
    weights = np.exp(-0.5 * (2 * distance / 1.0) ** 2)
    return np.ascontiguousarray(weights, dtype=np.float32)


def _hann_window() -> np.ndarray:
    """Periodic Hann window of N_FFT samples, float64, computed as
    ``scipy.signal.get_window("hann", N_FFT)`` does (same values, bit for bit)."""
    return 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, N_FFT + 1)[:N_FFT])


_WINDOW = _hann_window()


def _magnitude_spectrogram(y: np.ndarray) -> np.ndarray:
    """``np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True))`` in numpy.

    Zero padding of half a window each side, a float64 FFT of each Hann-windowed frame
    stored as complex64 (as librosa does), its magnitude. Plain numpy, so that extraction
    never imports librosa (seconds of numba start-up in every Python worker).

    Returns
    -------
    np.ndarray, shape (N_FFT // 2 + 1, n_frames), float32
    """
    padded = np.pad(y, N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[: (n_frames - 1) * HOP_LENGTH + 1: HOP_LENGTH]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1).astype(np.complex64)
    return np.abs(spectrum).T


def chroma(y: np.ndarray, *, sr: int = SAMPLE_RATE, return_tuning: bool = False,
           feature_version: str = FEATURE_VERSION):
    """Chroma tensor of a mono signal, and optionally the tuning it was folded with.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``sr`` Hz (float, any level).
    sr : int
        Must equal :data:`SAMPLE_RATE`; :func:`keylib.audio.decode` resamples to it.
    return_tuning : bool
        Also return the tuning estimate the filterbank was built for.
    feature_version : str
        The recipe, one of :data:`FEATURE_VERSIONS` (default: the shipped model's).

    Returns
    -------
    chroma : np.ndarray, shape (n_rows(feature_version), n_frames), float32
        Values in 0..1; in each band of 12 rows, row 0 = C, row 11 = B (v2: 12 rows, the
        chroma band; v3: 24 rows, the chroma band then the bass band, one shared peak);
        ``n_frames = frames_for_duration(len(y) / sr)``. All zeros for silence; never NaN
        or inf.
    tuning_cents : float or None
        Only with ``return_tuning``: the deviation of the recording's reference pitch from
        A440 in cents, a whole number in -50 .. 49 (+30: A4 sounds at 447.7 Hz); ``None``
        for silence, which has no pitch to measure.
    """
    n_rows(feature_version)  # ValueError for an unknown version
    bands = _BANDS[feature_version]
    if sr != SAMPLE_RATE:
        raise ValueError(f"chroma expects audio at {SAMPLE_RATE} Hz, got {sr} Hz")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"chroma expects mono audio of shape (n,), got {y.shape}")
    if not np.all(np.isfinite(y)):
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    spec = _magnitude_spectrogram(y)
    out, tuning_cents = _fold(spec, bands)
    return (out, tuning_cents) if return_tuning else out


def _fold(spec: np.ndarray, bands: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, float | None]:
    """Magnitude spectrogram -> (chroma (12 x len(bands), n_frames) float32, tuning in cents
    or None): each band folded with the same tunings, all scaled by one peak."""
    silent = np.zeros((N_CHROMA * len(bands), spec.shape[1]), dtype=np.float32)
    if float(spec.max(initial=0.0)) < _SILENCE_FLOOR:
        return silent, None
    tuning_hundredths = int(round(_estimate_tuning(spec) * 100))
    tunings = _block_tunings(spec, tuning_hundredths)
    raws = [_fold_band(spec, tunings, tuning_hundredths, bins) for bins in bands]
    raw = raws[0] if len(raws) == 1 else np.concatenate(raws)
    peak = float(raw.max(initial=0.0))
    if peak < _SILENCE_FLOOR:
        return silent, None
    out = np.log1p(LOG_GAIN * raw / peak) / np.log1p(LOG_GAIN)
    return out.astype(np.float32, copy=False), float(tuning_hundredths)


def _fold_band(spec: np.ndarray, tunings: np.ndarray, track_hundredths: int, bins: tuple[int, int]) -> np.ndarray:
    """The band ``bins`` of a magnitude spectrogram folded into 12 pitch classes, each frame
    with its tuning (:func:`_block_tunings`); shape (12, n_frames), float32, not compressed."""
    lo, hi = bins
    if (tunings == track_hundredths).all():
        return _filterbank(track_hundredths, bins) @ spec[lo:hi]
    raw = np.empty((N_CHROMA, spec.shape[1]), dtype=np.float32)
    for tuning in np.unique(tunings):
        frames = tunings == tuning
        raw[:, frames] = _filterbank(int(tuning), bins) @ spec[lo:hi, frames]
    return raw


def _block_tunings(spec: np.ndarray, track_hundredths: int) -> np.ndarray:
    """The tuning to fold each frame with, in hundredths of a semitone (-50 .. 49).

    The track's tuning, except in :data:`TUNING_BLOCK_S` blocks whose own estimate departs
    from it by more than :data:`TUNING_CHANGE_CENTS`. Departures are circular (+49 and -49
    are 2 cents apart, and a block reading one where the track reads the other keeps the
    track's) and smoothed by a median over each block and its two neighbours, so one block
    alone (a drum break, a noisy estimate) never changes its tuning.

    Returns
    -------
    np.ndarray, shape (n_frames,), int
    """
    n = spec.shape[1]
    tunings = np.full(n, track_hundredths, dtype=np.int64)
    n_blocks = n // _BLOCK_FRAMES
    if n_blocks < 2:
        return tunings
    edges = [i * _BLOCK_FRAMES for i in range(n_blocks)] + [n]  # the last block takes the rest
    departures = np.array([
        _circular(int(round(_estimate_tuning(spec[:, a:b:_BLOCK_STEP]) * 100)) - track_hundredths)
        for a, b in zip(edges[:-1], edges[1:])
    ])
    padded = np.pad(departures, 1, mode="edge")
    smoothed = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0).astype(np.int64)
    for (a, b), departure in zip(zip(edges[:-1], edges[1:]), smoothed):
        if abs(departure) > TUNING_CHANGE_CENTS:
            tunings[a:b] = _circular(track_hundredths + departure)
    return tunings


def _circular(hundredths: int) -> int:
    """A tuning or a difference of tunings brought into -50 .. 49 hundredths of a semitone."""
    return (hundredths + 50) % 100 - 50


def _estimate_tuning(spec: np.ndarray) -> float:
    """Tuning deviation in semitones (-0.5 .. 0.5) from a magnitude spectrogram.

    The estimator of ``librosa.estimate_tuning`` (spectral peaks above a tenth of each
    frame's maximum, refined by parabolic interpolation; the louder half votes in a
    histogram of deviations from equal temperament, 0.01 semitone wide), restricted to the
    chroma band. Written out in numpy because librosa's version runs numba gufuncs whose
    on-disk cache is not safe when several Spark workers compile it at once (a fresh
    environment segfaulted that way). Tuning is constant across a recording, so at most
    :data:`_TUNING_FRAMES` evenly spaced frames are used.
    """
    step = max(1, spec.shape[1] // _TUNING_FRAMES)
    frames = spec[:, ::step]
    frame_max = frames.max(axis=0, keepdims=True).astype(np.float64)  # over all bins, as librosa
    # Only the chroma band (plus one neighbour each side for the interpolation) matters.
    lo, hi = _BAND_BINS
    mag = np.asarray(frames[lo - 1:hi + 1], dtype=np.float64)
    if not mag.any():
        return 0.0
    # Parabolic interpolation around every bin (0 where the optimum is beyond a bin away).
    curvature = mag[2:] + mag[:-2] - 2.0 * mag[1:-1]
    slope = 0.5 * (mag[2:] - mag[:-2])
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.where(np.abs(slope) >= np.abs(curvature), 0.0, -slope / curvature)
    shift = np.zeros_like(mag)
    shift[1:-1] = inner
    peak_mag = mag + 0.5 * np.gradient(mag, axis=0) * shift
    # Local maxima of the thresholded spectrum, inside the chroma band.
    gated = mag * (mag > 0.1 * frame_max)
    peaks = np.zeros_like(mag, dtype=bool)
    peaks[1:-1] = (gated[1:-1] > gated[:-2]) & (gated[1:-1] >= gated[2:])
    if not peaks.any():
        return 0.0
    bins, _ = np.nonzero(peaks)
    pitch = (lo - 1 + bins + shift[peaks]) * SAMPLE_RATE / N_FFT
    strength = peak_mag[peaks]
    pitch = pitch[(strength >= np.median(strength)) & (pitch > 0)]
    if pitch.size == 0:
        return 0.0
    residual = np.mod(12.0 * np.log2(pitch / (440.0 / 16.0)), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, np.linspace(-0.5, 0.5, 101))
    return float(edges[np.argmax(counts)])
