"""How a run becomes one version of a table, the same way for a folder and for S3.

1. the executors write the run's rows as Parquet files under ``TABLE/run=<run_id>/``
   (``pyarrow.fs``: a local path or S3, each executor with its own client;
   :func:`part_writer`) and return only file metadata (path, size, row count, track ids,
   statuses) to the driver (:meth:`Commit.of_parts`);
2. files of the current version that hold rows of re-written tracks are copied by the
   executors without those rows (copy-on-write, :func:`rewrite_files`; none for a
   nightly run of new tracks);
3. the driver commits once (:func:`commit_files`): one Delta log entry adds the new files
   and removes the replaced ones. On S3 the log entry is written with a conditional put
   (``If-None-Match``), locally with an exclusive create, so the run appears whole or not
   at all. It commits onto exactly the version the run read: should another commit have
   got there first, the table is read again and the replaced files recomputed.

One run at a time writes an output: the commit runs under the output's lease
(:mod:`keylib.storage.lease`), checked and renewed right before committing; a run's files
before their commit are :mod:`keylib.storage.staging`'s. Nothing here imports Spark: the
functions the executors run are plain ``pyarrow``, and the driver's side that has Spark
run them is :func:`keylib.spark.frames.commit_run`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StorageError
from ..redact import redact
from .locations import delta_options, filesystem, storage_error
from .staging import check_files
from .tables import KEY_COLUMN, RUN_ID_KEY, conform, open_table

__all__ = [
    "TABLE_CONFIGURATION", "FILE_META", "META_ARROW", "Commit", "part_writer", "rewrite_files", "add_columns",
    "commit_files", "run_statuses",
]

# A table's history is its value: keep every log entry and every replaced file.
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.deletedFileRetentionDuration": "interval 36500 days",
    "delta.enableExpiredLogCleanup": "false",
}

# ``run_tasks(fn, items)``: run ``fn`` (an iterator of items in, of results out) over
# ``items`` in tasks, and return what they yielded (:func:`keylib.spark.frames.executor_tasks`).
RunTasks = Callable[[Callable[[Iterator], Iterator], list], list]

log = logging.getLogger("keylib")

# Spark's schema of :func:`part_writer`'s rows, and the same as Arrow.
FILE_META = ("path string, size long, rows long, track_ids array<string>, statuses array<string>, "
             "errors array<string>, failure string")

META_ARROW = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("rows", pa.int64()),
    ("track_ids", pa.list_(pa.string())), ("statuses", pa.list_(pa.string())), ("errors", pa.list_(pa.string())),
    ("failure", pa.string()),
])


@dataclass
class Commit:
    """What a run committed (:func:`keylib.spark.frames.commit_run`).

    Attributes
    ----------
    uri : str
        The table.
    version : int or None
        The Delta version made by this run (None: nothing to commit).
    rows : int
        Rows the run wrote.
    statuses : dict
        Count per ``status`` of the run's rows.
    failed : pd.DataFrame
        ``track_id``, ``status``, ``error`` of the rows whose status is not a success.
    replaced : int
        Rows of earlier runs that this run replaced (the same tracks, written again).
    files : list of str
        The files it added (relative to the table root).
    """

    uri: str
    version: int | None
    rows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["track_id", "status", "error"]))
    replaced: int = 0
    files: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.uri}@v{self.version}"

    @classmethod
    def of_parts(cls, uri: str, parts: list[Mapping], *, run_id: str, success: tuple[str, ...]) -> "Commit":
        """What a run wrote, from its files' metadata rows (:func:`part_writer`), before its
        commit (``version`` None).

        Raises
        ------
        StorageError
            a task could not write its file (the files written so far are never committed;
            the next run deletes them).
        """
        failures = [p["failure"] for p in parts if p["failure"]]
        if failures:
            raise StorageError(redact(f"cannot write the files of run {run_id} to {uri}: {failures[0]}"))
        ids = [t for p in parts for t in p["track_ids"]]
        statuses = [s for p in parts for s in p["statuses"]]
        errors = [e for p in parts for e in p["errors"]]
        written = pd.DataFrame({"track_id": ids, "status": statuses or [None] * len(ids),
                                "error": errors or [None] * len(ids)})
        return cls(uri=uri, version=None, rows=len(ids),
                   statuses={str(k): int(v) for k, v in written["status"].value_counts().items()},
                   failed=written[~written["status"].isin(success)].reset_index(drop=True),
                   files=[p["path"] for p in parts])


def part_writer(uri: str, settings: Mapping, run_id: str, schema: pa.Schema, prefix: str = "part"):
    """The ``mapInArrow`` function that writes one Parquet file per task and returns its
    metadata row (executor side)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        name = f"run={run_id}/{prefix}-{uuid.uuid4().hex}.parquet"
        writer = stream = None
        ids: list[str] = []
        statuses: list[str] = []
        errors: list[str | None] = []
        rows = 0
        try:
            fs, root = filesystem(uri, settings)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                batch = batch.select(schema.names).cast(schema)
                if writer is None:
                    fs.create_dir(f"{root}/run={run_id}", recursive=True)
                    stream = fs.open_output_stream(f"{root}/{name}")
                    writer = pq.ParquetWriter(stream, schema, compression="zstd")
                writer.write_batch(batch)
                rows += batch.num_rows
                ids.extend(batch.column(KEY_COLUMN).to_pylist())
                if "status" in schema.names:
                    statuses.extend(batch.column("status").to_pylist())
                    errors.extend(batch.column("error").to_pylist())
            if writer is not None:
                writer.close()
                stream.close()
                size = fs.get_file_info(f"{root}/{name}").size
        except Exception as exc:  # noqa: BLE001 - the store failed: tell the driver, without a task failure
            for _ in batches:  # let the task end normally
                pass
            yield pa.RecordBatch.from_pylist([{"path": None, "size": 0, "rows": 0, "track_ids": [], "statuses": [],
                                               "errors": [], "failure": redact(f"{type(exc).__name__}: {exc}")[:500]}],
                                             schema=META_ARROW)
            return
        if writer is None:
            return
        yield pa.RecordBatch.from_pylist(
            [{"path": name, "size": size, "rows": rows, "track_ids": ids, "statuses": statuses, "errors": errors,
              "failure": None}],
            schema=META_ARROW,
        )

    return write


