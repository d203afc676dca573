"""Output tables: Delta Lake tables with one current row per track, local or on S3.

Every table keylib writes (``OUT/chroma``, ``OUT/keys``) is a `Delta Lake
<https://delta.io>`_ table keyed by ``track_id``. A run is one Delta commit that
replaces the rows of the tracks it wrote and adds the new ones (an upsert on
``track_id``), so readers of the latest version see exactly one row per track, and
earlier versions stay readable (``DeltaTable(uri, version=n)``): nothing a run wrote is
lost by a later run (keylib never vacuums).

How a run is committed (:func:`commit_run`), the same way for a folder and for S3:

1. the executors write the run's rows as Parquet files under ``TABLE/run=<run_id>/``
   (``pyarrow.fs``: a local path or S3, each executor with its own client) and return
   only file metadata (path, size, row count, track ids, statuses) to the driver;
2. files of the current version that hold rows of re-written tracks are copied by the
   executors without those rows (copy-on-write; none for a nightly run of new tracks);
3. the driver commits once: one Delta log entry adds the new files and removes the
   replaced ones. On S3 the log entry is written with a conditional put (``If-None-Match``),
   locally with an exclusive create, so the run appears whole or not at all. It commits
   onto exactly the version the run read: should another commit have got there first,
   the table is read again and the replaced files recomputed (:func:`_commit_upsert`).

One run at a time writes an output: :func:`commit_run` and :func:`clear_staging` run
under the output's lease (:mod:`keylib.storage.lease`), which :func:`commit_run` checks and
renews right before committing. Files of a run that never committed (driver killed,
store unreachable) are referenced by no log entry, so every Delta reader ignores them;
the next holder of the lease deletes them (:func:`clear_staging`).

Spark is needed only to run the executors; the tables are read without it (pandas via
``deltalake``, DuckDB, Polars), and Spark reads them through Python in its executors
(:func:`read_current`): this works with or without a Hadoop S3 connector.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import StorageError
from ..redact import redact as _redact

__all__ = [
    "RUN_ID_KEY",
    "Commit",
    "table_uri",
    "resolve_output",
    "is_remote",
    "new_run_id",
    "filesystem",
    "storage_options",
    "open_table",
    "table_exists",
    "committed_runs",
    "read_rows",
    "count_rows",
    "read_current",
    "clear_staging",
    "commit_run",
    "run_statuses",
    "write_text",
    "read_texts",
    "upload_folder",
]

RUN_ID_KEY = "keylib.run_id"
KEY_COLUMN = "track_id"
# A table's history is its value: keep every log entry and every replaced file.
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.deletedFileRetentionDuration": "interval 36500 days",
    "delta.enableExpiredLogCleanup": "false",
}

log = logging.getLogger("keylib")


# --------------------------------------------------------------------------- locations


def is_remote(uri: str | os.PathLike) -> bool:
    """True for ``s3://`` URIs (object storage), False for local paths."""
    return str(uri).startswith("s3://")


