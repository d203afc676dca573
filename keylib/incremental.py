"""Which tracks a run must process: new, changed, retryable, or everything with --force.

Pure pandas, so the rule is testable without Spark: a track is skipped when its current
row has the same fingerprint (size + mtime, or ETag + size), the same feature (and model)
version, and a status that a rerun would not change (:func:`select_tracks`); a keys row is
redone when its model or its chroma row changed (:func:`stale_tracks`).
"""

from __future__ import annotations

import pandas as pd

from .errors import RETRY_STATUSES

__all__ = ["select_tracks", "stale_tracks"]


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


def stale_tracks(chroma_pdf: pd.DataFrame, keys_pdf: pd.DataFrame | None, *, model_version: str,
                 force: bool = False) -> pd.Series:
    """Boolean mask over ``chroma_pdf`` rows whose keys row is missing or stale.

    A keys row is current when it was made by ``model_version`` from the same chroma row
    (same ``extracted_at``, i.e. the same extraction run of that track).
    """
    if force or keys_pdf is None or keys_pdf.empty:
        return pd.Series(True, index=chroma_pdf.index)
    prev = keys_pdf.drop_duplicates("track_id", keep="last").set_index("track_id")
    same_model = chroma_pdf["track_id"].map(prev["model_version"]) == model_version
    prev_extracted = pd.to_datetime(chroma_pdf["track_id"].map(prev["extracted_at"]), utc=True)
    same_chroma = prev_extracted == pd.to_datetime(chroma_pdf["extracted_at"], utc=True)
    return ~(same_model & same_chroma)
