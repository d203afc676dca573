"""Which tracks a run must process: new, changed, retryable, or everything with --force.

Pure pandas, so the rule is testable without Spark: a track is skipped when its current
row has the same fingerprint (size + mtime, or ETag + size), the same feature (and model)
version, and a status that a rerun would not change.
"""

from __future__ import annotations

import pandas as pd

from .errors import RETRY_STATUSES

__all__ = ["select_tracks"]


def select_tracks(
    listing: pd.DataFrame,
    previous: pd.DataFrame | None,
    *,
    versions: dict[str, str],
    force: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a catalogue listing into ``(todo, skipped)``.

    Parameters
    ----------
    listing : pd.DataFrame
        Catalogue rows (``track_id``, ``fingerprint``, ...).
    previous : pd.DataFrame or None
        Current rows of earlier runs with ``track_id``, ``fingerprint``, ``status`` and the
        columns named in ``versions``; ``None`` when there is no earlier run.
    versions : dict
        Column name -> the version this run writes (``{"feature_version": "..."}``);
        a row written by another version is redone.
    force : bool
        Redo everything.
    """
    if force or previous is None or previous.empty:
        return listing.copy(), listing.iloc[0:0].copy()
    prev = previous.drop_duplicates("track_id", keep="last").set_index("track_id")
    current = listing["track_id"].map(prev["fingerprint"])
    same = current.notna() & (current == listing["fingerprint"])
    same &= ~listing["track_id"].map(prev["status"]).isin(RETRY_STATUSES)
    for column, version in versions.items():
        same &= listing["track_id"].map(prev[column]) == version
    return listing[~same].copy(), listing[same].copy()