def rewrite_files(uri: str, settings: Mapping, run_id: str, schema: pa.Schema):
    """The function that copies files without some tracks' rows (executor side)."""

    def rewrite(items: Iterator[tuple[str, list[str]]]) -> Iterator[dict]:
        import pyarrow.compute as pc

        fs, root = filesystem(uri, settings)
        for path, drop in items:
            with fs.open_input_file(f"{root}/{path}") as f:
                data = pq.read_table(f)
            kept = data.filter(pc.invert(pc.is_in(data.column(KEY_COLUMN), value_set=pa.array(drop, pa.string()))))
            if kept.num_rows == 0:
                continue
            name = f"run={run_id}/kept-{uuid.uuid4().hex}.parquet"
            fs.create_dir(f"{root}/run={run_id}", recursive=True)
            with fs.open_output_stream(f"{root}/{name}") as out:
                pq.write_table(conform(kept, schema), out, compression="zstd")
            yield {"path": name, "size": fs.get_file_info(f"{root}/{name}").size, "rows": kept.num_rows}

    return rewrite


def add_columns(table, schema: pa.Schema, uri: str, settings: Mapping):
    """``table`` with the columns of ``schema`` it lacks added (a Delta schema change of its
    own, before the run's commit): a table written by an earlier keylib gains a new column,
    null in its earlier rows, instead of refusing the run."""
    from deltalake import Field

    have = {f.name for f in table.schema().fields}
    new = [Field.from_arrow(f) for f in schema if f.name not in have]
    if not new:
        return table
    try:
        table.alter.add_columns(new)
    except Exception as exc:  # noqa: BLE001 - delta-rs: OSError, CommitFailedError, ...
        raise storage_error(f"cannot add columns {[f.name for f in new]} to {uri}", exc) from None
    log.info("added columns %s to %s", ", ".join(f.name for f in new), redact(uri))
    return open_table(uri, s3_settings=settings)