def resolve_output(output: str | os.PathLike) -> str:
    """An output root as a URI: ``s3://bucket/prefix`` unchanged (no trailing slash), a
    local path made absolute."""
    text = str(output)
    if is_remote(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = urlparse(text).path
    return str(Path(text).resolve())


def table_uri(output: str | os.PathLike, name: str) -> str:
    """``OUT/<name>`` for a local or ``s3://`` output root."""
    return f"{resolve_output(output)}/{name}"


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261124T200102Z-1a2b3c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _s3_endpoint(settings: Mapping | None) -> str | None:
    settings = settings or {}
    return (settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def _s3_region(settings: Mapping | None) -> str:
    settings = settings or {}
    return (settings.get("region") or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def filesystem(uri: str, s3_settings: Mapping | None = None) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow`` filesystem of ``uri`` and the path of ``uri`` inside it.

    S3 follows the ``[s3]`` settings (``endpoint_url``, ``region``, ``max_attempts``),
    then ``AWS_ENDPOINT_URL``; credentials come from the AWS SDK's usual chain on each
    machine (environment, profile, instance role) and are never passed around.
    """
    uri = str(uri)
    if not is_remote(uri):
        return _local_fs(), resolve_output(uri)
    settings = s3_settings or {}
    fs = _s3_fs(_s3_endpoint(settings), _s3_region(settings), int(settings.get("max_attempts", 6)))
    return fs, uri[len("s3://"):].rstrip("/")


@lru_cache(maxsize=1)
def _local_fs() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


@lru_cache(maxsize=8)
def _s3_fs(endpoint: str | None, region: str, max_attempts: int) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(
        region=region,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        connect_timeout=10,
        request_timeout=60,
        **kwargs,
    )


def storage_options(uri: str, s3_settings: Mapping | None = None) -> dict[str, str] | None:
    """``deltalake`` storage options for ``uri``: endpoint, region and the conditional put
    that makes commits atomic on S3. No credentials: delta-rs finds them through the AWS
    chain itself."""
    if not is_remote(uri):
        return None
    settings = s3_settings or {}
    options = {"AWS_REGION": _s3_region(settings), "conditional_put": "etag"}
    endpoint = _s3_endpoint(settings)
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def _delta_options(uri: str, s3_settings: Mapping | None) -> dict[str, str] | None:
    """:func:`storage_options` plus bounded retries: a dead endpoint fails a run in
    seconds, not after minutes of back-off."""
    options = storage_options(uri, s3_settings)
    if options is not None:
        options.update(max_retries=str(max(1, int((s3_settings or {}).get("max_attempts", 6)) - 1)),
                       retry_timeout="30s", timeout="60s", connect_timeout="10s")
    return options


def _storage_error(what: str, exc: BaseException) -> StorageError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(_redact(f"{what}: {type(exc).__name__}: {reason[:300]}"))


# --------------------------------------------------------------------------- reading


def open_table(uri: str, *, s3_settings: Mapping | None = None, version: int | None = None):
    """The :class:`deltalake.DeltaTable` at ``uri``, or ``None`` when there is no table.

    Raises
    ------
    StorageError
        the store cannot be reached (as opposed to: no table there).
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = resolve_output(uri)
    try:
        return DeltaTable(uri, version=version, storage_options=_delta_options(uri, s3_settings))
    except TableNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - delta-rs raises OSError / its own types
        raise _storage_error(f"cannot read table {uri}", exc) from None


def table_exists(uri: str, *, s3_settings: Mapping | None = None) -> bool:
    return open_table(uri, s3_settings=s3_settings) is not None


def committed_runs(uri: str, *, s3_settings: Mapping | None = None) -> list[str]:
    """Run ids committed to a table, oldest first (empty when there is no table)."""
    table = open_table(uri, s3_settings=s3_settings)
    if table is None:
        return []
    runs = [h.get(RUN_ID_KEY) for h in reversed(table.history())]
    return [r for r in runs if r]


def read_rows(uri: str, *, columns: Iterable[str] | None = None, s3_settings: Mapping | None = None,
              version: int | None = None) -> pd.DataFrame | None:
    """The current rows of a table as pandas, on this machine (no Spark), or ``None``.

    Meant for small columns (keys rows, or a few bookkeeping columns of chroma): only
    ``columns`` are read from the Parquet files; those the table's schema does not have
    (a column added after the table was written) are left out of the frame.
    """
    table = open_table(uri, s3_settings=s3_settings, version=version)
    if table is None:
        return None
    if columns is not None:
        present = {f.name for f in table.schema().fields}
        columns = [c for c in columns if c in present]
    try:
        data = table.to_pyarrow_table(columns=list(columns) if columns is not None else None)
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot read table {uri}", exc) from None
    return data.to_pandas()


def count_rows(uri: str, *, s3_settings: Mapping | None = None) -> int:
    """Rows of the current version, from the commit metadata (no data read)."""
    table = open_table(uri, s3_settings=s3_settings)
    if table is None:
        return 0
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pa.compute.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def _table_files(table, uri: str) -> list[str]:
    """Paths (relative to the table root) of the current version's files."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return [str(p) for p in actions.column("path").to_pylist()] if actions.num_rows else []


def read_current(spark, uri: str, *, columns: Iterable[str] | None = None,
                 s3_settings: Mapping | None = None, files_per_task: int = 8):
    """The current rows of a table as a Spark DataFrame (one per track), or ``None``.

    The executors read the Parquet files through ``pyarrow`` (local or S3), so Spark
    needs no S3 connector; the driver only lists the files from the Delta log.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    uri = resolve_output(uri)
    table = open_table(uri, s3_settings=s3_settings)
    if table is None:
        return None
    schema = pa.schema(table.schema().to_arrow())
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=False)
    files = _table_files(table, uri)
    names = schema.names
    settings = dict(s3_settings or {})
    arrow_target = _arrow_schema(spark_schema)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fs, root = filesystem(uri, settings)
        for batch in batches:
            for path in batch.column("path").to_pylist():
                with fs.open_input_file(f"{root}/{path}") as f:
                    parquet = pq.ParquetFile(f)
                    present = [n for n in names if n in parquet.schema_arrow.names]
                    for part in parquet.iter_batches(batch_size=256, columns=present):
                        yield _conform(part, arrow_target)

    listing = spark.createDataFrame([(p,) for p in files] or [], "path string")
    n_tasks = max(1, min(len(files), -(-len(files) // files_per_task)))
    return listing.repartition(n_tasks).mapInArrow(read, spark_schema)


# --------------------------------------------------------------------------- writing


_FILE_META = ("path string, size long, rows long, track_ids array<string>, statuses array<string>, "
              "errors array<string>, failure string")


def _arrow_schema(spark_schema) -> pa.Schema:
    """The Arrow schema of a Spark schema, every top-level column nullable (Delta enforces
    no nullability that keylib's own rows do not already guarantee)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(spark_schema, timezone="UTC")
    return pa.schema([f.with_nullable(True) for f in schema])


@dataclass
class Commit:
    """What :func:`commit_run` committed.

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


def _part_writer(uri: str, settings: Mapping, run_id: str, schema: pa.Schema, prefix: str = "part"):
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
                                               "errors": [], "failure": _redact(f"{type(exc).__name__}: {exc}")[:500]}],
                                             schema=_META_ARROW)
            return
        if writer is None:
            return
        yield pa.RecordBatch.from_pylist(
            [{"path": name, "size": size, "rows": rows, "track_ids": ids, "statuses": statuses, "errors": errors,
              "failure": None}],
            schema=_META_ARROW,
        )

    return write


_META_ARROW = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("rows", pa.int64()),
    ("track_ids", pa.list_(pa.string())), ("statuses", pa.list_(pa.string())), ("errors", pa.list_(pa.string())),
    ("failure", pa.string()),
])


