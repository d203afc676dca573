"""Key changes over time: windowed predictions of the key network smoothed by Viterbi.

A track's chroma is cut into overlapping windows (:data:`WINDOW_S` long, every
:data:`HOP_S`), each re-normalised as if it were a track of its own
(:func:`keylib.tensors.crop`), and the same network that names the global key gives each
window its 24 calibrated probabilities. A hidden Markov model over the 24 keys, whose only
parameter is the cost of switching key (:data:`SWITCH_PENALTY`, in nats), turns that
evidence into the most likely key sequence (Viterbi); runs of one key become segments.
A track in one key gets one segment unless its evidence for another key outweighs the
penalty over a stretch of music, so short borrowed chords and cadences in the dominant do
not split it. Each segment's key is then named by the network from the whole segment, and
each change point is placed again from short windows around it (:func:`refine_boundary`:
a 16 s window straddling a change blurs where it is). Pure numpy: the network comes in as
a function.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .features import FRAME_RATE
from .keys import KEY_NAMES, N_KEYS
from .tensors import crop

__all__ = ["WINDOW_S", "HOP_S", "SWITCH_PENALTY", "MIN_SEGMENT_S", "REFINE_WINDOW_S", "REFINE_REACH_S",
           "windows", "viterbi", "refine_boundary", "key_segments"]

WINDOW_S = 16.0
HOP_S = 2.0
# Tuned on two-key medleys of held-out music (bench/segments.py): lower splits one-key
# tracks at passing tonicisations, higher misses short sections. In units of the windows'
# calibrated log-probabilities: 32 was tuned when a 16 s window's temperature was 0.684;
# the length-following calibration of 2026.12-4 gives it 0.830, and 26 (32 * 0.684 / 0.830)
# keeps the decisions of the same network.
SWITCH_PENALTY = 26.0
# Shorter segments join a neighbour: a key is a stretch of music, not a passing chord.
MIN_SEGMENT_S = 12.0
# Placing a change point again: windows this long, every step (1 s), within this reach of
# where Viterbi put it. Short windows see one side of the change only. On 60 two-key
# medleys of held-out music (bench/segments.py) 70% of changes land within 3 s (66.7%
# without this step); in a trial on 40 of them 4-6 s windows placed changes better than
# 8-12 s ones (80% against 72%).
REFINE_WINDOW_S = 5.0
REFINE_REACH_S = 8.0

Predict = Callable[[Sequence[np.ndarray]], np.ndarray]


def windows(chroma: np.ndarray, *, window_s: float = WINDOW_S, hop_s: float = HOP_S
            ) -> tuple[list[np.ndarray], np.ndarray]:
    """Overlapping windows of a chroma tensor and their centre times.

    Parameters
    ----------
    chroma : np.ndarray, shape (12, n_frames)

    Returns
    -------
    parts : list of np.ndarray, each (12, w)
        Each window re-normalised as a track; a track shorter than a window is one window.
    centres : np.ndarray, shape (len(parts),)
        Centre of each window in seconds from the start of the tensor.
    """
    n = chroma.shape[1]
    width = int(round(window_s * FRAME_RATE))
    hop = max(1, int(round(hop_s * FRAME_RATE)))
    if n <= width:
        return [chroma], np.array([n / FRAME_RATE / 2])
    starts = list(range(0, n - width + 1, hop))
    if starts[-1] != n - width:
        starts.append(n - width)  # the last window ends with the track
    parts = [crop(chroma, width, start=s) for s in starts]
    return parts, (np.asarray(starts) + width / 2) / FRAME_RATE


def viterbi(log_probs: np.ndarray, *, switch_penalty: float = SWITCH_PENALTY) -> np.ndarray:
    """Most likely key sequence under a sticky HMM.

    Parameters
    ----------
    log_probs : np.ndarray, shape (n_windows, 24)
        Log-probabilities of each key in each window.
    switch_penalty : float
        Cost of changing key between two windows, in nats (staying costs nothing).

    Returns
    -------
    np.ndarray, shape (n_windows,), int
        Key index per window.
    """
    t_max, k = log_probs.shape
    score = log_probs[0].astype(np.float64).copy()
    back = np.zeros((t_max, k), dtype=np.int64)
    for t in range(1, t_max):
        best_prev = int(np.argmax(score))
        switch = score[best_prev] - switch_penalty
        stay = score >= switch
        back[t] = np.where(stay, np.arange(k), best_prev)
        score = np.where(stay, score, switch) + log_probs[t]
    path = np.zeros(t_max, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(t_max - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def refine_boundary(chroma: np.ndarray, predict: Predict, *, start: int, cut: int, end: int,
                    left_key: int, right_key: int, window_s: float = REFINE_WINDOW_S,
                    reach_s: float = REFINE_REACH_S) -> int:
    """Where between two keys a change lies, from short windows around a first guess.

    Each window (``window_s``, every 1 s, within ``reach_s`` of ``cut``) votes with the
    log-ratio of the two keys' probabilities; the change goes where the windows before it
    favour ``left_key`` and those after it ``right_key`` by the largest total. Windows are
    scored alike whatever their place, so no side gains from being longer (scoring the two
    whole sides would favour the longer, surer one).

    Parameters
    ----------
    chroma : np.ndarray, shape (12, n_frames)
    predict : callable
        As for :func:`key_segments`.
    start, cut, end : int
        Frames: the left segment's start, the change's first guess, the right segment's end.
    left_key, right_key : int
        The two segments' keys (0..23).

    Returns
    -------
    int
        The change, in frames, at least 1 s inside ``(start, end)``.
    """
    width = max(1, int(round(window_s * FRAME_RATE)))
    step = max(1, int(round(FRAME_RATE)))
    lo = max(start, cut - int(round((reach_s + window_s / 2) * FRAME_RATE)))
    hi = min(end, cut + int(round((reach_s + window_s / 2) * FRAME_RATE)))
    starts = np.arange(lo, hi - width + 1, step)
    if len(starts) < 2:
        return cut
    probs = np.asarray(predict([crop(chroma, width, start=int(a)) for a in starts]), dtype=np.float64)
    probs = np.clip(probs, 1e-9, 1.0)
    vote = np.log(probs[:, left_key]) - np.log(probs[:, right_key])  # > 0: the left key's side
    # Splitting after window j: windows < j count for the left key, the others for the right.
    totals = np.concatenate([[0.0], np.cumsum(vote)])
    score = 2 * totals - totals[-1]
    j = int(np.argmax(score))
    centres = starts + width / 2
    edges = np.concatenate([[centres[0] - step / 2], (centres[:-1] + centres[1:]) / 2, [centres[-1] + step / 2]])
    margin = int(FRAME_RATE)
    return int(min(max(int(round(edges[j])), start + margin), end - margin))


def key_segments(chroma: np.ndarray, predict: Predict, *, offset_s: float = 0.0,
                 window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 switch_penalty: float = SWITCH_PENALTY, min_segment_s: float = MIN_SEGMENT_S) -> list[dict]:
    """Segments of one key covering the analysed window, in order.

    Four steps: Viterbi over the windows' keys places the changes; segments shorter than
    ``min_segment_s`` join their longer neighbour; each segment's key comes from the
    network run on the whole segment (re-normalised as a track: more music, a surer key
    than any window), and neighbours that end up in the same key merge; then each change
    is placed again from short windows around it (:func:`refine_boundary`) and the
    segments are named again (key and confidence).

    Parameters
    ----------
    chroma : np.ndarray, shape (12, n_frames)
    predict : callable
        List of (12, w) tensors -> (n, 24) calibrated probabilities (the served model's
        ``predict_probs``).
    offset_s : float
        Where the tensor starts in the track (the analysis window's offset).

    Returns
    -------
    list of dict
        ``start_s``, ``end_s`` (seconds in the track), ``key`` (mir_eval spelling) and
        ``confidence`` (the segment's calibrated probability of that key).
    """
    parts, centres = windows(chroma, window_s=window_s, hop_s=hop_s)
    probs = np.asarray(predict(parts), dtype=np.float64)
    if probs.shape != (len(parts), N_KEYS):
        raise ValueError(f"predict returned shape {probs.shape}, expected ({len(parts)}, 24)")
    path = viterbi(np.log(np.clip(probs, 1e-9, 1.0)), switch_penalty=switch_penalty)
    n = chroma.shape[1]
    # Change points in frames: halfway between the centres of the windows either side.
    cuts = [0] + [int(round((centres[i - 1] + centres[i]) / 2 * FRAME_RATE))
                  for i in range(1, len(path)) if path[i] != path[i - 1]] + [n]
    bounds = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    min_frames = int(min_segment_s * FRAME_RATE)
    while len(bounds) > 1 and min(b - a for a, b in bounds) < min_frames:
        i = min(range(len(bounds)), key=lambda j: bounds[j][1] - bounds[j][0])
        j = i - 1 if i == len(bounds) - 1 or (i > 0 and bounds[i - 1][1] - bounds[i - 1][0]
                                                 >= bounds[i + 1][1] - bounds[i + 1][0]) else i + 1
        lo, hi = sorted((i, j))
        bounds[lo:hi + 1] = [(bounds[lo][0], bounds[hi][1])]
    bounds, keys, seg_probs = _name_segments(chroma, predict, bounds)
    if len(bounds) > 1:
        for i in range(len(bounds) - 1):
            cut = refine_boundary(chroma, predict, start=bounds[i][0], cut=bounds[i][1], end=bounds[i + 1][1],
                                  left_key=int(keys[i]), right_key=int(keys[i + 1]))
            bounds[i], bounds[i + 1] = (bounds[i][0], cut), (cut, bounds[i + 1][1])
        bounds, keys, seg_probs = _name_segments(chroma, predict, bounds)
    return [{
        "start_s": round(offset_s + a / FRAME_RATE, 3),
        "end_s": round(offset_s + b / FRAME_RATE, 3),
        "key": KEY_NAMES[int(k)],
        "confidence": float(p[int(k)]),
    } for (a, b), k, p in zip(bounds, keys, seg_probs)]


def _name_segments(chroma: np.ndarray, predict: Predict, bounds: list[tuple[int, int]]):
    """Each segment's key from the network on the whole segment; neighbours in the same
    key merge (and are named again). Returns bounds, keys (n,) and probabilities (n, 24)."""
    bounds = list(bounds)
    while True:
        seg_probs = np.asarray(predict([crop(chroma, b - a, start=a) for a, b in bounds]), dtype=np.float64)
        keys = seg_probs.argmax(axis=1)
        same = [i for i in range(1, len(bounds)) if keys[i] == keys[i - 1]]
        if not same:
            return bounds, keys, seg_probs
        i = same[0]
        bounds[i - 1:i + 1] = [(bounds[i - 1][0], bounds[i][1])]
