"""Join predicted keys with ground truth and score them (MIREX), with every exclusion counted.

Pure pandas: :func:`read_truth` reads a manifest, :func:`evaluate_keys` joins and scores.
The evaluate flow (:mod:`keylib.spark.flows.evaluate`) only reads the current keys rows and calls these.

Joining
    A truth row matches a prediction by ``track_id``; a truth row whose ``track_id`` matches
    nothing (or that has none) matches by ``path``, compared with the prediction's ``uri``
    (relative paths are relative to the manifest's folder, as in extraction).

Exclusions (a track is never scored as wrong for these; each is counted with its reason)
    ``no_label``           the manifest has no key for the track
    ``unparseable_label``  the label is not one of the 24 keys (``X``, ``-``, ``None``,
                           modal labels such as ``D dorian``)
    ``not_predicted``      no keys row for the track (not extracted / inferred yet)
    ``no_estimate``        the keys row has no key (extraction failed, silent, ...); the
                           row's status is kept in ``detail``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import mirex
from .catalogue import read_csv_table, resolve_uri
from .errors import InputError
from .keys import KEY_NAMES, try_parse_key
from .redact import strip_credentials

__all__ = ["EXCLUSION_REASONS", "Evaluation", "read_truth", "evaluate_keys"]

EXCLUSION_REASONS = ("no_label", "unparseable_label", "not_predicted", "no_estimate")
TRUTH_COLUMNS = ["track_id", "uri", "label", "source"]


@dataclass
class Evaluation:
    """Result of :func:`evaluate_keys`.

    Attributes
    ----------
    scored : pd.DataFrame
        One row per scored track: ``track_id``, ``source``, ``reference``, ``estimate``
        (key names), ``ref_index``, ``est_index``, ``confidence``, ``category``, ``score``,
        ``score_both_fifths``.
    excluded : pd.DataFrame
        ``track_id``, ``reason`` (one of :data:`EXCLUSION_REASONS`), ``detail``.
    summary : dict
        :func:`keylib.mirex.summarize` of all scored tracks plus ``scored``, ``excluded``
        (count per reason), ``by_source`` ({source: summary without the confusion matrix}),
        ``reference_distribution`` and ``estimate_distribution`` (counts per key over the
        scored tracks, index order), ``catalogue_distribution`` (predicted keys over all
        keys rows), ``unmatched_predictions`` (keys rows that no truth row names).
    """

    scored: pd.DataFrame
    excluded: pd.DataFrame
    summary: dict = field(default_factory=dict)


def read_truth(manifest: str | Path) -> pd.DataFrame:
    """Ground truth of a CSV manifest.

    Parameters
    ----------
    manifest : str or Path
        CSV with a ``key`` column and ``track_id`` and/or ``path`` (optional ``source``).

    Returns
    -------
    pd.DataFrame
        Columns ``track_id``, ``uri`` (resolved path, or None), ``label`` (raw label, or
        None), ``source`` (or None).

    Raises
    ------
    InputError
        when the file is missing, unreadable, or lacks the needed columns.
    """
    manifest = Path(manifest)
    table = read_csv_table(manifest, what="truth manifest")
    if "key" not in table.columns:
        raise InputError(f"truth manifest {manifest} has no 'key' column (columns: {list(table.columns)})")
    if "track_id" not in table.columns and "path" not in table.columns:
        raise InputError(f"truth manifest {manifest} needs a 'track_id' or 'path' column")
    base = manifest.resolve().parent
    uris = [
        resolve_uri(raw, base=base) if raw.strip() else None
        for raw in table.get("path", pd.Series("", index=table.index))
    ]
    ids = table["track_id"].str.strip() if "track_id" in table.columns else pd.Series("", index=table.index)
    # As in the catalogue: a manifest row without track_id is identified by its path, a
    # URL's without its credential parameters.
    paths = table["path"].str.strip() if "path" in table.columns else pd.Series("", index=table.index)
    ids = ids.where(ids != "", paths).map(strip_credentials)
    out = pd.DataFrame({
        "track_id": ids.where(ids != "", None),
        "uri": uris,
        "label": table["key"].where(table["key"].str.strip() != "", None),
        "source": table["source"].where(table["source"].str.strip() != "", None)
        if "source" in table.columns else None,
    }, columns=TRUTH_COLUMNS)
    return out[out["track_id"].notna() | out["uri"].notna()].reset_index(drop=True)


def _beyond_key(keys: pd.DataFrame) -> dict:
    """What the keys rows say beyond the key: tonal share, tuning, key changes (None when
    the rows lack the columns)."""
    def share(mask) -> float | None:
        return float(np.mean(mask)) if len(mask) else None

    out: dict = {}
    if "tonal" in keys:
        tonal = keys["tonal"].dropna().astype(bool)
        out["tonal_share"] = share(tonal.to_numpy())
    if "tuning_cents" in keys:
        cents = keys["tuning_cents"].dropna().astype(float).to_numpy()
        out["tuning_median_cents"] = float(np.median(cents)) if len(cents) else None
        out["tuning_off_share"] = share(np.abs(cents) > 10)
    if "segments" in keys:
        counts = [len(s) for s in keys["segments"] if s is not None and not (isinstance(s, float) and s != s)]
        out["modulating_share"] = share(np.asarray(counts) > 1)
    return out


def evaluate_keys(keys: pd.DataFrame, truth: pd.DataFrame) -> Evaluation:
    """Join keys rows with ground truth and score them.

    Parameters
    ----------
    keys : pd.DataFrame
        Current keys rows with at least ``track_id``, ``uri``, ``key``, ``status``
        (``confidence``, ``error`` used when present).
    truth : pd.DataFrame
        :func:`read_truth` output (``track_id``, ``uri``, ``label``, ``source``).

    Returns
    -------
    Evaluation
    """
    keys = keys.drop_duplicates("track_id", keep="last").reset_index(drop=True)
    scored, excluded, used = _match(keys, truth)
    scored_df = pd.DataFrame(scored, columns=[
        "track_id", "source", "reference", "estimate", "ref_index", "est_index", "confidence",
        "category", "score", "score_both_fifths",
    ])
    excluded_df = pd.DataFrame(excluded, columns=["track_id", "reason", "detail", "source"])
    summary = _summarize(scored_df, excluded_df, keys=keys, truth_rows=len(truth), used=len(used))
    return Evaluation(scored=scored_df, excluded=excluded_df, summary=summary)


def _match(keys: pd.DataFrame, truth: pd.DataFrame) -> tuple[list[dict], list[tuple], set[int]]:
    """Each truth row's keys row (by ``track_id``, else by ``uri``), scored or excluded with
    its reason; also the keys rows used."""
    by_id = {t: i for i, t in enumerate(keys["track_id"])}
    by_uri = {u: i for i, u in enumerate(keys["uri"]) if isinstance(u, str)}
    used: set[int] = set()
    scored, excluded = [], []
    for t in truth.itertuples(index=False):
        name = t.track_id if isinstance(t.track_id, str) else t.uri
        source = t.source if isinstance(t.source, str) else None
        label = t.label if isinstance(t.label, str) else None
        if label is None:
            excluded.append((name, "no_label", "", source))
            continue
        ref = try_parse_key(label)
        if ref is None:
            excluded.append((name, "unparseable_label", label, source))
            continue
        i = by_id.get(t.track_id) if isinstance(t.track_id, str) else None
        if i is None and isinstance(t.uri, str):
            i = by_uri.get(t.uri)
        if i is None:
            excluded.append((name, "not_predicted", "no keys row for this track", source))
            continue
        used.add(i)
        row = keys.iloc[i]
        est_name = row["key"] if isinstance(row["key"], str) else None
        if est_name is None:
            error = row.get("error")
            detail = str(row["status"]) + (f": {error}" if isinstance(error, str) and error else "")
            excluded.append((row["track_id"], "no_estimate", detail, source))
            continue
        est = KEY_NAMES.index(est_name) if est_name in KEY_NAMES else try_parse_key(est_name)
        if est is None:
            excluded.append((row["track_id"], "no_estimate", f"unreadable predicted key {est_name!r}", source))
            continue
        category = mirex.category(ref, est)
        scored.append({
            "track_id": row["track_id"],
            "source": source,
            "reference": KEY_NAMES[ref],
            "estimate": KEY_NAMES[est],
            "ref_index": ref,
            "est_index": est,
            "confidence": float(row["confidence"]) if "confidence" in row and pd.notna(row["confidence"]) else None,
            "category": category,
            "score": mirex.WEIGHTS[category],
            "score_both_fifths": mirex.weighted_score(ref, est, descending_fifths=True),
        })
    return scored, excluded, used


def _summarize(scored_df: pd.DataFrame, excluded_df: pd.DataFrame, *, keys: pd.DataFrame, truth_rows: int,
               used: int) -> dict:
    """The evaluation's summary: MIREX scores overall and per source, exclusions, key
    distributions, the calibration of the confidence, what the rows say beyond the key."""
    summary = mirex.summarize(scored_df["ref_index"].astype(np.int64).to_numpy(),
                              scored_df["est_index"].astype(np.int64).to_numpy())
    summary["scored"] = int(len(scored_df))
    summary["excluded"] = {r: int((excluded_df["reason"] == r).sum()) for r in EXCLUSION_REASONS}
    summary["excluded_total"] = int(len(excluded_df))
    summary["truth_rows"] = int(truth_rows)
    summary["unmatched_predictions"] = int(len(keys) - used)
    summary["reference_distribution"] = np.bincount(scored_df["ref_index"].astype(int), minlength=24).tolist()
    summary["estimate_distribution"] = np.bincount(scored_df["est_index"].astype(int), minlength=24).tolist()
    summary["catalogue_distribution"] = np.bincount(
        keys["key"].dropna().map(lambda k: KEY_NAMES.index(k) if k in KEY_NAMES else -1)
        .pipe(lambda s: s[s >= 0]).astype(int), minlength=24).tolist()
    by_source = {}
    sources = sorted(set(scored_df["source"].dropna()) | set(excluded_df["source"].dropna()))
    for source in sources:
        part = scored_df[scored_df["source"] == source]
        s = mirex.summarize(part["ref_index"].astype(np.int64).to_numpy(), part["est_index"].astype(np.int64).to_numpy())
        s.pop("confusion"), s.pop("key_names")
        s["excluded"] = int((excluded_df["source"] == source).sum())
        by_source[source] = s
    summary["by_source"] = by_source
    confident = scored_df["confidence"].notna()
    summary["calibration"] = mirex.calibration_error(
        scored_df.loc[confident, "confidence"].to_numpy(dtype=float),
        (scored_df.loc[confident, "ref_index"] == scored_df.loc[confident, "est_index"]).to_numpy())
    summary["beyond_key"] = _beyond_key(keys)
    return summary