def _conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """``data`` with ``schema``'s columns in its order and types; a column that a file
    written before it existed lacks (``attempts``, say) is null, as Delta readers see it."""
    columns = [data.column(f.name) if f.name in data.schema.names else pa.nulls(data.num_rows, f.type)
               for f in schema]
    kind = pa.RecordBatch if isinstance(data, pa.RecordBatch) else pa.Table
    return kind.from_arrays(columns, names=schema.names).cast(schema)


def _add_columns(table, schema: pa.Schema, uri: str, settings: Mapping):
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
        raise _storage_error(f"cannot add columns {[f.name for f in new]} to {uri}", exc) from None
    log.info("added columns %s to %s", ", ".join(f.name for f in new), _redact(uri))
    return open_table(uri, s3_settings=settings)


def _rewrite_files(uri: str, settings: Mapping, run_id: str, schema: pa.Schema):
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
                pq.write_table(_conform(kept, schema), out, compression="zstd")
            yield {"path": name, "size": fs.get_file_info(f"{root}/{name}").size, "rows": kept.num_rows}

    return rewrite


def _output_lease(uri: str, *, run_id: str, job: str, s3_settings: Mapping | None):
    """The lease of the output holding the table ``uri`` (:func:`keylib.storage.lease.hold`): the
    caller's when it holds it, else taken here with the default ``[lease]`` timings."""
    from ..config import DEFAULTS
    from .lease import hold, output_of

    return hold(output_of(uri), run_id=run_id, job=job, s3_settings=s3_settings, **DEFAULTS["lease"])


