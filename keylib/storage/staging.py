"""A table's run folders (``TABLE/run=<run_id>/``): a run's Parquet files live there from
the moment the executors write them, referenced by no Delta log entry (so invisible to
every reader) until the run's commit names them.

Right before a commit, the files it adds are checked whole (:func:`check_files`); after
it, files its commit does not name (failed task attempts) are deleted
(:func:`delete_unreferenced`). Files of a run that never committed (driver killed, store
unreachable) are deleted by the next holder of the output's lease (:func:`clear_staging`),
never those of a run in progress elsewhere: that run holds the lease.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

import pyarrow.fs as pafs

from ..config import DEFAULTS
from ..errors import StorageError
from ..redact import redact
from .lease import hold, output_of
from .locations import filesystem, new_run_id, storage_error
from .tables import committed_runs

__all__ = ["output_lease", "clear_staging", "check_files", "delete_unreferenced"]

log = logging.getLogger("keylib")


def output_lease(uri: str, *, run_id: str, job: str, s3_settings: Mapping | None):
    """The lease of the output holding the table ``uri`` (:func:`keylib.storage.lease.hold`): the
    caller's when it holds it, else taken here with the default ``[lease]`` timings."""
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
    with output_lease(uri, run_id=keep[0] if keep else new_run_id(), job="clear_staging",
                       s3_settings=s3_settings) as lease:
        fs, root = filesystem(uri, s3_settings)
        try:
            entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=False))
        except Exception as exc:  # noqa: BLE001
            raise storage_error(f"cannot list {uri}", exc) from None
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
                log.warning("could not delete uncommitted files %s/%s: %s", uri, folder, redact(exc))
    if stale:
        log.info("deleted the uncommitted files of %d killed run(s) under %s", len(stale), redact(uri))
    return stale


def check_files(uri: str, settings: Mapping, run_id: str, adds: list) -> None:
    """Make sure every file a commit adds is in the run's folder, whole (delta-rs commits
    an add whose file is gone, which would break every reader of that version)."""
    fs, root = filesystem(uri, settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/run={run_id}", allow_not_found=True))
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot list the files of run {run_id} in {uri}", exc) from None
    present = {f"run={run_id}/{i.base_name}": i.size for i in infos}
    missing = [a.path for a in adds if present.get(a.path) != a.size]
    if missing:
        raise StorageError(redact(f"cannot commit run {run_id} to {uri}: {len(missing)} of its {len(adds)} files "
                                   f"are missing or changed (first {missing[0]}); nothing was committed"))


def delete_unreferenced(uri: str, settings: Mapping, run_id: str, referenced: set[str]) -> None:
    """Delete files in this run's folder that its commit does not name (failed task
    attempts); best effort."""
    try:
        fs, root = filesystem(uri, settings)
        folder = f"{root}/run={run_id}"
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            if f"run={run_id}/{info.base_name}" not in referenced:
                fs.delete_file(info.path)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not tidy run folder %s: %s", run_id, redact(exc))
