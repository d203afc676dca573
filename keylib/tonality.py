"""An honest "no clear key": is a track tonal at all?

A key network trained on tonal music names a key for anything, noise included. Four
numbers say whether that key means something:

- ``confidence``: the calibrated probability of the global key;
- ``entropy``: of the 24 calibrated probabilities, 0 (one key) .. 1 (all keys alike);
- ``clarity``: the best Pearson correlation of the track's mean pitch-class profile with
  the 24 Krumhansl-Schmuckler key profiles (tonal music correlates well with some key;
  noise, drums, speech and twelve-tone rows spread evenly over the 12 classes);
- ``flatness``: spectral flatness of the mean pitch-class profile (geometric over
  arithmetic mean), near 1 for an even spread.

A logistic regression over them, fitted when the model is trained (tonal validation
music against generated noise, drum loops, speech and twelve-tone rows) and stored in the
model card, gives a score; ``tonal`` is the score above the card's threshold, which is
set so that at least 98% of tonal validation music stays tonal. Pure numpy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .templates import template_scores
from .tensors import linear, pitch_classes

__all__ = ["FEATURES", "tonality_features", "tonal_score", "is_tonal", "fit_tonality"]

FEATURES = ("confidence", "entropy", "clarity", "flatness")


def tonality_features(chroma: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The four tonality features of one track.

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames)
        Any feature version: its full-band rows (:func:`keylib.tensors.pitch_classes`)
        make the profile.
    probs : np.ndarray, shape (24,)
        Calibrated key probabilities.

    Returns
    -------
    np.ndarray, shape (4,)
        In :data:`FEATURES` order.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    entropy = float(-(p * np.log(p)).sum() / np.log(len(p)))
    profile = linear(pitch_classes(chroma)).mean(axis=1)
    clarity = float(template_scores(profile).max())
    flatness = float(np.exp(np.log(profile + 1e-9).mean()) / (profile.mean() + 1e-9))
    return np.array([float(p.max()), entropy, clarity, flatness])


def is_tonal(chroma: np.ndarray, probs: np.ndarray, params: Mapping) -> bool:
    """Whether a track has a key: its :func:`tonal_score` at least the card's ``threshold``.

    ``chroma`` (rows, n_frames) and ``probs`` (24,) as for :func:`tonality_features`;
    ``params`` is a model card's ``tonality`` entry.
    """
    return bool(float(tonal_score(tonality_features(chroma, probs), params)) >= float(params["threshold"]))


def tonal_score(features: np.ndarray, params: Mapping) -> np.ndarray:
    """Probability-like score (0..1) that a track is tonal, from ``(..., 4)`` features
    and the card's ``tonality`` entry (``mean``, ``scale``, ``weights``, ``bias``)."""
    z = (np.asarray(features, dtype=np.float64) - np.asarray(params["mean"])) / np.asarray(params["scale"])
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(params["weights"]) + float(params["bias"]))))


def fit_tonality(tonal: Sequence[np.ndarray], atonal: Sequence[np.ndarray], *,
                 keep_tonal: float = 0.985, l2: float = 1e-2) -> dict:
    """Fit the logistic regression and the threshold; the card's ``tonality`` entry.

    Parameters
    ----------
    tonal, atonal : sequences of np.ndarray, each (4,)
        Features of tonal music and of music without a key.
    keep_tonal : float
        Share of the tonal examples the threshold keeps tonal.

    Returns
    -------
    dict
        ``features``, ``mean``, ``scale``, ``weights``, ``bias``, ``threshold`` and the
        fitted data's ``tonal_kept`` and ``atonal_caught`` shares.
    """
    from scipy.optimize import minimize

    x = np.vstack([np.asarray(tonal), np.asarray(atonal)]).astype(np.float64)
    y = np.concatenate([np.ones(len(tonal)), np.zeros(len(atonal))])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    w_class = np.where(y == 1, 0.5 / max(len(tonal), 1), 0.5 / max(len(atonal), 1))  # balanced

    def loss(theta: np.ndarray) -> float:
        logit = z @ theta[:-1] + theta[-1]
        ll = y * -np.logaddexp(0, -logit) + (1 - y) * -np.logaddexp(0, logit)
        return float(-(w_class * ll).sum() + l2 * (theta[:-1] ** 2).sum())

    theta = minimize(loss, np.zeros(z.shape[1] + 1), method="L-BFGS-B").x
    params = {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
              "weights": theta[:-1].tolist(), "bias": float(theta[-1])}
    scores_t = tonal_score(np.asarray(tonal), params)
    scores_a = tonal_score(np.asarray(atonal), params)
    params["threshold"] = float(np.quantile(scores_t, 1.0 - keep_tonal))
    params["tonal_kept"] = float((scores_t >= params["threshold"]).mean())
    params["atonal_caught"] = float((scores_a < params["threshold"]).mean())
    return params
