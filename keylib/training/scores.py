"""How a network scores: probabilities at each track's own length as the served model
computes them (:func:`predict_exact`), the MIREX summary of the model card, and the
held-out scores by source and by length."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..features import FRAME_RATE
from ..mirex import calibration_error
from ..serving import calibrate, predict_by_length, temperatures, to_steps, track_seconds

__all__ = ["mirex_summary", "predict_exact", "LENGTH_BUCKETS", "length_bucket", "evaluate_heldout"]


def mirex_summary(refs: Sequence[int], ests: Sequence[int]) -> dict:
    """Weighted MIREX scores under both fifth conventions, category counts and the confusion
    matrix (from :mod:`keylib.mirex`), in the layout the model card uses."""
    from .. import mirex

    refs = [int(r) for r in refs]
    ests = [int(e) for e in ests]
    s = mirex.summarize(refs, ests)
    nan = float("nan")
    return {
        "n": s["n"],
        "ascending_fifths": {"weighted": nan if s["weighted_score"] is None else float(s["weighted_score"]),
                             "categories": s["counts"]},
        "both_fifths": {"weighted": nan if s["weighted_score_both_fifths"] is None else float(s["weighted_score_both_fifths"]),
                        "categories": s["counts_both_fifths"]},
        "accuracy": nan if s["accuracy"] is None else float(s["accuracy"]),
        "confusion": s["confusion"],
        "metric": "keylib.mirex",
    }


def predict_exact(net, chromas: Sequence[np.ndarray], fps: int, *, batch_size: int = 64) -> np.ndarray:
    """Probabilities of a Keras network for each track at its own length, exactly as the
    served model batches them (:func:`keylib.serving.predict_by_length`).

    Parameters
    ----------
    chromas : sequence of np.ndarray, each (rows, n_frames)

    Returns
    -------
    np.ndarray, shape (n, 24)
    """
    return predict_by_length([to_steps(c, fps) for c in chromas],
                             lambda x: np.asarray(net(x, training=False)), batch_size=batch_size)


LENGTH_BUCKETS = (("up to 30 s", 0.0, 30.5), ("30-120 s", 30.5, 120.0), ("whole, over 120 s", 120.0, float("inf")))


def length_bucket(duration_s: float) -> str:
    """The length bucket a track of ``duration_s`` seconds is reported in."""
    for name, lo, hi in LENGTH_BUCKETS:
        if lo <= duration_s < hi:
            return name
    return LENGTH_BUCKETS[-1][0]


def evaluate_heldout(net, df, fps: int, *, calibration: dict | None = None, tonality: dict | None = None) -> dict:
    """MIREX scores of ``df`` overall, by source and by length bucket, the calibration
    error of the calibrated confidence (``calibration``: a card's entry), and the share of
    it the tonality classifier keeps tonal."""
    chromas = list(df["chroma"])
    probs = calibrate(predict_exact(net, chromas, fps), temperatures(track_seconds(chromas), calibration))
    ests = probs.argmax(1)
    refs = np.asarray(df["key_index"])
    out = {"all": mirex_summary(refs, ests), "by_source": {}, "by_length": {}}
    out["calibration"] = calibration_error(probs.max(1), ests == refs)
    if tonality:
        from ..tonality import is_tonal

        out["tonal_kept"] = float(np.mean([is_tonal(c, p, tonality) for c, p in zip(df["chroma"], probs)]))
    seconds = np.array([c.shape[1] / FRAME_RATE for c in df["chroma"]])
    groups = [("by_source", np.asarray(df["source"]))]
    groups.append(("by_length", np.array([length_bucket(x) for x in seconds])))
    for field, labels in groups:
        for label in sorted(set(labels)):
            m = labels == label
            s = mirex_summary(refs[m], ests[m])
            out[field][str(label)] = {k: s[k] for k in ("n", "ascending_fifths", "both_fifths", "accuracy")}
    return out
