"""``chroma_cache.parquet``: the chroma of a training set's clips in the extraction job's
column layout, written from the rendered rows (:func:`write_chroma_cache`) or recomputed
from the audio after a feature change (:func:`refresh_chroma_cache`)."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np

from ...features import FEATURE_VERSION, n_rows
from .pool import pool_map

__all__ = ["write_chroma_cache", "refresh_chroma_cache"]


def refresh_chroma_cache(out_dir: Path, *, workers: int = 2, progress: bool = True,
                         feature_version: str = FEATURE_VERSION) -> Path:
    """Recompute ``chroma_cache.parquet`` from a training-set folder's audio with the features
    ``feature_version`` (after a feature change, or to train on another version of
    :data:`keylib.features.FEATURE_VERSIONS`): the manifest's rows, each decoded and folded
    as :func:`keylib.training.trainset.make.run_job` does. Renders nothing.

    Returns the cache's path. Raises :class:`~keylib.errors.InputError` when the folder has
    no manifest or a listed file cannot be decoded or kills its worker twice (a training set
    is rendered whole, so a missing file means a broken folder, not a track to skip).
    """
    from ...errors import InputError

    n_rows(feature_version)  # ValueError for an unknown version, before any decoding
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if not manifest.exists():
        raise InputError(f"{manifest} not found: not a training-set folder")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fn = functools.partial(_chroma_of_file, root=str(out_dir), feature_version=feature_version)
    on_crash = functools.partial(_lost_file, root=str(out_dir))
    results = pool_map(fn, [r["path"] for r in rows], workers=workers, ordered=True, on_crash=on_crash)
    if progress:
        from rich.progress import track

        results = track(results, total=len(rows), description="chroma")
    for chroma, row in zip(results, rows):  # results first: the pool is drained and closed
        row["chroma"] = chroma
    return write_chroma_cache(rows, out_dir / "chroma_cache.parquet", out_dir, feature_version=feature_version)


def _chroma_of_file(rel: str, root: str, feature_version: str) -> np.ndarray:
    from ... import audio, features
    from ...errors import InputError, TrackError

    path = Path(root) / rel
    try:
        return features.chroma(audio.decode(path.read_bytes(), ext=path.suffix).samples,
                               feature_version=feature_version)
    except (OSError, TrackError) as exc:
        raise InputError(f"{path}: cannot read its audio ({exc})") from exc


def _lost_file(rel: str, message: str, root: str):
    from ...errors import InputError

    raise InputError(f"{Path(root) / rel}: cannot read its audio ({message} twice while decoding it)")


def write_chroma_cache(rows: list[dict], path: Path, root: Path, *, replace_split: str | None = None,
                       feature_version: str = FEATURE_VERSION) -> Path:
    """Chroma rows in the extraction job's column layout (+ key, source, piece, split), their
    ``feature_version`` the features ``rows``' chroma was computed with.

    With ``replace_split``, ``rows`` replace only that split's rows of the cache at ``path``
    (if there is one): its other splits' rows are kept, ahead of ``rows``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.table({
        "track_id": [r["track_id"] for r in rows],
        "uri": [str(Path(root) / r["path"]) for r in rows],
        "n_frames": [int(r["chroma"].shape[1]) for r in rows],
        "chroma": [r["chroma"].reshape(-1).astype(np.float32) for r in rows],
        "status": ["ok"] * len(rows),
        "feature_version": [feature_version] * len(rows),
        "key": [r["key"] for r in rows],
        "source": [r["source"] for r in rows],
        "piece": [r["piece"] for r in rows],
        "split": [r["split"] for r in rows],
        "instrument": [r["instrument"] for r in rows],
        "cut": [r.get("cut", "excerpt") for r in rows],
        "soundfont": [r.get("soundfont", "") for r in rows],
        "duration_s": [float(r["duration_s"]) for r in rows],
    })
    if replace_split is not None and Path(path).exists():
        old = pq.read_table(str(path))
        old = old.filter(pc.not_equal(old["split"], replace_split)).select(table.column_names).cast(table.schema)
        table = pa.concat_tables([old, table])
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    pq.write_table(table, str(tmp))
    os.replace(tmp, path)  # the old cache stays whole until the new one is
    return path