# A commit that finds the table moved since it read it is recomputed and tried again (only
# without the lease, or after losing it, can two runs commit to one table at once).
_COMMIT_ATTEMPTS = 4


def commit_files(uri: str, table, parts: list[Mapping], *, run_id: str, schema: pa.Schema, settings: Mapping,
                 check: Callable[..., None], run_tasks: RunTasks) -> tuple[int, int, list[dict]]:
    """Commit a run's files onto ``table`` as one Delta version that also replaces the
    current rows of the same tracks.

    delta-rs rebases an append onto a concurrent append without a word, which would leave
    two current rows for a track both wrote. So each attempt commits onto exactly the
    version it read (``max_commit_retries=0``); when another commit got there first, the
    table is read again and the replaced files are recomputed, so that this run's rows
    replace the other run's rows of the same tracks.

    Parameters
    ----------
    uri : str
        The table.
    table : deltalake.DeltaTable or None
        The version the run read (``None``: no table yet).
    parts : list of mapping
        The run's files: ``path``, ``size``, ``rows``, ``track_ids`` (from :func:`part_writer`).
    run_id : str
        The run (its folder, and ``keylib.run_id`` in the commit).
    schema : pyarrow.Schema
        The table's schema.
    settings : mapping
        The ``[s3]`` section.
    check : callable
        :meth:`keylib.storage.lease.Lease.check`, called right before each commit.
    run_tasks : callable
        ``run_tasks(fn, items)`` runs ``fn`` over ``items`` in tasks and returns what they
        yield: the copies of replaced files are written there
        (:func:`keylib.spark.frames.executor_tasks`: Spark's executors).

    Returns
    -------
    tuple
        The version made, the rows replaced, and the copies of replaced files kept
        (``path``, ``size``, ``rows``).

    Raises
    ------
    StorageError
        a file to add is missing, the lease was lost, the store failed, or the table kept
        moving for :data:`_COMMIT_ATTEMPTS` attempts; nothing was committed.
    """
    ids = {t for p in parts for t in p["track_ids"]}
    now_ms = int(time.time() * 1000)
    if table is not None:
        check(before=f"committing run {run_id} to {uri}")  # adding a column is a commit too
        table = add_columns(table, schema, uri, settings)
    for _ in range(_COMMIT_ATTEMPTS):
        removes, kept = ([], []) if table is None else _replace(table, uri, ids, settings, run_id, schema, run_tasks)
        adds = [_add_action(p, now_ms) for p in parts] + [_add_action(k, now_ms) for k in kept]
        check_files(uri, settings, run_id, adds)
        check(before=f"committing run {run_id} to {uri}")
        read = -1 if table is None else table.version()
        try:
            _write_version(uri, table, adds, removes, run_id=run_id, rows=len(ids), schema=schema, settings=settings,
                           now_ms=now_ms)
            return read + 1, sum(n for _, n in removes), kept
        except Exception as exc:  # noqa: BLE001 - delta-rs: OSError, CommitFailedError, DeltaError, ...
            failure = storage_error(f"cannot commit run {run_id} to {uri}", exc)
        moved = _moved(uri, settings, read, failure)
        landed = _landed(moved, read, run_id)
        if landed is not None:  # a retried request whose first attempt landed
            return landed, sum(n for _, n in removes), kept
        log.warning("table %s moved to version %d while run %s was committing; committing again onto it",
                    redact(uri), moved.version(), run_id)
        table = moved
    raise StorageError(redact(f"cannot commit run {run_id} to {uri}: the table moved under each of "
                              f"{_COMMIT_ATTEMPTS} attempts; nothing was committed"))


def _add_action(file: Mapping, now_ms: int):
    from deltalake.transaction import AddAction

    return AddAction(file["path"], int(file["size"]), {}, now_ms, True, json.dumps({"numRecords": int(file["rows"])}))