def clear_staging(uri: str, *, s3_settings: Mapping | None = None, keep: Iterable[str] = ()) -> list[str]:
    """Delete the files of runs that never committed (killed before their commit).

    Readers never see them (no log entry names them); this only frees the space. It runs
    under the output's lease (:mod:`keylib.storage.lease`; taken here when the caller does not
    hold it), so the files of a run in progress elsewhere are never touched: that run
    holds the lease, and this raises :class:`~keylib.errors.OutputBusyError` instead. Runs
    named in ``keep`` (the caller's run) are left alone.

    Returns
    -------
    list of str
        The run folders deleted.

    Raises
    ------
    OutputBusyError
        another run holds the output's lease.
    StorageError
        the table cannot be listed, or the caller's lease was lost.
    """
    keep = list(keep)
    with _output_lease(uri, run_id=keep[0] if keep else new_run_id(), job="clear_staging",
                       s3_settings=s3_settings) as lease:
        fs, root = filesystem(uri, s3_settings)
        try:
            entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=False))
        except Exception as exc:  # noqa: BLE001
            raise _storage_error(f"cannot list {uri}", exc) from None
        folders = [e.base_name for e in entries if e.base_name.startswith("run=")]
        if not folders:
            return []
        committed = set(committed_runs(uri, s3_settings=s3_settings)) | set(keep)
        stale = [f for f in folders if f[len("run="):] not in committed]
        if stale:
            lease.check(before=f"deleting uncommitted files in {uri}")
        for folder in stale:
            try:
                fs.delete_dir(f"{root}/{folder}")
            except Exception as exc:  # noqa: BLE001 - freeing space must not fail a run
                log.warning("could not delete uncommitted files %s/%s: %s", uri, folder, _redact(exc))
    if stale:
        log.info("deleted the uncommitted files of %d killed run(s) under %s", len(stale), _redact(uri))
    return stale


def commit_run(frame, uri: str, *, run_id: str, s3_settings: Mapping | None = None,
               success: tuple[str, ...] = ("ok", "silent")) -> Commit:
    """Write a Spark DataFrame as one run of a table and commit it atomically.

    The run's rows replace the current rows of the same tracks (upsert on ``track_id``);
    the rows of all other tracks stay as they are. It runs under the output's lease
    (:mod:`keylib.storage.lease`; taken here when the caller does not hold it), checked and
    renewed right before the commit.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        The run's rows (at most one per ``track_id``); its schema is the table's.
    uri : str
        The table: a local folder or ``s3://bucket/prefix/table``.
    run_id : str
        Names the run's folder and is recorded in the commit (``keylib.run_id``).
    s3_settings : mapping, optional
        The ``[s3]`` configuration section.
    success : tuple of str
        Statuses that are not failures (for :attr:`Commit.failed`).

    Returns
    -------
    Commit

    Raises
    ------
    StorageError
        the files or the commit could not be written, or this process lost the output's
        lease ("lost the lease ..."); nothing of this run is visible.
    OutputBusyError
        another run holds the output's lease.
    """
    settings = dict(s3_settings or {})
    uri = resolve_output(uri)
    with ExitStack() as stack:
        try:
            lease = stack.enter_context(_output_lease(uri, run_id=run_id, job="commit", s3_settings=settings))
        except StorageError as exc:
            raise StorageError(_redact(f"cannot commit run {run_id} to {uri}: {exc}")) from None
        return _commit_leased(frame, uri, run_id=run_id, settings=settings, success=success, check=lease.check)


def _commit_leased(frame, uri: str, *, run_id: str, settings: Mapping, success: tuple[str, ...],
                   check: Callable[..., None]) -> Commit:
    """:func:`commit_run` once the lease is held; ``check`` is :meth:`keylib.storage.lease.Lease.check`."""
    schema = _arrow_schema(frame.schema)
    clear_staging(uri, s3_settings=settings, keep=[run_id])

    started = time.perf_counter()
    try:
        meta = frame.mapInArrow(_part_writer(uri, settings, run_id, schema), _FILE_META).collect()
    except Exception as exc:  # noqa: BLE001 - a failed Spark job: say which store and why
        raise _storage_error(f"cannot write the files of run {run_id} to {uri}", _root_cause(exc)) from None
    failures = [m["failure"] for m in meta if m["failure"]]
    if failures:  # the files written so far are never committed (the next run deletes them)
        raise StorageError(_redact(f"cannot write the files of run {run_id} to {uri}: {failures[0]}"))
    ids = [t for m in meta for t in m["track_ids"]]
    statuses = [s for m in meta for s in m["statuses"]]
    errors = [e for m in meta for e in m["errors"]]
    written = pd.DataFrame({"track_id": ids, "status": statuses or [None] * len(ids),
                            "error": errors or [None] * len(ids)})
    result = Commit(uri=uri, version=None, rows=len(ids),
                    statuses={str(k): int(v) for k, v in written["status"].value_counts().items()},
                    failed=written[~written["status"].isin(success)].reset_index(drop=True),
                    files=[m["path"] for m in meta])
    if not meta:
        return result
    log.info("wrote %d rows in %d files in %.1f s", len(ids), len(meta), time.perf_counter() - started)

    table = open_table(uri, s3_settings=settings)
    result.version, result.replaced, kept = _commit_upsert(
        frame.sparkSession, uri, table, [m.asDict() for m in meta], run_id=run_id, schema=schema,
        settings=settings, check=check)
    _delete_unreferenced(uri, settings, run_id, set(result.files) | {k["path"] for k in kept})
    log.info("committed run %s to %s (version %s, %d rows, %d replaced)", run_id, _redact(uri),
             result.version, result.rows, result.replaced)
    return result


