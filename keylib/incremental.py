"""Which tracks a run must process: new, changed, retryable, or everything with --force.

Pure pandas, so the rule is testable without Spark: a track is skipped when its current
row has the same fingerprint (size + mtime, or ETag + size), the same feature (and model)
version, and a status that a rerun would not change, or a retryable failure that repeated
on ``nightly.max_attempts`` runs in a row (:func:`select_tracks`); a keys row is
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
    max_attempts: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a catalogue listing into ``(todo, skipped)``.

    Parameters
    ----------
    listing : pd.DataFrame
        Catalogue rows (``track_id``, ``fingerprint``, ...).
    previous : pd.DataFrame or None
        Current rows of earlier runs with ``track_id``, ``fingerprint``, ``status`` and the
        columns named in ``versions`` (and ``attempts`` when the table has it); ``None``
        when there is no earlier run.
    versions : dict
        Column name -> the version this run writes (``{"feature_version": "..."}``);
        a row written by another version is redone.
    force : bool
        Redo everything, exhausted failures included.
    max_attempts : int, optional
        A retryable failure whose row says it failed the same way on this many runs in a
        row (``attempts``) is not retried while its file is unchanged.

    Returns
    -------
    todo : pd.DataFrame
        The listing's rows to process, with ``previous_status`` and ``previous_attempts``
        where the track's current row is of the same file and version (so that a repeated
        failure counts on), else missing.
    skipped : pd.DataFrame
        The other rows, with a boolean ``exhausted`` column: True for a retryable failure
        skipped because its attempts are spent.
    """
    if force or previous is None or previous.empty:
        return _with_previous(listing.copy(), None), _exhausted(listing.iloc[0:0].copy(), False)
    prev = previous.drop_duplicates("track_id", keep="last").set_index("track_id")
    current = listing["track_id"].map(prev["fingerprint"])
    same_file = current.notna() & (current == listing["fingerprint"])
    for column, version in versions.items():
        same_file &= listing["track_id"].map(prev[column]) == version
    status = listing["track_id"].map(prev["status"])
    retry = status.isin(RETRY_STATUSES)
    exhausted = pd.Series(False, index=listing.index)
    if max_attempts is not None and "attempts" in prev.columns:
        attempts = pd.to_numeric(listing["track_id"].map(prev["attempts"]), errors="coerce").fillna(1)
        exhausted = same_file & retry & (attempts >= max_attempts)
    same = same_file & (~retry | exhausted)
    todo = _with_previous(listing[~same].copy(), prev.loc[listing.loc[~same & same_file, "track_id"]])
    return todo, _exhausted(listing[same].copy(), exhausted[same])


def _with_previous(todo: pd.DataFrame, prev: pd.DataFrame | None) -> pd.DataFrame:
    """``todo`` with the status and attempts of its tracks' current rows of the same file."""
    if prev is None or prev.empty:
        todo["previous_status"] = pd.Series(None, index=todo.index, dtype=object)
        todo["previous_attempts"] = pd.Series(pd.NA, index=todo.index, dtype="Int32")
        return todo
    attempts = prev["attempts"] if "attempts" in prev.columns else pd.Series(1, index=prev.index)
    todo["previous_status"] = todo["track_id"].map(prev["status"]).astype(object)
    todo["previous_attempts"] = pd.to_numeric(todo["track_id"].map(attempts.fillna(1)),
                                              errors="coerce").astype("Int32")
    return todo


def _exhausted(skipped: pd.DataFrame, exhausted) -> pd.DataFrame:
    skipped["exhausted"] = exhausted
    skipped["exhausted"] = skipped["exhausted"].astype(bool)
    return skipped


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
