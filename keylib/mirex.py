"""The MIREX key-estimation metric: weighted score, error categories, confusion matrix.

Weights (MIREX wiki): 1 same key, 0.5 perfect fifth, 0.3 relative, 0.2 parallel, 0 other.

The wiki does not say which direction the fifth goes. Two conventions are reported:

* ``descending_fifths=False`` (the default): only an estimate a perfect fifth *above* the
  reference (same mode, tonic + 7 semitones) counts as a fifth, as the original MIREX (NEMA)
  evaluator and ``mir_eval.key.weighted_score`` 0.8.2 do. This agrees with mir_eval on all
  576 ordered key pairs (tested).
* ``descending_fifths=True``: an estimate a fifth above *or below* (tonic - 7 = + 5
  semitones, same mode) counts, as madmom's evaluation and mir_eval's main branch
  (``allow_descending_fifths``) do.

Keys are the indices of :mod:`keylib.keys` (0..11 major C..B, 12..23 minor C..B). This
module is pure numpy: no Spark, no mir_eval (mir_eval is used only by the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .keys import KEY_NAMES, N_KEYS

__all__ = [
    "calibration_error",
    "CATEGORIES",
    "WEIGHTS",
    "category",
    "ERROR_KINDS",
    "error_kind",
    "weighted_score",
    "score_matrix",
    "confusion_matrix",
    "summarize",
]

CATEGORIES: tuple[str, ...] = ("correct", "fifth", "relative", "parallel", "other")
WEIGHTS: dict[str, float] = {
    "correct": 1.0,
    "fifth": 0.5,
    "relative": 0.3,
    "parallel": 0.2,
    "other": 0.0,
}


def _validate_index(value, name: str) -> int:
    """An int key index in 0..23, or a clear error (like mir_eval's ``validate``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer key index 0..23, got {type(value).__name__}: {value!r}")
    if not 0 <= int(value) < N_KEYS:
        raise ValueError(f"{name} must be a key index in 0..23, got {int(value)}")
    return int(value)


def category(ref_index: int, est_index: int, *, descending_fifths: bool = False) -> str:
    """Relationship of an estimated key to the reference key.

    Parameters
    ----------
    ref_index, est_index : int
        Key indices 0..23 (:mod:`keylib.keys` order).
    descending_fifths : bool
        Also count an estimate a perfect fifth *below* the reference as ``"fifth"``.

    Returns
    -------
    str
        One of ``"correct"``, ``"fifth"``, ``"relative"``, ``"parallel"``, ``"other"``.

    Raises
    ------
    TypeError, ValueError
        when an index is not an integer in 0..23.
    """
    ref = _validate_index(ref_index, "ref_index")
    est = _validate_index(est_index, "est_index")
    if ref == est:
        return "correct"
    ref_tonic, ref_minor = ref % 12, ref >= 12
    est_tonic, est_minor = est % 12, est >= 12
    interval = (est_tonic - ref_tonic) % 12
    if ref_minor == est_minor:
        if interval == 7 or (descending_fifths and interval == 5):
            return "fifth"
        return "other"
    # Different modes from here on.
    if not ref_minor and interval == 9:  # C major -> A minor
        return "relative"
    if ref_minor and interval == 3:  # A minor -> C major
        return "relative"
    if interval == 0:
        return "parallel"
    return "other"


ERROR_KINDS: tuple[str, ...] = ("fifth_above", "fifth_below", "relative", "parallel", "other")


def error_kind(ref_index: int, est_index: int) -> str:
    """:func:`category` with the fifth above (the dominant) and below (the subdominant) told
    apart: ``"correct"`` or one of :data:`ERROR_KINDS`. Which of the two a model errs towards
    is what the two conventions disagree on.

    Raises
    ------
    TypeError, ValueError
        as :func:`category`.
    """
    up = category(ref_index, est_index)
    if up == "fifth":
        return "fifth_above"
    if up == "other" and category(ref_index, est_index, descending_fifths=True) == "fifth":
        return "fifth_below"
    return up


def weighted_score(ref_index: int, est_index: int, *, descending_fifths: bool = False) -> float:
    """MIREX weighted score of one estimate: 1, 0.5, 0.3, 0.2 or 0.

    Parameters
    ----------
    ref_index, est_index : int
        Key indices 0..23 (:mod:`keylib.keys` order).
    descending_fifths : bool
        ``False``: fifth above only (MIREX/NEMA, mir_eval 0.8.2). ``True``: above or below.

    Returns
    -------
    float
    """
    return WEIGHTS[category(ref_index, est_index, descending_fifths=descending_fifths)]


def score_matrix(*, descending_fifths: bool = False) -> np.ndarray:
    """Weighted score of every (reference, estimate) pair.

    Returns
    -------
    np.ndarray, shape (24, 24), float64
        ``out[ref, est]``.
    """
    return np.array(
        [
            [weighted_score(r, e, descending_fifths=descending_fifths) for e in range(N_KEYS)]
            for r in range(N_KEYS)
        ]
    )


def _as_indices(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer key indices 0..23, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= N_KEYS)
    if bad.any():
        raise ValueError(f"{name} holds values outside 0..23: {sorted(set(arr[bad].tolist()))[:5]}")
    return arr


def confusion_matrix(refs: Sequence[int], ests: Sequence[int]) -> np.ndarray:
    """Counts of (reference, estimate) pairs.

    Parameters
    ----------
    refs, ests : sequence of int, shape (n,)
        Key indices 0..23.

    Returns
    -------
    np.ndarray, shape (24, 24), int64
        ``out[ref, est]`` = number of tracks with that reference and estimate; rows are the
        reference keys in :mod:`keylib.keys` order.
    """
    r = _as_indices(refs, "refs")
    e = _as_indices(ests, "ests")
    if r.shape != e.shape:
        raise ValueError(f"refs and ests must have the same length, got {r.size} and {e.size}")
    out = np.zeros((N_KEYS, N_KEYS), dtype=np.int64)
    np.add.at(out, (r, e), 1)
    return out


def summarize(refs: Sequence[int], ests: Sequence[int]) -> dict:
    """MIREX summary of a set of estimates under both fifth conventions.

    Parameters
    ----------
    refs, ests : sequence of int, shape (n,)
        Reference and estimated key indices 0..23, aligned.

    Returns
    -------
    dict
        JSON-ready::

            n                      number of scored pairs
            accuracy               share of exact matches
            weighted_score         mean score, fifth above only (MIREX/NEMA, mir_eval 0.8.2)
            weighted_score_both_fifths   mean score, fifth above or below
            counts                 {category: count}, fifth above only
            counts_both_fifths     {category: count}, fifth above or below
            shares                 {category: share}, fifth above only
            confusion              24 x 24 list of lists, [ref][est] counts
            key_names              the 24 key names in index order (rows/columns)

        Scores and accuracy are ``None`` when ``n == 0``.
    """
    r = _as_indices(refs, "refs")
    e = _as_indices(ests, "ests")
    if r.shape != e.shape:
        raise ValueError(f"refs and ests must have the same length, got {r.size} and {e.size}")
    n = int(r.size)
    up = [category(int(a), int(b)) for a, b in zip(r, e)]
    both = [category(int(a), int(b), descending_fifths=True) for a, b in zip(r, e)]
    counts = {c: up.count(c) for c in CATEGORIES}
    counts_both = {c: both.count(c) for c in CATEGORIES}

    def mean_score(cats: list[str]) -> float | None:
        return float(sum(WEIGHTS[c] for c in cats) / n) if n else None

    return {
        "n": n,
        "accuracy": (counts["correct"] / n) if n else None,
        "weighted_score": mean_score(up),
        "weighted_score_both_fifths": mean_score(both),
        "counts": counts,
        "counts_both_fifths": counts_both,
        "shares": {c: (counts[c] / n if n else None) for c in CATEGORIES},
        "confusion": confusion_matrix(r, e).tolist(),
        "key_names": list(KEY_NAMES),
    }


def calibration_error(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> dict:
    """Expected calibration error over ``n_bins`` equal-width bins of confidence.

    Returns
    -------
    dict
        ``ece`` and per bin ``lo``, ``hi``, ``n``, ``confidence`` (mean), ``accuracy``.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        conf = float(confidence[m].mean()) if n else None
        acc = float(correct[m].mean()) if n else None
        if n:
            ece += n / max(len(confidence), 1) * abs(acc - conf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "n": int(len(confidence)), "bins": bins}