# A commit that finds the table moved since it read it is recomputed and tried again (only
# without the lease, or after losing it, can two runs commit to one table at once).
_COMMIT_ATTEMPTS = 4


def _commit_upsert(spark, uri: str, table, parts: list[Mapping], *, run_id: str, schema: pa.Schema,
                   settings: Mapping, check: Callable[..., None]) -> tuple[int, int, list[dict]]:
    """Commit a run's files onto ``table`` as one Delta version that also replaces the
    current rows of the same tracks.

    delta-rs rebases an append onto a concurrent append without a word, which would leave
    two current rows for a track both wrote. So each attempt commits onto exactly the
    version it read (``max_commit_retries=0``); when another commit got there first, the
    table is read again and the replaced files are recomputed, so that this run's rows
    replace the other run's rows of the same tracks.

    Parameters
    ----------
    spark : SparkSession
        Rewrites the replaced files (:func:`_replace`).
    uri : str
        The table.
    table : deltalake.DeltaTable or None
        The version the run read (``None``: no table yet).
    parts : list of mapping
        The run's files: ``path``, ``size``, ``rows``, ``track_ids`` (from :func:`_part_writer`).
    run_id : str
        The run (its folder, and ``keylib.run_id`` in the commit).
    schema : pyarrow.Schema
        The table's schema.
    settings : mapping
        The ``[s3]`` section.
    check : callable
        :meth:`keylib.storage.lease.Lease.check`, called right before each commit.

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
    from deltalake import Schema
    from deltalake.transaction import AddAction, CommitProperties, RemoveAction, create_table_with_add_actions

    ids = {t for p in parts for t in p["track_ids"]}
    now_ms = int(time.time() * 1000)
    if table is not None:
        check(before=f"committing run {run_id} to {uri}")  # adding a column is a commit too
        table = _add_columns(table, schema, uri, settings)

    def add(file: Mapping) -> AddAction:
        return AddAction(file["path"], int(file["size"]), {}, now_ms, True,
                         json.dumps({"numRecords": int(file["rows"])}))

    properties = CommitProperties(custom_metadata={RUN_ID_KEY: run_id, "keylib.rows": len(ids)}, max_commit_retries=0)
    options = _delta_options(uri, settings)
    for _ in range(_COMMIT_ATTEMPTS):
        removes, kept = ([], []) if table is None else _replace(spark, table, uri, ids, settings, run_id, schema)
        adds = [add(p) for p in parts] + [add(k) for k in kept]
        _check_files(uri, settings, run_id, adds)
        check(before=f"committing run {run_id} to {uri}")
        read = -1 if table is None else table.version()
        try:
            if table is None:
                create_table_with_add_actions(uri, Schema.from_arrow(schema), adds, mode="error",
                                              configuration=TABLE_CONFIGURATION, storage_options=options,
                                              commit_properties=properties)
            else:
                actions = adds + [RemoveAction(path, True, now_ms, size, {}) for (path, size), _ in removes]
                table.create_write_transaction(actions, "append", schema, commit_properties=properties)
            return read + 1, sum(n for _, n in removes), kept
        except Exception as exc:  # noqa: BLE001 - delta-rs: OSError, CommitFailedError, DeltaError, ...
            failure = _storage_error(f"cannot commit run {run_id} to {uri}", exc)
        try:
            moved = open_table(uri, s3_settings=settings)
        except StorageError:
            raise failure from None
        if moved is None or moved.version() <= read:  # not a conflict: the store failed
            raise failure from None
        for entry in moved.history(moved.version() - read):
            if entry.get(RUN_ID_KEY) == run_id:  # a retried request whose first attempt landed
                return int(entry["version"]), sum(n for _, n in removes), kept
        log.warning("table %s moved to version %d while run %s was committing; committing again onto it",
                    _redact(uri), moved.version(), run_id)
        table = moved
    raise StorageError(_redact(f"cannot commit run {run_id} to {uri}: the table moved under each of "
                               f"{_COMMIT_ATTEMPTS} attempts; nothing was committed"))


def _check_files(uri: str, settings: Mapping, run_id: str, adds: list) -> None:
    """Make sure every file a commit adds is in the run's folder, whole (delta-rs commits
    an add whose file is gone, which would break every reader of that version)."""
    fs, root = filesystem(uri, settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/run={run_id}", allow_not_found=True))
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot list the files of run {run_id} in {uri}", exc) from None
    present = {f"run={run_id}/{i.base_name}": i.size for i in infos}
    missing = [a.path for a in adds if present.get(a.path) != a.size]
    if missing:
        raise StorageError(_redact(f"cannot commit run {run_id} to {uri}: {len(missing)} of its {len(adds)} files "
                                   f"are missing or changed (first {missing[0]}); nothing was committed"))


def _replace(spark, table, uri: str, run_ids: set[str], settings: Mapping, run_id: str,
             schema: pa.Schema) -> tuple[list[tuple[tuple[str, int | None], int]], list[dict]]:
    """Files of the current version that hold rows of ``run_ids``, and their copies
    without those rows (written by the executors)."""
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
        kept = (spark.sparkContext.parallelize(affected, max(1, min(len(affected), 64)))
                .mapPartitions(_rewrite_files(uri, settings, run_id, schema)).collect())
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot rewrite replaced rows of run {run_id} in {uri}", _root_cause(exc)) from None
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


def _delete_unreferenced(uri: str, settings: Mapping, run_id: str, referenced: set[str]) -> None:
    """Delete files in this run's folder that its commit does not name (failed task
    attempts); best effort."""
    try:
        fs, root = filesystem(uri, settings)
        folder = f"{root}/run={run_id}"
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            if f"run={run_id}/{info.base_name}" not in referenced:
                fs.delete_file(info.path)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not tidy run folder %s: %s", run_id, _redact(exc))


def _root_cause(exc: BaseException) -> BaseException:
    """The Python error behind a failed Spark job, when Spark reports one."""
    text = str(exc)
    for marker in ("OSError:", "ArrowIOError:", "FileNotFoundError:", "PermissionError:"):
        if marker in text:
            line = text[text.rindex(marker):].splitlines()[0]
            return OSError(line[len(marker):].strip())
    return exc


def run_statuses(commit: Commit) -> tuple[dict[str, int], pd.DataFrame]:
    """Status counts and failed rows (``track_id``, ``status``, ``error``) of a commit,
    as the executors reported them when they wrote the run's files (nothing is read)."""
    return dict(commit.statuses), commit.failed


