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
a 16 s window straddling a change blurs where it is). Last, a track the windows hear in
one key is tested for a change they missed (:func:`split_point`): two keys that share most
of their notes (relative, a fifth apart) differ little within 16 s, but the network names
each side of a change from all of it. Pure numpy: the network comes in as a function.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .features import FRAME_RATE
from .keys import KEY_NAMES, N_KEYS
from .tensors import crop

__all__ = ["WINDOW_S", "HOP_S", "SWITCH_PENALTY", "MIN_SEGMENT_S", "REFINE_WINDOW_S", "REFINE_REACH_S",
           "SPLIT_EVIDENCE", "MIN_SPLIT_S", "SPLIT_REACH_S",
           "windows", "viterbi", "refine_boundary", "split_guess", "split_point", "key_segments"]

WINDOW_S = 16.0
HOP_S = 2.0
# The cost of a key change between windows in the Viterbi path, in units of the windows'
# calibrated log-probabilities: lower splits one-key tracks at passing tonicisations, higher
# misses short sections. Measured by bench/segments.py (--penalties compares values: the
# medleys' time-weighted score, one-key tracks kept whole, and with --pop909 POP909's
# modulating songs). 40 keeps more whole pop songs in one segment than 32 did (96% against
# 94% on the held-out renders; 84% measured outside) at the same medley scores.
SWITCH_PENALTY = 40.0
# Shorter segments join a neighbour: a key is a stretch of music, not a passing chord.
MIN_SEGMENT_S = 12.0
# Placing a change point again: windows this long, every step (1 s), within this reach of
# where Viterbi put it. Short windows see one side of the change only. bench/segments.py
# reports the share of the medleys' changes placed within 3 s.
REFINE_WINDOW_S = 5.0
REFINE_REACH_S = 8.0
# Testing a one-key track for a change the windows missed (split_guess, split_point).
# Evidence in nats of the calibrated probabilities, each side weighted by its share of the
# track; sides at least MIN_SPLIT_S long (a section, not a phrase: shorter sides split one
# key in two); cuts every 1 s within SPLIT_REACH_S of the windows' guess. Only a track left
# in one segment is tested (and the windows' guess spares most one-key tracks the network's
# test), so segments between found changes are not split again at passing chords. Measured
# by bench/segments.py (--split-evidence compares values; --from-s and --seed draw other
# medley sets; --pop909 adds POP909's modulating songs).
SPLIT_EVIDENCE = 1.0
MIN_SPLIT_S = 20.0
SPLIT_REACH_S = 6.0

Predict = Callable[[Sequence[np.ndarray]], np.ndarray]


