"""List the tracks of a catalogue: a folder, a CSV manifest or an ``s3://`` prefix.

The listing runs on the driver and reads no audio: it yields one row per track with a
cheap ``fingerprint`` (size and modification time, or ETag and size on S3) that the
incremental jobs compare with earlier runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .audio import AUDIO_EXTENSIONS, extension_of
from .errors import InputError
from .io import is_s3, local_path, stat_fingerprint

__all__ = [
    "CATALOGUE_COLUMNS", "MISSING_FINGERPRINT", "list_tracks", "read_manifest", "read_csv_table", "resolve_uri",
]

CATALOGUE_COLUMNS = ["track_id", "uri", "fingerprint", "size_bytes", "truth_key", "source"]
# Kept when the source provides them (S3: the object's last-modified time, for the manifest).
OPTIONAL_COLUMNS = ["last_modified"]
# Fingerprint of a manifest row whose file does not exist: it gets a `missing` row.
MISSING_FINGERPRINT = "missing"


def list_tracks(input_uri: str, *, s3_settings: dict | None = None) -> pd.DataFrame:
    """Tracks of a catalogue, one row each, columns :data:`CATALOGUE_COLUMNS`.

    Parameters
    ----------
    input_uri : str
        A folder (searched recursively for audio files), a ``.csv`` manifest with a
        ``path`` column (optional ``track_id``, ``key``, ``source``; relative paths are
        relative to the manifest's folder), or an ``s3://bucket/prefix``.

    Raises
    ------
    InputError
        when the input does not exist or cannot be listed, or a manifest is malformed.
    """
    if is_s3(input_uri):
        from . import s3

        frame = s3.list_prefix(input_uri, settings=s3_settings or {})
    else:
        path = local_path(input_uri)
        if path.is_dir():
            frame = _list_folder(path)
        elif path.is_file():
            frame = read_manifest(path, s3_settings=s3_settings)
        else:
            raise InputError(f"input not found: {input_uri}")
    extra = [c for c in OPTIONAL_COLUMNS if c in frame.columns]  # S3 listings: last_modified
    return frame[CATALOGUE_COLUMNS + extra].reset_index(drop=True)


def _list_folder(root: Path) -> pd.DataFrame:
    rows = []
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if extension_of(name) not in AUDIO_EXTENSIONS or name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                size, fingerprint = stat_fingerprint(path)
            except OSError:
                continue  # vanished while listing
            rows.append({
                "track_id": path.relative_to(root).as_posix(),
                "uri": str(path),
                "fingerprint": fingerprint,
                "size_bytes": size,
                "truth_key": None,
                "source": None,
            })
    return pd.DataFrame(rows, columns=CATALOGUE_COLUMNS)


def read_csv_table(path: Path, *, what: str = "manifest") -> pd.DataFrame:
    """A CSV file as strings (empty cells as ``""``), or :class:`InputError` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None


def resolve_uri(raw: str, *, base: Path) -> str:
    """A manifest's path cell as a URI: ``s3://`` as is, local paths absolute (relative to
    the manifest's folder ``base``)."""
    raw = raw.strip()
    if is_s3(raw):
        return raw
    path = local_path(raw)
    return str(path if path.is_absolute() else base / path)


def read_manifest(manifest: Path, *, s3_settings: dict | None = None) -> pd.DataFrame:
    """Tracks listed by a CSV manifest (see :func:`list_tracks`)."""
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".csv":
        raise InputError(f"a manifest must be a .csv file, got {manifest}")
    table = read_csv_table(manifest, what="manifest")
    if "path" not in table.columns:
        raise InputError(f"manifest {manifest} has no 'path' column (columns: {list(table.columns)})")
    table = table[table["path"].str.strip() != ""]
    if "track_id" not in table.columns or (table["track_id"] == "").any():
        ids = table["track_id"] if "track_id" in table.columns else pd.Series("", index=table.index)
        table["track_id"] = ids.where(ids != "", table["path"])
    duplicated = table["track_id"][table["track_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"manifest {manifest} repeats track_id {duplicated.iloc[0]!r}")
    base = manifest.resolve().parent
    rows = []
    s3_uris = []
    for record in table.to_dict("records"):
        uri = resolve_uri(record["path"], base=base)
        if is_s3(uri):
            size, fingerprint = None, None
            s3_uris.append(uri)
        else:
            try:
                size, fingerprint = stat_fingerprint(uri)
            except OSError:
                size, fingerprint = None, MISSING_FINGERPRINT
        rows.append({
            "track_id": record["track_id"],
            "uri": uri,
            "fingerprint": fingerprint,
            "size_bytes": size,
            "truth_key": record.get("key") or None,
            "source": record.get("source") or None,
        })
    frame = pd.DataFrame(rows, columns=CATALOGUE_COLUMNS)
    if s3_uris:
        from . import s3

        stats = s3.head_objects(s3_uris, settings=s3_settings or {})
        for column in ("fingerprint", "size_bytes"):
            mask = frame["uri"].isin(stats.index)
            frame.loc[mask, column] = frame.loc[mask, "uri"].map(stats[column])
        frame["fingerprint"] = frame["fingerprint"].fillna(MISSING_FINGERPRINT)
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    return frame
