"""List the tracks of a catalogue: a folder, a CSV manifest or an ``s3://`` prefix.

The listing runs on the driver and reads no audio (it never opens a listed file): it yields
one row per track with a cheap ``fingerprint`` (size and modification time, or ETag and
size on S3) that the incremental jobs compare with earlier runs.

Every listed thing gets a row, and the executors turn the ones they cannot read into
status rows: a dangling symlink is listed with :data:`MISSING_FINGERPRINT` (``missing``),
a FIFO or device named like audio with its stat (``not_a_file``), an ``http(s)://``
manifest path as a URL without its credential parameters and no fingerprint
(``unsupported_source``), an S3 object whose HEAD is refused (403) with no fingerprint
(``read_error``). A file name that is not valid UTF-8 gets a ``track_id`` with its bytes
escaped (``\\xe9``) and a ``file://`` URI with its bytes percent-encoded, which still
names the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from .audio import AUDIO_EXTENSIONS, extension_of
from .errors import InputError
from .redact import redact, strip_credentials
from .storage.io import ListingProgress, is_remote, is_url, local_path, stat_fingerprint

log = logging.getLogger("keylib")

__all__ = [
    "CATALOGUE_COLUMNS", "MISSING_FINGERPRINT", "list_tracks", "read_manifest", "read_csv_table", "resolve_uri",
]

CATALOGUE_COLUMNS = ["track_id", "uri", "fingerprint", "size_bytes", "truth_key", "source"]
# Kept when the source provides them (S3: the object's last-modified time, for the manifest).
OPTIONAL_COLUMNS = ["last_modified"]
# Fingerprint of a manifest row whose file does not exist: it gets a `missing` row.
MISSING_FINGERPRINT = "missing"
# Fingerprint of a URL keylib does not fetch: constant, so its unsupported_source row is not
# redone every night (a row without a fingerprint always is).
URL_FINGERPRINT = "url"


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
        when the input does not exist or cannot be listed, or a manifest is malformed
        (its message is redacted).
    """
    if is_remote(input_uri):
        from .storage import s3

        frame = s3.list_prefix(input_uri, settings=s3_settings or {})
    else:
        path = local_path(input_uri)
        if path.is_dir():
            frame = _list_folder(path)
        elif path.is_file():
            frame = read_manifest(path, s3_settings=s3_settings)
        else:
            raise InputError(f"input not found: {redact(input_uri)}")
    extra = [c for c in OPTIONAL_COLUMNS if c in frame.columns]  # S3 listings: last_modified
    return frame[CATALOGUE_COLUMNS + extra].reset_index(drop=True)


def _list_folder(root: Path) -> pd.DataFrame:
    rows = []
    root = root.resolve()
    progress = ListingProgress(redact(str(root)))
    for dirpath, dirnames, filenames in os.walk(root):
        progress.add(len(filenames))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if extension_of(name) not in AUDIO_EXTENSIONS or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            # stat, never open: a FIFO named x.mp3 would block the listing.
            try:
                size, fingerprint = stat_fingerprint(path)
            except FileNotFoundError:
                if not os.path.lexists(path):
                    continue  # vanished while listing
                size, fingerprint = None, MISSING_FINGERPRINT  # a dangling symlink
            except OSError:
                size, fingerprint = None, None  # a symlink loop, say: the read reports why
            rows.append({
                "track_id": _text(os.path.relpath(path, root).replace(os.sep, "/")),
                "uri": _local_uri(path),
                "fingerprint": fingerprint,
                "size_bytes": size,
                "truth_key": None,
                "source": None,
            })
    frame = pd.DataFrame(rows, columns=CATALOGUE_COLUMNS)
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    return frame


def _text(name: str) -> str:
    """``name`` as valid UTF-8: the bytes of a name that is not (``os.walk`` gives them as
    lone surrogates, which Arrow cannot write) kept as ``\\xNN`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _local_uri(path: str) -> str:
    """The path itself, or for a name that is not valid UTF-8 a ``file://`` URI with its
    bytes percent-encoded (:func:`keylib.storage.io.local_path` decodes it back to the same bytes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file://" + quote(os.fsencode(path))
    return path


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
    """A manifest's path cell as a URI: ``s3://`` as is, another URL (``https://``, ...)
    as is but without its credential parameters, local paths absolute (relative to the
    manifest's folder ``base``)."""
    raw = raw.strip()
    if is_remote(raw):
        return raw
    if is_url(raw):
        return strip_credentials(raw)
    path = local_path(raw)
    return str(path if path.is_absolute() else base / path)


def read_manifest(manifest: Path, *, s3_settings: dict | None = None) -> pd.DataFrame:
    """Tracks listed by a CSV manifest (see :func:`list_tracks`).

    A row's ``track_id`` defaults to its path. A URL (``https://...``) is kept as a URI,
    and like any URL-shaped ``track_id`` loses its credential parameters
    (:func:`keylib.redact.strip_credentials`): a presigned URL's signature never reaches a
    row. Its fingerprint is :data:`URL_FINGERPRINT`: keylib does not fetch URLs, the
    executors give it an ``unsupported_source`` row, once.
    """
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".csv":
        raise InputError(f"a manifest must be a .csv file, got {manifest}")
    table = read_csv_table(manifest, what="manifest")
    if "path" not in table.columns:
        raise InputError(f"manifest {manifest} has no 'path' column (columns: {list(table.columns)})")
    empty = table["path"].str.strip() == ""
    if empty.any():
        log.warning("manifest %s has %d line(s) without a path; they name no track", redact(str(manifest)),
                    int(empty.sum()))
    table = table[~empty].copy()
    table["path"] = table["path"].str.strip()
    ids = table["track_id"] if "track_id" in table.columns else pd.Series("", index=table.index)
    # Stripped before the duplicate check: two presigned URLs of one object are one track.
    table["track_id"] = ids.where(ids != "", table["path"]).map(strip_credentials)
    # A line repeated word for word (concatenated exports) names one track once; the same
    # track_id with another path, key or source is ambiguous and refused.
    repeated = table.duplicated()
    if repeated.any():
        log.warning("manifest %s repeats %d line(s) word for word; each track is listed once",
                    redact(str(manifest)), int(repeated.sum()))
        table = table[~repeated]
    duplicated = table["track_id"][table["track_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"manifest {manifest} gives track_id {duplicated.iloc[0]!r} twice with different "
                         "paths, keys or sources")
    base = manifest.resolve().parent
    rows = []
    s3_uris = []
    for record in table.to_dict("records"):
        uri = resolve_uri(record["path"], base=base)
        size, fingerprint = None, None
        if is_remote(uri):
            s3_uris.append(uri)
        elif is_url(uri):
            fingerprint = URL_FINGERPRINT
        else:
            try:
                size, fingerprint = stat_fingerprint(uri)
            except FileNotFoundError:  # also a dangling symlink
                fingerprint = MISSING_FINGERPRINT
            except OSError:
                pass  # a symlink loop, say: the read reports why
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
        from .storage import s3

        # Objects S3 answered for: fingerprint and size, or None for a refused HEAD;
        # the others do not exist.
        stats = s3.head_objects(s3_uris, settings=s3_settings or {})
        answered = frame["uri"].isin(stats.index)
        for column in ("fingerprint", "size_bytes"):
            frame.loc[answered, column] = frame.loc[answered, "uri"].map(stats[column])
        frame.loc[frame["uri"].map(is_remote) & ~answered, "fingerprint"] = MISSING_FINGERPRINT
        frame["fingerprint"] = frame["fingerprint"].astype(object).where(frame["fingerprint"].notna(), None)
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    return frame