def windows(chroma: np.ndarray, *, window_s: float = WINDOW_S, hop_s: float = HOP_S
            ) -> tuple[list[np.ndarray], np.ndarray]:
    """Overlapping windows of a chroma tensor and their centre times.

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames)

    Returns
    -------
    parts : list of np.ndarray, each (rows, w)
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
    chroma : np.ndarray, shape (rows, n_frames)
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


def split_guess(log_probs: np.ndarray, centres: np.ndarray, *, key: int, n_frames: int,
                min_part_s: float = MIN_SPLIT_S) -> int | None:
    """Where the windows' own evidence best splits a one-key track in two keys.

    For each cut between two windows, each side's mean log-probabilities name a key; the
    cut's evidence is as in :func:`split_point`, from the windows instead of the network
    on each side. Cheap (no network call): it only says where :func:`split_point` looks.

    Parameters
    ----------
    log_probs : np.ndarray, shape (n_windows, 24)
        The windows' log-probabilities.
    centres : np.ndarray, shape (n_windows,)
        Their centres in seconds.
    key : int
        The track's key (0..23).
    n_frames : int
        The track's length in frames.

    Returns
    -------
    int or None
        The cut in frames, or None when no cut leaves two sides of ``min_part_s`` whose
        windows favour different keys.
    """
    if len(log_probs) < 2:
        return None
    totals = np.cumsum(log_probs, axis=0)
    i = np.arange(1, len(log_probs))
    left = totals[i - 1] / i[:, None]
    right = (totals[-1] - totals[i - 1]) / (len(log_probs) - i)[:, None]
    cuts = (centres[i - 1] + centres[i]) / 2 * FRAME_RATE
    gain = _two_key_evidence(left, right, share=cuts / n_frames, key=key)
    part = min_part_s * FRAME_RATE
    gain[(cuts < part) | (cuts > n_frames - part)] = -np.inf
    j = int(np.argmax(gain))
    return int(round(cuts[j])) if np.isfinite(gain[j]) else None


def split_point(chroma: np.ndarray, predict: Predict, *, guess: int, key: int,
                evidence: float = SPLIT_EVIDENCE, min_part_s: float = MIN_SPLIT_S,
                reach_s: float = SPLIT_REACH_S) -> tuple[int, int, int] | None:
    """Where a track heard in one key changes key, if the network hears two keys in it.

    For a cut ``c``, each side is run through the network as a track of its own. If the
    two sides name different keys ``l`` and ``r``, the evidence for the change is each
    side's log-ratio of its own key over the track's ``key``, weighted by the side's
    share of the track (``n`` frames)::

        c / n * log(p_left[l] / p_left[key]) + (n - c) / n * log(p_right[r] / p_right[key])

    Weighting by share keeps a short passage from splitting a long track on the strength
    of its own few seconds. Cuts every 1 s within ``reach_s`` of ``guess``
    (:func:`split_guess`).

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames)
    predict : callable
        As for :func:`key_segments`.
    guess : int
        Where to look, in frames.
    key : int
        The track's key (0..23).
    evidence : float
        The least evidence, in nats, that makes a change.
    min_part_s : float
        The shortest side, in seconds.

    Returns
    -------
    (cut, left_key, right_key) or None
        The change in frames and the two sides' keys, or None when no cut has the
        evidence.
    """
    n, guess = chroma.shape[1], int(round(guess))
    part, step, reach = (int(round(x * FRAME_RATE)) for x in (min_part_s, 1.0, reach_s))
    cuts = [int(c) for c in range(max(part, guess - reach), min(n - part, guess + reach) + 1, max(1, step))]
    if not cuts:
        return None
    sides = [side for c in cuts for side in (crop(chroma, c, start=0), crop(chroma, n - c, start=c))]
    log_p = np.log(np.clip(np.asarray(predict(sides), dtype=np.float64), 1e-9, 1.0))
    left, right = log_p[0::2], log_p[1::2]
    gain = _two_key_evidence(left, right, share=np.asarray(cuts) / n, key=key)
    j = int(np.argmax(gain))
    if not gain[j] >= evidence:
        return None
    return cuts[j], int(left[j].argmax()), int(right[j].argmax())


def _two_key_evidence(left: np.ndarray, right: np.ndarray, *, share: np.ndarray, key: int) -> np.ndarray:
    """Evidence for a change at each cut (see :func:`split_point`), -inf where both sides
    name the same key. ``left``, ``right``: (n_cuts, 24) log-probabilities of each side;
    ``share``: (n_cuts,) the left side's share of the track."""
    gain = share * (left.max(axis=1) - left[:, key]) + (1 - share) * (right.max(axis=1) - right[:, key])
    gain[left.argmax(axis=1) == right.argmax(axis=1)] = -np.inf  # one key both sides: no change
    return gain


def key_segments(chroma: np.ndarray, predict: Predict, *, offset_s: float = 0.0,
                 window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 switch_penalty: float = SWITCH_PENALTY, min_segment_s: float = MIN_SEGMENT_S,
                 split_evidence: float = SPLIT_EVIDENCE) -> list[dict]:
    """Segments of one key covering the analysed window, in order.

    Five steps: Viterbi over the windows' keys places the changes; segments shorter than
    ``min_segment_s`` join their longer neighbour; each segment's key comes from the
    network run on the whole segment (re-normalised as a track: more music, a surer key
    than any window), and neighbours that end up in the same key merge; each change
    is placed again from short windows around it (:func:`refine_boundary`) and the
    segments are named again (key and confidence); a track left in one segment is tested
    for a change the windows missed (:func:`split_guess`, :func:`split_point`).

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames)
    predict : callable
        List of (rows, w) tensors -> (n, 24) calibrated probabilities (the served model's
        ``predict_probs``).
    offset_s : float
        Where the tensor starts in the track (the analysis window's offset).
    switch_penalty, min_segment_s, split_evidence : float
        See :data:`SWITCH_PENALTY`, :data:`MIN_SEGMENT_S` and :func:`split_point`
        (``np.inf``: no such test).

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
    log_probs = np.log(np.clip(probs, 1e-9, 1.0))
    path = viterbi(log_probs, switch_penalty=switch_penalty)
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
    elif np.isfinite(split_evidence):
        guess = split_guess(log_probs, centres, key=int(keys[0]), n_frames=n)
        found = None if guess is None else split_point(chroma, predict, guess=guess, key=int(keys[0]),
                                                       evidence=split_evidence)
        if found is not None:
            bounds, keys, seg_probs = _name_segments(chroma, predict, [(0, found[0]), (found[0], n)])
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