# --------------------------------------------------------------------------- small files


def write_text(uri: str, text: str, *, s3_settings: Mapping | None = None) -> str:
    """Write a small text file whole or not at all: a single PUT on S3, temp file + fsync
    + rename locally."""
    if not is_remote(uri):
        from .io import atomic_write_text

        return str(atomic_write_text(uri, text))
    fs, path = filesystem(uri, s3_settings)
    try:
        with fs.open_output_stream(path) as out:
            out.write(text.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot write {uri}", exc) from None
    return uri


def read_texts(folder_uri: str, *, suffix: str = ".json", s3_settings: Mapping | None = None) -> list[str]:
    """The texts of the files directly in a folder whose names end with ``suffix``, in
    name order (empty when the folder does not exist)."""
    fs, root = filesystem(folder_uri, s3_settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        texts = []
        for name in names:
            with fs.open_input_stream(name) as f:
                texts.append(f.read().decode("utf-8"))
        return texts
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot read {folder_uri}", exc) from None


def upload_folder(folder: str | os.PathLike, uri: str, *, s3_settings: Mapping | None = None) -> None:
    """Copy the files of a local folder (a report) to a folder or ``s3://`` prefix."""
    fs, root = filesystem(uri, s3_settings)
    try:
        fs.create_dir(root, recursive=True)
        pafs.copy_files(str(Path(folder).resolve()), root, source_filesystem=_local_fs(), destination_filesystem=fs)
    except Exception as exc:  # noqa: BLE001
        raise _storage_error(f"cannot write {uri}", exc) from None
