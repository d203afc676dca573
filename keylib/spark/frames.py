"""Tables as Spark DataFrames: a DataFrame committed as one run of a table
(:func:`commit_run`: the executors write its Parquet files, the driver commits once;
how, :mod:`keylib.storage.commit`) and a table's current rows read back by the executors
(:func:`read_current`), which needs no S3 connector in Spark.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from typing import Callable, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StorageError
from ..redact import redact
from ..storage.commit import FILE_META, Commit, commit_files, part_writer
from ..storage.locations import filesystem, resolve_output, storage_error
from ..storage.staging import clear_staging, delete_unreferenced, output_lease
from ..storage.tables import conform, open_table, table_files

__all__ = ["read_current", "arrow_schema", "commit_run", "executor_tasks"]

log = logging.getLogger("keylib")


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
    files = table_files(table, uri)
    names = schema.names
    settings = dict(s3_settings or {})
    arrow_target = arrow_schema(spark_schema)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fs, root = filesystem(uri, settings)
        for batch in batches:
            for path in batch.column("path").to_pylist():
                with fs.open_input_file(f"{root}/{path}") as f:
                    parquet = pq.ParquetFile(f)
                    present = [n for n in names if n in parquet.schema_arrow.names]
                    for part in parquet.iter_batches(batch_size=256, columns=present):
                        yield conform(part, arrow_target)

    listing = spark.createDataFrame([(p,) for p in files] or [], "path string")
    n_tasks = max(1, min(len(files), -(-len(files) // files_per_task)))
    return listing.repartition(n_tasks).mapInArrow(read, spark_schema)


def arrow_schema(spark_schema) -> pa.Schema:
    """The Arrow schema of a Spark schema, every top-level column nullable (Delta enforces
    no nullability that keylib's own rows do not already guarantee)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(spark_schema, timezone="UTC")
    return pa.schema([f.with_nullable(True) for f in schema])


def commit_run(frame, uri: str, *, run_id: str, s3_settings: Mapping | None = None,
               success: tuple[str, ...] = ("ok", "silent")) -> Commit:
    """Write a Spark DataFrame as one run of a table and commit it atomically.

    The run's rows replace the current rows of the same tracks (upsert on ``track_id``);
    the rows of all other tracks stay as they are. It runs under the output's lease
    (:mod:`keylib.storage.lease`; taken here when the caller does not hold it), checked and
    renewed right before the commit. How: :mod:`keylib.storage.commit`.

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
            lease = stack.enter_context(output_lease(uri, run_id=run_id, job="commit", s3_settings=settings))
        except StorageError as exc:
            raise StorageError(redact(f"cannot commit run {run_id} to {uri}: {exc}")) from None
        return _commit_leased(frame, uri, run_id=run_id, settings=settings, success=success, check=lease.check)


def _commit_leased(frame, uri: str, *, run_id: str, settings: Mapping, success: tuple[str, ...],
                   check: Callable[..., None]) -> Commit:
    """:func:`commit_run` once the lease is held; ``check`` is :meth:`keylib.storage.lease.Lease.check`."""
    schema = arrow_schema(frame.schema)
    clear_staging(uri, s3_settings=settings, keep=[run_id])

    started = time.perf_counter()
    try:
        parts = [m.asDict() for m in frame.mapInArrow(part_writer(uri, settings, run_id, schema), FILE_META).collect()]
    except Exception as exc:  # noqa: BLE001 - a failed Spark job: say which store and why
        raise storage_error(f"cannot write the files of run {run_id} to {uri}", root_cause(exc)) from None
    result = Commit.of_parts(uri, parts, run_id=run_id, success=success)
    if not parts:
        return result
    log.info("wrote %d rows in %d files in %.1f s", result.rows, len(parts), time.perf_counter() - started)

    table = open_table(uri, s3_settings=settings)
    result.version, result.replaced, kept = commit_files(
        uri, table, parts, run_id=run_id, schema=schema, settings=settings, check=check,
        run_tasks=executor_tasks(frame.sparkSession))
    delete_unreferenced(uri, settings, run_id, set(result.files) | {k["path"] for k in kept})
    log.info("committed run %s to %s (version %s, %d rows, %d replaced)", run_id, redact(uri),
             result.version, result.rows, result.replaced)
    return result


def executor_tasks(spark) -> Callable[[Callable[[Iterator], Iterator], list], list]:
    """``run_tasks`` for :func:`keylib.storage.commit.commit_files`: ``fn`` over ``items`` in
    Spark tasks (at most 64), what they yield collected here. A failed job raises the
    Python error behind it (:func:`root_cause`)."""

    def run(fn: Callable[[Iterator], Iterator], items: list) -> list:
        try:
            return spark.sparkContext.parallelize(items, max(1, min(len(items), 64))).mapPartitions(fn).collect()
        except Exception as exc:  # noqa: BLE001
            raise root_cause(exc) from None

    return run


def root_cause(exc: BaseException) -> BaseException:
    """The Python error behind a failed Spark job, when Spark reports one."""
    text = str(exc)
    for marker in ("OSError:", "ArrowIOError:", "FileNotFoundError:", "PermissionError:"):
        if marker in text:
            line = text[text.rindex(marker):].splitlines()[0]
            return OSError(line[len(marker):].strip())
    return exc
