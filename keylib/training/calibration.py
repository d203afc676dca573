"""What is fitted on the validation split once a network is trained, for its card: the
length-dependent softmax temperature (:func:`fit_calibration`) and the tonality classifier
(:func:`fit_card_tonality`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..keys import N_KEYS
from ..serving import CALIBRATION_RANGE_S, REFERENCE_S, calibrate, temperatures, track_seconds
from .scores import predict_exact

__all__ = ["fit_calibration", "fit_card_tonality"]


def fit_calibration(probs: np.ndarray, refs: Sequence[int], seconds: Sequence[float], *,
                    reference_s: float = REFERENCE_S) -> dict:
    """The length-dependent temperature that minimises the negative log-likelihood of ``refs``.

    Parameters
    ----------
    probs : np.ndarray, shape (n, 24)
        Uncalibrated network probabilities.
    refs : sequence of int, shape (n,)
        True key indices.
    seconds : sequence of float, shape (n,)
        Each track's length; the temperature is ``T * (seconds / reference_s) ** g``
        (:func:`keylib.serving.temperatures`).
    reference_s : float
        The length ``T`` applies to.

    Returns
    -------
    dict
        ``temperature`` (T, 0.05..20), ``duration_exponent`` (g, -1..1) and ``reference_s``:
        a model card's ``calibration`` entry. ``g`` is 0 when the tracks' lengths (within
        5-600 s) span less than a factor of 2: there they cannot tell T from g, and a
        slope fitted on noise would be extrapolated to every other length.

    Raises
    ------
    ValueError
        when the shapes disagree or there are no tracks.
    """
    from scipy.optimize import minimize, minimize_scalar

    refs = np.asarray(refs, dtype=int)
    probs = np.asarray(probs)
    seconds = np.clip(np.asarray(seconds, dtype=np.float64), *CALIBRATION_RANGE_S)
    if not len(refs) or probs.shape != (len(refs), N_KEYS) or seconds.shape != refs.shape:
        raise ValueError(f"fit_calibration needs (n, 24) probs, n refs and n lengths with n > 0; got "
                         f"{probs.shape}, {refs.shape}, {seconds.shape}")
    rows = np.arange(len(refs))

    def entry(theta) -> dict:
        return {"temperature": float(np.exp(theta[0])), "duration_exponent": float(theta[1]),
                "reference_s": float(reference_s)}

    def nll(theta) -> float:
        p = calibrate(probs, temperatures(seconds, entry(theta)))
        return float(-np.mean(np.log(p[rows, refs] + 1e-12)))

    bounds = [(np.log(0.05), np.log(20.0)), (-1.0, 1.0)]
    if seconds.max() < 2 * seconds.min():
        res = minimize_scalar(lambda log_t: nll((log_t, 0.0)), bounds=bounds[0], method="bounded")
        return entry((res.x, 0.0))
    # Nelder-Mead: calibrate() works in float32, too coarse for finite-difference gradients.
    res = minimize(nll, np.zeros(2), method="Nelder-Mead", bounds=bounds, options={"xatol": 1e-4, "fatol": 1e-7})
    return entry(res.x)


def fit_card_tonality(net, fps: int, val_sets: dict, val_raw: dict, atonal_df, calibration: dict) -> dict:
    """The tonality classifier: tonal validation music (whole and excerpts; ``val_raw`` their
    uncalibrated probabilities) against the generated atonal clips, on calibrated probabilities."""
    from ..tonality import fit_tonality, tonality_features

    def feats(chromas, raw):
        probs = calibrate(raw, temperatures(track_seconds(chromas), calibration))
        return [tonality_features(c, p) for c, p in zip(chromas, probs)]

    tonal = [f for name, data in val_sets.items() for f in feats(data, val_raw[name])]
    atonal_chromas = list(atonal_df["chroma"])
    atonal = feats(atonal_chromas, predict_exact(net, atonal_chromas, fps))
    params = fit_tonality(tonal, atonal)
    params["fitted_on"] = (f"{len(tonal)} validation tracks (whole and 30 s excerpts) against "
                           f"{len(atonal)} atonal clips ({', '.join(sorted(set(atonal_df['source'])))})")
    return params
