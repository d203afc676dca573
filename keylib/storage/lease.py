"""One run at a time per output: a lease in ``OUT/_lease/``.

Every flow that writes an output (:func:`keylib.spark.flows.run_extract`, ``run_infer``,
``run_annotate``, ``run_nightly``) runs under :func:`hold` (through :func:`leased`), and
a commit (:func:`keylib.spark.frames.commit_run`) and :func:`keylib.storage.staging.clear_staging`
take the lease themselves when their caller does not hold it. A second run on a held
output stops at once with :class:`~keylib.errors.OutputBusyError` (exit code 6) naming the
holder; it writes nothing. The lease's files, and when a lease is free, are
:mod:`keylib.storage.lease_store`'s.

The holder renews its own file from a daemon thread every ``heartbeat_s``; it marks the
lease lost when it sees a higher generation (another run took over) or could not renew
it for ``ttl_s``, and :meth:`Lease.check` (called right before each Delta commit and
before staging files are deleted) then raises :class:`~keylib.errors.StorageError`.
Release rewrites the file with ``released: true``; the highest generation is never
deleted (it carries the count), older ones are pruned. A run killed while holding the
lease stops renewing it, and a run on another machine takes it over ``ttl_s`` after the
last heartbeat.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from ..config import DEFAULTS
from ..errors import ConfigError, OutputBusyError, StorageError
from ..redact import redact
from .lease_store import DEFAULT_TTL_S, Holder, LocalStore, S3Store, identity, iso, open_store
from .locations import new_run_id, resolve_output

__all__ = ["Lease", "acquire", "hold", "held", "leased", "lease_settings", "output_of"]

DEFAULT_HEARTBEAT_S = float(DEFAULTS["lease"]["heartbeat_s"])
# Of several runs that see the lease free at once, one wins and the others are told who.
_ACQUIRE_TRIES = 3
# How long release waits for a heartbeat that is still talking to the store.
_JOIN_S = 15.0

log = logging.getLogger("keylib")


def _busy(where: str, holder: Holder) -> OutputBusyError:
    expires = (holder.record or {}).get("expires", "unknown")
    return OutputBusyError(redact(f"{where} is held by {holder.describe()}; its lease expires at {expires} "
                                   "unless renewed (one run at a time per output)"))


class Lease:
    """The lease of one output, held by this process (see :func:`acquire` and :func:`hold`).

    Attributes
    ----------
    output : str
        The output root (a local folder or ``s3://bucket/prefix``).
    generation : int
        The generation this process created.
    run_id, job : str
        Who holds it.
    ttl_s, heartbeat_s : float
        How long it lives without a heartbeat, and how often the heartbeat renews it.
    """

    def __init__(self, store: LocalStore | S3Store, *, output: str, record: dict, ttl_s: float,
                 heartbeat_s: float, renewed: float):
        self.output = output
        self.generation = int(record["generation"])
        self.run_id = str(record["run_id"])
        self.job = str(record["job"])
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self._store = store
        self._record = record
        self._renewed = renewed  # time.monotonic() when the last successful write began
        self._lost: str | None = None
        self._released = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Lease({self.output!r}, generation={self.generation}, run_id={self.run_id!r})"

    @property
    def holder(self) -> Holder:
        """This lease as another run would describe it."""
        return Holder(self.generation, dict(self._record), expired=False)

    @property
    def lost(self) -> str | None:
        """Why this process no longer holds the lease, or ``None`` while it does."""
        return self._lost

    def start(self) -> None:
        """Start the heartbeat (a daemon thread: a killed process stops renewing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, name=f"keylib-lease-{self.generation}",
                                            daemon=True)
            self._thread.start()

    def check(self, *, before: str) -> None:
        """Make sure this process still holds the lease, and renew it now, so that the step
        that follows (a commit, deleting staging files) has a whole ``ttl_s`` to itself.

        Parameters
        ----------
        before : str
            What is about to happen, for the message (``"committing run R to T"``).

        Raises
        ------
        StorageError
            the lease was lost (another run took it over, or it went unrenewed for
            ``ttl_s``), was released, or cannot be renewed: the caller must not go on.
        """
        try:
            self._beat()
        except StorageError as exc:
            if self._lost is None:
                raise StorageError(redact(f"cannot renew the lease on {self.output} before {before}: {exc}")) from None
        if self._lost is not None:
            raise StorageError(redact(f"lost the lease on {self.output} before {before}: {self._lost}"))
        if self._released:
            raise StorageError(redact(f"the lease on {self.output} was released before {before}"))

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released, so the next run need not wait
        for it to expire. Best effort: should the store fail, the lease lapses after
        ``ttl_s``."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=_JOIN_S)
        with self._lock:
            if self._released or self._lost is not None:  # a lost lease is someone else's now
                return
            self._released = True
            self._record.update(released=True, heartbeat=iso(time.time()))
            try:
                self._store.write(self.generation, json.dumps(self._record))
            except StorageError as exc:
                log.warning("could not release the lease on %s (it lapses at %s): %s", redact(self.output),
                            self._record.get("expires"), exc)

    def _lose(self, reason: str) -> None:
        self._lost = reason
        self._stop.set()
        log.error("lost the lease on %s: %s", redact(self.output), redact(reason))

    def _beat(self) -> None:
        """One renewal: give up when past ``ttl_s`` or overtaken, else rewrite the file."""
        with self._lock:
            if self._lost is not None or self._released:
                return
            if time.monotonic() - self._renewed > self.ttl_s:
                # Past the ttl another run may already hold the lease: never renew it back.
                self._lose(f"it was not renewed for {self.ttl_s:g} s (lease.ttl_s), "
                           f"so another run may have taken it over")
                return
            top = max(self._store.generations(), default=0)
            if top > self.generation:
                other = self._store.read(top)
                self._lose(f"taken over by {other.describe() if other else f'generation {top}'}")
                return
            started, now = time.monotonic(), time.time()
            record = {**self._record, "heartbeat": iso(now), "expires": iso(now + self.ttl_s)}
            self._store.write(self.generation, json.dumps(record))
            self._record, self._renewed = record, started

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
            except StorageError as exc:  # tried again next beat, until the ttl runs out
                log.warning("could not renew the lease on %s: %s", redact(self.output), exc)
            if self._lost is not None:
                return


def acquire(output: str | os.PathLike, *, run_id: str, job: str, s3_settings: Mapping | None = None,
            ttl_s: float = DEFAULT_TTL_S, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> Lease:
    """Take the lease of ``output`` (not re-entrant, no heartbeat yet: :func:`hold` is the
    way to hold it).

    Parameters
    ----------
    output : str or PathLike
        The output root: a local folder or ``s3://bucket/prefix``.
    run_id, job : str
        Recorded in the lease, for the message another run gets.
    s3_settings : mapping, optional
        The ``[s3]`` configuration section.
    ttl_s, heartbeat_s : float
        ``[lease]``: how long the lease lives without a heartbeat, and how often the
        heartbeat renews it.

    Returns
    -------
    Lease

    Raises
    ------
    OutputBusyError
        another run holds the lease (its message names the run and when it expires).
    StorageError
        the store cannot be reached.
    ConfigError
        ``heartbeat_s`` is not below ``ttl_s``.
    """
    if not 0 < heartbeat_s < ttl_s:
        raise ConfigError(f"lease.heartbeat_s ({heartbeat_s:g}) must be positive and below lease.ttl_s ({ttl_s:g}), "
                          "or the lease lapses between heartbeats")
    root = resolve_output(output)
    store = open_store(root, s3_settings)
    token = uuid.uuid4().hex
    current: Holder | None = None
    for _ in range(_ACQUIRE_TRIES):
        generations = store.generations()
        top = generations[-1] if generations else 0
        current = store.read(top) if top else None
        if top and current is None:  # pruned between the listing and the read: look again
            continue
        if current is not None and not current.free:
            raise _busy(root, current)
        started, now = time.monotonic(), time.time()
        record = {"generation": top + 1, "token": token, "run_id": run_id, "job": job, **identity(),
                  "since": iso(now), "heartbeat": iso(now), "expires": iso(now + ttl_s), "ttl_s": float(ttl_s),
                  "released": False}
        if not store.create(top + 1, json.dumps(record), token=token):
            continue  # another run created it first: the next look names it
        # A listing older than a prune could make this a re-created old generation below
        # the current one: the lease is ours only if nothing is higher.
        if store.generations()[-1] > top + 1:
            store.delete(top + 1)
            continue
        if current is not None and not current.released:
            why = ("its process is gone" if current.gone else
                   f"it expired at {(current.record or {}).get('expires')} without a heartbeat")
            log.warning("took over the lease on %s from %s: %s", redact(root), redact(current.describe()), why)
        for old in generations[:-1]:  # keep the previous holder's file, for the record
            try:
                store.delete(old)
            except StorageError as exc:
                log.info("could not prune an old lease file: %s", exc)
        return Lease(store, output=root, record=record, ttl_s=float(ttl_s), heartbeat_s=float(heartbeat_s),
                     renewed=started)
    if current is None or current.free:
        raise OutputBusyError(redact(f"{root} is being taken by other runs ({_ACQUIRE_TRIES} tries)"))
    raise _busy(root, current)


@dataclass
class _Held:
    lease: Lease
    thread: int
    depth: int = 1


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


@contextmanager
def hold(output: str | os.PathLike, *, run_id: str, job: str, s3_settings: Mapping | None = None,
         ttl_s: float = DEFAULT_TTL_S, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> Iterator[Lease]:
    """Hold the lease of ``output`` for the ``with`` block: take it (:func:`acquire`),
    renew it every ``heartbeat_s``, release it at the end.

    Re-entrant within one thread: a block inside another on the same output (``nightly``
    calling ``annotate``, a flow calling :func:`keylib.spark.frames.commit_run`) shares the
    outer lease. Another thread of this process is refused like another process.

    Yields
    ------
    Lease

    Raises
    ------
    OutputBusyError
        another run holds the lease.
    StorageError
        the store cannot be reached, or (inside an outer block) the lease was lost.
    """
    root = resolve_output(output)
    with _held_lock:
        outer = _held.get(root)
        if outer is not None:
            if outer.thread != threading.get_ident():
                raise _busy(root, outer.lease.holder)
            outer.depth += 1
    if outer is not None:
        try:
            if outer.lease.lost is not None:
                raise StorageError(redact(f"lost the lease on {root}: {outer.lease.lost}"))
            yield outer.lease
        finally:
            with _held_lock:
                outer.depth -= 1
        return
    lease = acquire(root, run_id=run_id, job=job, s3_settings=s3_settings, ttl_s=ttl_s, heartbeat_s=heartbeat_s)
    with _held_lock:
        _held[root] = _Held(lease, threading.get_ident())
    try:
        lease.start()
        yield lease
    finally:
        with _held_lock:
            _held.pop(root, None)
        lease.release()


def held(uri: str | os.PathLike) -> Lease | None:
    """The lease this process holds over ``uri`` (an output root or a path inside one), or
    ``None``."""
    uri = resolve_output(uri)
    with _held_lock:
        for root, entry in _held.items():
            if uri == root or uri.startswith(root + "/"):
                return entry.lease
    return None


def output_of(table: str | os.PathLike) -> str:
    """The output root of a table (``OUT`` of ``OUT/chroma``), whose lease covers it."""
    return resolve_output(table).rsplit("/", 1)[0]


def lease_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`hold`'s keyword arguments from a configuration: ``s3_settings``, ``ttl_s``,
    ``heartbeat_s`` (``[lease]`` over its defaults)."""
    lease = {**DEFAULTS["lease"], **dict(config.get("lease") or {})}
    return {"s3_settings": config.get("s3") or {}, "ttl_s": float(lease["ttl_s"]),
            "heartbeat_s": float(lease["heartbeat_s"])}


def leased(job: str) -> Callable:
    """Run a flow under the lease of its ``output`` (:func:`hold`), as ``job``.

    The flow is called with keyword arguments ``output``, ``config`` and ``run_id`` (made
    here when not given, so the lease and the run carry the same id).
    """

    def wrap(flow: Callable) -> Callable:
        @functools.wraps(flow)
        def run(spark, *, output, config, run_id: str | None = None, **kwargs):
            run_id = run_id or new_run_id()
            with hold(output, run_id=run_id, job=job, **lease_settings(config)):
                return flow(spark, output=output, config=config, run_id=run_id, **kwargs)

        return run

    return wrap
