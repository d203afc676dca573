"""Template (key-profile) baselines on chroma: Krumhansl-Schmuckler and Temperley.

A track's chroma is averaged over time into a 12-bin profile, which is correlated
(Pearson) with each of the 24 rotated key profiles. Used by ``bench/accuracy.py`` as the
baseline the CNN must beat, and by the tests to check that generated audio is in its
labelled key.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PROFILES", "template_scores", "template_key"]

# Krumhansl & Kessler (1982) probe-tone ratings.
KRUMHANSL_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
# Temperley (1999, "What's key for key?") profiles.
TEMPERLEY_MAJOR = (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
TEMPERLEY_MINOR = (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)

PROFILES = {
    "krumhansl": (KRUMHANSL_MAJOR, KRUMHANSL_MINOR),
    "temperley": (TEMPERLEY_MAJOR, TEMPERLEY_MINOR),
}


def _key_matrix(profile: str) -> np.ndarray:
    """(24, 12) z-scored templates in keylib key order (majors C..B, then minors C..B)."""
    major, minor = (np.asarray(p, dtype=np.float64) for p in PROFILES[profile])
    rows = [np.roll(major, t) for t in range(12)] + [np.roll(minor, t) for t in range(12)]
    m = np.asarray(rows)
    m = m - m.mean(axis=1, keepdims=True)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def template_scores(chroma_or_profile: np.ndarray, *, profile: str = "krumhansl") -> np.ndarray:
    """Pearson correlation (24,) of the track's pitch-class profile with each key template.

    ``chroma_or_profile``: a (12, n_frames) chroma tensor (averaged over time) or a (12,) profile.
    A flat or silent profile gives all zeros.
    """
    x = np.asarray(chroma_or_profile, dtype=np.float64)
    if x.ndim == 2:
        if x.shape[0] != 12:
            raise ValueError(f"chroma must have 12 rows, got shape {x.shape}")
        x = x.mean(axis=1)
    if x.shape != (12,):
        raise ValueError(f"expected a (12,) profile or (12, n) chroma, got shape {x.shape}")
    x = np.nan_to_num(x - x.mean())
    norm = np.linalg.norm(x)
    if norm < 1e-12:
        return np.zeros(24)
    return _key_matrix(profile) @ (x / norm)


def template_key(chroma_or_profile: np.ndarray, *, profile: str = "krumhansl") -> int:
    """Index (0..23) of the best-correlated key."""
    return int(np.argmax(template_scores(chroma_or_profile, profile=profile)))