def _write_version(uri: str, table, adds: list, removes: list, *, run_id: str, rows: int, schema: pa.Schema,
                   settings: Mapping, now_ms: int) -> None:
    """One Delta commit onto exactly the version ``table`` is (a new table when ``None``)."""
    from deltalake import Schema
    from deltalake.transaction import CommitProperties, RemoveAction, create_table_with_add_actions

    properties = CommitProperties(custom_metadata={RUN_ID_KEY: run_id, "keylib.rows": rows}, max_commit_retries=0)
    if table is None:
        create_table_with_add_actions(uri, Schema.from_arrow(schema), adds, mode="error",
                                      configuration=TABLE_CONFIGURATION, storage_options=delta_options(uri, settings),
                                      commit_properties=properties)
    else:
        actions = adds + [RemoveAction(path, True, now_ms, size, {}) for (path, size), _ in removes]
        table.create_write_transaction(actions, "append", schema, commit_properties=properties)


def _moved(uri: str, settings: Mapping, read: int, failure: StorageError):
    """The table as it is now, when a commit onto version ``read`` failed because another
    commit got there first; else ``failure`` is raised (the store failed)."""
    try:
        moved = open_table(uri, s3_settings=settings)
    except StorageError:
        raise failure from None
    if moved is None or moved.version() <= read:  # not a conflict: the store failed
        raise failure from None
    return moved


def _landed(moved, read: int, run_id: str) -> int | None:
    """The version ``run_id`` made after ``read``, if one of the commits since is its own."""
    for entry in moved.history(moved.version() - read):
        if entry.get(RUN_ID_KEY) == run_id:
            return int(entry["version"])
    return None


def _replace(table, uri: str, run_ids: set[str], settings: Mapping, run_id: str, schema: pa.Schema,
             run_tasks: RunTasks) -> tuple[list[tuple[tuple[str, int | None], int]], list[dict]]:
    """Files of the current version that hold rows of ``run_ids``, and their copies
    without those rows (written by ``run_tasks``: the executors)."""
    import pyarrow.dataset as ds

    dataset = table.to_pyarrow_dataset()
    actions = pa.table(table.get_add_actions(flatten=True)).to_pandas()
    sizes = dict(zip(actions["path"], actions["size_bytes"]))
    root = table.table_uri.rstrip("/")
    affected: list[tuple[str, list[str]]] = []
    removes: list[tuple[tuple[str, int | None], int]] = []
    key = pa.array(sorted(run_ids), pa.string())
    for fragment in dataset.get_fragments():
        hits = fragment.to_table(columns=[KEY_COLUMN], filter=ds.field(KEY_COLUMN).isin(key)).column(KEY_COLUMN)
        if len(hits) == 0:
            continue
        relative = _relative(fragment.path, root)
        affected.append((relative, hits.to_pylist()))
        removes.append(((relative, int(sizes.get(relative, 0)) or None), len(hits)))
    if not affected:
        return [], []
    try:
        kept = run_tasks(rewrite_files(uri, settings, run_id, schema), affected)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot rewrite replaced rows of run {run_id} in {uri}", exc) from None
    return removes, kept


def _relative(path: str, root: str) -> str:
    """A fragment's path relative to the table root (however the two are spelled)."""
    from urllib.parse import unquote

    path = unquote(path)
    for prefix in (root, urlparse(root).path if "://" in root else root, root.split("://", 1)[-1]):
        prefix = prefix.rstrip("/") + "/"
        if prefix != "/" and path.startswith(prefix):
            return path[len(prefix):]
    marker = "/run="
    return path[path.index(marker) + 1:] if marker in path else path


def run_statuses(commit: Commit) -> tuple[dict[str, int], pd.DataFrame]:
    """Status counts and failed rows (``track_id``, ``status``, ``error``) of a commit,
    as the executors reported them when they wrote the run's files (nothing is read)."""
    return dict(commit.statuses), commit.failed
