"""Output tables: Delta Lake tables with one current row per track, local or on S3, and
how they are read.

Every table keylib writes (``OUT/chroma``, ``OUT/keys``) is a `Delta Lake
<https://delta.io>`_ table keyed by ``track_id``. A run is one Delta commit that
replaces the rows of the tracks it wrote and adds the new ones (an upsert on
``track_id``; :mod:`keylib.storage.commit`), so readers of the latest version see exactly
one row per track, and earlier versions stay readable (``DeltaTable(uri, version=n)``):
nothing a run wrote is lost by a later run (keylib never vacuums).

The tables are read without Spark (pandas via ``deltalake`` here, DuckDB, Polars); Spark
reads them through Python in its executors (:func:`keylib.spark.frames.read_current`),
with or without a Hadoop S3 connector.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd
import pyarrow as pa

from .locations import delta_options, resolve_output, storage_error

__all__ = [
    "RUN_ID_KEY", "KEY_COLUMN", "open_table", "table_exists", "committed_runs", "read_rows", "count_rows",
    "table_files", "conform",
]

RUN_ID_KEY = "keylib.run_id"
KEY_COLUMN = "track_id"


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
        return DeltaTable(uri, version=version, storage_options=delta_options(uri, s3_settings))
    except TableNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - delta-rs raises OSError / its own types
        raise storage_error(f"cannot read table {uri}", exc) from None


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
        raise storage_error(f"cannot read table {uri}", exc) from None
    return data.to_pandas()


def count_rows(uri: str, *, s3_settings: Mapping | None = None) -> int:
    """Rows of the current version, from the commit metadata (no data read)."""
    table = open_table(uri, s3_settings=s3_settings)
    if table is None:
        return 0
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pa.compute.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def table_files(table, uri: str) -> list[str]:
    """Paths (relative to the table root) of the current version's files."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return [str(p) for p in actions.column("path").to_pylist()] if actions.num_rows else []


def conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """``data`` with ``schema``'s columns in its order and types; a column that a file
    written before it existed lacks (``attempts``, say) is null, as Delta readers see it."""
    columns = [data.column(f.name) if f.name in data.schema.names else pa.nulls(data.num_rows, f.type)
               for f in schema]
    kind = pa.RecordBatch if isinstance(data, pa.RecordBatch) else pa.Table
    return kind.from_arrays(columns, names=schema.names).cast(schema)
