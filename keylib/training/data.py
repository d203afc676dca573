"""The training data: chroma rows (the extraction job's ``chroma`` table or Parquet, or the
generator's ``chroma_cache.parquet``, which has the same columns) with their key, source,
piece and split, and the validation split held out by piece and source.

A manifest's ``key``/``source``/``piece``/``split`` are joined by ``track_id`` when the
Parquet lacks them. Rows with ``split == "heldout"`` are never trained on nor used for
early stopping; the card reports the network's score on them.
"""

from __future__ import annotations

import glob
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..features import FEATURE_VERSION, n_rows
from ..keys import try_parse_key

__all__ = ["load_dataset", "split_dataset", "add_training_rows", "counts"]


def _read_parquet_rows(path: str | Path):
    import pandas as pd
    import pyarrow.parquet as pq

    p = Path(path)
    if (p / "_delta_log").is_dir():  # a keylib table: its current rows only (keylib.storage.tables)
        from ..storage.tables import read_rows

        return read_rows(str(p))
    files = [str(p)] if p.is_file() else sorted(
        f for f in glob.glob(str(p / "**" / "*.parquet"), recursive=True)
        # as Parquet readers do: skip _staging/ (runs not committed) and hidden files
        if not any(part.startswith(("_", ".")) for part in Path(f).relative_to(p).parts)
    )
    if not files:
        raise FileNotFoundError(f"no Parquet files under {p}")
    frames = []
    for f in files:
        t = pq.read_table(f)
        frames.append(t.to_pandas())
    return pd.concat(frames, ignore_index=True)


def load_dataset(features: Sequence[str | Path], manifests: Sequence[str | Path] = (), *,
                 feature_version: str = FEATURE_VERSION):
    """A DataFrame with ``track_id, chroma (rows, n) arrays, key (index), source, piece, split``.

    ``features``: Parquet files or folders (searched recursively). ``manifests``: CSV files
    whose ``key``/``source``/``piece``/``split`` columns are joined by ``track_id``.
    ``feature_version``: only rows of these features are kept (``rows`` =
    :func:`keylib.features.n_rows`); ValueError naming the versions found when there are none.
    """
    import pandas as pd

    rows = n_rows(feature_version)
    df = pd.concat([_read_parquet_rows(f) for f in features], ignore_index=True)
    if "status" in df:
        df = df[df["status"].fillna("ok") == "ok"]
    if "feature_version" in df:
        bad = df["feature_version"] != feature_version
        if bad.all():
            found = ", ".join(sorted(map(str, set(df["feature_version"])))) or "none"
            raise ValueError(f"no rows with feature_version {feature_version!r} (found: {found}); refold the "
                             "training set with make-training-set --refresh-chroma --feature-version")
        df = df[~bad]
    if "key" not in df and "truth_key" in df:  # the extraction job's name for the manifest's key
        df = df.rename(columns={"truth_key": "key"})
    if manifests:
        man = pd.concat([pd.read_csv(m, dtype=str) for m in manifests], ignore_index=True)
        man = man.drop_duplicates("track_id", keep="last")
        cols = [c for c in ("key", "source", "piece", "split", "instrument") if c in man]
        df = df.drop(columns=[c for c in cols if c in df]).merge(man[["track_id"] + cols], on="track_id", how="inner")
    if "key" not in df:
        raise ValueError("no key column: pass the manifest (--manifest) that has one")
    df = df.drop_duplicates("track_id", keep="last").reset_index(drop=True)
    for col, default in (("source", "unknown"), ("split", "train")):
        if col not in df:
            df[col] = default
        df[col] = df[col].fillna(default)
    if "piece" not in df:
        df["piece"] = df["track_id"]
    df["piece"] = df["piece"].fillna(df["track_id"])
    df["key_index"] = [-1 if (k := try_parse_key(label)) is None else k for label in df["key"]]
    df = df[(df["key_index"] >= 0) | (df["split"] == "atonal")].copy()  # atonal: music without a key
    df["chroma"] = [np.asarray(c, dtype=np.float32).reshape(rows, -1) for c in df["chroma"]]
    df = df[[c.shape[1] >= 1 for c in df["chroma"]]]
    return df.reset_index(drop=True)


def is_validation_piece(source: str, piece: str, *, seed: int = 7, fraction: float = 0.12) -> bool:
    """Whether a piece of a source is kept for validation: whole pieces, by a hash."""
    return zlib.crc32(f"{seed}|{source}|{piece}".encode()) % 10_000 < fraction * 10_000


def split_dataset(df, val_fraction: float = 0.12, seed: int = 7):
    """(train, val, heldout): heldout = ``split == 'heldout'``; val = ``split ==
    'validation'`` (the validation render) and whole pieces per source
    (:func:`is_validation_piece`) of the rest.

    Rows of ``split == 'atonal'`` (no key) are in none of them: see :func:`keylib.training.train.train_model`.
    """
    held = df[df["split"] == "heldout"]
    rest = df[~df["split"].isin(("heldout", "atonal"))]
    is_val = np.array([split == "validation" or is_validation_piece(s, p, seed=seed, fraction=val_fraction)
                       for split, s, p in zip(rest["split"], rest["source"], rest["piece"])], dtype=bool)
    return rest[~is_val].reset_index(drop=True), rest[is_val].reset_index(drop=True), held.reset_index(drop=True)


def add_training_rows(train, more, val_fraction: float = 0.12, seed: int = 7):
    """``train`` with the training rows of ``more`` (another render of training pieces) added.

    Of ``more`` only the rows :func:`split_dataset` would train on are kept: the rows of
    validation pieces, its validation render, held-out and atonal rows are dropped, so a
    render added for training leaves the validation and the held-out rows as they were and
    candidates trained with and without it are scored on the same tracks.

    Returns
    -------
    (rows, dropped) : (pandas.DataFrame, int)
    """
    import pandas as pd

    extra = split_dataset(more, val_fraction, seed)[0]
    return pd.concat([train, extra], ignore_index=True), len(more) - len(extra)


def counts(df) -> dict:
    """What the model card says of a split: tracks, pieces, sources, modes, soundfonts, hours."""
    if df is None or not len(df):
        return {"tracks": 0}
    modes = np.asarray(df["key_index"]) // 12
    return {
        "tracks": int(len(df)), "pieces": int(df.groupby(["source", "piece"]).ngroups),
        "by_source": {str(k): int(v) for k, v in df["source"].value_counts().sort_index().items()},
        "major": int((modes == 0).sum()), "minor": int((modes == 1).sum()),
        "by_soundfont": ({str(k): int(v) for k, v in df["soundfont"].value_counts().sort_index().items()}
                         if "soundfont" in df else {}),
        "hours": round(float(sum(c.shape[1] for c in df["chroma"])) / 5.0 / 3600, 2),
    }
