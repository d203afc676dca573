"""One run at a time per output: a lease in ``OUT/_lease/``.

Every flow that writes an output (:func:`keylib.spark.flows.run_extract`, ``run_infer``,
``run_annotate``, ``run_nightly``) runs under :func:`hold` (through :func:`leased`), and
:func:`keylib.storage.tables.commit_run` and :func:`keylib.storage.tables.clear_staging` take the lease
themselves when their caller does not hold it. A second run on a held output stops at
once with :class:`~keylib.errors.OutputBusyError` (exit code 6) naming the holder; it
writes nothing.

The lease is a series of generation files ``OUT/_lease/<generation:012d>.json``, in a
local folder and under ``s3://bucket/prefix`` alike; the highest generation is the
current lease. Each file says who took it (run id, job, host, pid), since when, its last
heartbeat, when it expires, its ``ttl_s`` and whether it was released. A run takes the
lease by creating generation N+1 when generation N is released or expired (or there is
none), with an exclusive create, so that of two runs that both saw N free exactly one
creates N+1:

* locally the file is written aside and hard-linked into place: ``link`` fails with
  ``EEXIST`` exactly like ``open(O_CREAT|O_EXCL)``, and the file appears whole;
* on S3 with a conditional put (``If-None-Match: *``), refused with 412 when the key
  exists (AWS S3, MinIO and moto's server alike).

A lease is free when released, expired, or held by a process of this machine that has
ended (same host name, boot and pid namespace, and that pid no longer running the process
that took it: Linux's ``/proc``), so a run killed here is followed at once by the next
one; a holder on another machine can only be waited out.

The holder renews its own file from a daemon thread every ``heartbeat_s``; it marks the
lease lost when it sees a higher generation (another run took over) or could not renew
it for ``ttl_s``, and :meth:`Lease.check` (called by :func:`keylib.storage.tables.commit_run`
right before each Delta commit and before staging files are deleted) then raises
:class:`~keylib.errors.StorageError`. Release rewrites the file with ``released: true``;
the highest generation is never deleted (it carries the count), older ones are pruned.
A run killed while holding the lease stops renewing it, and a run on another machine
takes it over ``ttl_s`` after the last heartbeat.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..config import DEFAULTS
from ..errors import ConfigError, OutputBusyError, StorageError
from ..redact import redact
from .tables import _storage_error, is_remote, new_run_id, resolve_output, write_text

__all__ = ["LEASE_FOLDER", "Holder", "Lease", "acquire", "hold", "held", "leased", "lease_settings", "output_of"]

LEASE_FOLDER = "_lease"
DEFAULT_TTL_S = float(DEFAULTS["lease"]["ttl_s"])
DEFAULT_HEARTBEAT_S = float(DEFAULTS["lease"]["heartbeat_s"])
_NAME = re.compile(r"^(\d{12})\.json$")
# S3's LastModified and Date header are whole seconds: a lease counts as expired only this
# much after its ttl, so the truncation never makes a live lease look dead.
_S3_SLACK_S = 1.0
# Of several runs that see the lease free at once, one wins and the others are told who.
_ACQUIRE_TRIES = 3
# How long release waits for a heartbeat that is still talking to the store.
_JOIN_S = 15.0

log = logging.getLogger("keylib")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass
class Holder:
    """One lease file as a contender reads it.

    Attributes
    ----------
    generation : int
        Its generation (the current lease is the highest).
    record : dict or None
        What the holder wrote (``None``: the file could not be parsed).
    expired : bool
        Its ``ttl_s`` has passed since its last heartbeat, by the clock described in
        :class:`_LocalStore` and :class:`_S3Store`.
    """

    generation: int
    record: dict | None
    expired: bool

    @property
    def released(self) -> bool:
        return bool(self.record and self.record.get("released"))

    @property
    def gone(self) -> bool:
        """The holder ran on this machine and its process has ended (see :func:`_gone`)."""
        return _gone(self.record)

    @property
    def free(self) -> bool:
        """Another run may take the lease over."""
        return self.released or self.expired or self.gone

    def describe(self) -> str:
        """``run R (job J, host H, pid P) since T``: who holds it, on one line."""
        r = self.record
        if not r:
            return f"an unreadable lease file (generation {self.generation})"
        return (f"run {r.get('run_id')} (job {r.get('job')}, host {r.get('host')}, pid {r.get('pid')}) "
                f"since {r.get('since')}")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` when there is no
    such process or it has ended (a zombie not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _identity() -> dict[str, Any]:
    """This process, as its lease records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": _boot_id(), "pid_ns": _pid_namespace(),
            "pid_start": _process_start(pid)}


def _gone(record: Mapping | None) -> bool:
    """The holder ran on this machine and its process has ended.

    Only when the host name, the boot and the pid namespace are all this process's can a
    pid be looked up here (containers on one host may share a host name, not a pid
    namespace); then a pid that is not running, or runs a process started at another time
    (a reused pid), means the holder is gone. Anything unknown means it is not.
    """
    if not record or record.get("host") != socket.gethostname() or record.get("pid_start") is None:
        return False
    here = (_boot_id(), _pid_namespace())
    if None in here or (record.get("boot_id"), record.get("pid_ns")) != here:
        return False
    return _process_start(int(record.get("pid", 0))) != record["pid_start"]


def _busy(where: str, holder: Holder) -> OutputBusyError:
    expires = (holder.record or {}).get("expires", "unknown")
    return OutputBusyError(redact(f"{where} is held by {holder.describe()}; its lease expires at {expires} "
                                   "unless renewed (one run at a time per output)"))


class _LocalStore:
    """Lease files in a local (or NFS) folder.

    Expiry compares the holder's ``expires`` (its wall clock, UTC) with this process's
    wall clock. On one machine the two are the same clock; for a folder shared between
    machines (NFS) their clocks must agree to well within ``ttl_s - heartbeat_s`` (NTP),
    since a reader whose clock runs ahead by more could take over a live lease.
    """

    def __init__(self, output: str):
        self.folder = Path(output) / LEASE_FOLDER
        self.where = str(self.folder)

    def _path(self, generation: int) -> Path:
        return self.folder / f"{generation:012d}.json"

    def generations(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _storage_error(f"cannot list the lease {self.where}", exc) from None
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def read(self, generation: int) -> Holder | None:
        path = self._path(generation)
        try:
            text = path.read_text(encoding="utf-8")
            modified = path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(f"cannot read the lease {path}", exc) from None
        record = _parse(text)
        expires = _timestamp(record.get("expires")) if record else None
        if expires is None:  # not written by keylib: it lapses like a lease of the default ttl
            expires = modified + DEFAULT_TTL_S
        return Holder(generation, record, expired=time.time() > expires)

    def create(self, generation: int, text: str, *, token: str) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".new-", suffix=".part")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, self._path(generation))
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise _storage_error(f"cannot write the lease {self.where}", exc) from None

    def write(self, generation: int, text: str) -> None:
        try:
            write_text(str(self._path(generation)), text)
        except OSError as exc:
            raise _storage_error(f"cannot write the lease {self.where}", exc) from None

    def delete(self, generation: int) -> None:
        try:
            self._path(generation).unlink(missing_ok=True)
        except OSError as exc:
            raise _storage_error(f"cannot delete from the lease {self.where}", exc) from None


class _S3Store:
    """Lease objects under ``s3://bucket/prefix/_lease/`` (boto3, :func:`keylib.storage.s3.client`).

    Expiry is read from the store's own clock: the object's ``LastModified`` (set by the
    store at the holder's last heartbeat) against the ``Date`` header of the same GET
    response, so the holder's and the reader's clocks do not matter. Only when a store
    sends no ``Date`` does the reader's wall clock stand in.
    """

    def __init__(self, output: str, settings: Mapping | None):
        from .s3 import client, split_uri

        self.bucket, prefix = split_uri(output)
        self.prefix = f"{prefix.strip('/')}/{LEASE_FOLDER}/".lstrip("/")
        self.client = client(settings)
        self.where = f"s3://{self.bucket}/{self.prefix}"

    def _key(self, generation: int) -> str:
        return f"{self.prefix}{generation:012d}.json"

    def _error(self, what: str, exc: Exception) -> StorageError:
        return _storage_error(f"{what} {self.where}", exc)

    def generations(self) -> list[int]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[int] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    match = _NAME.match(obj["Key"][len(self.prefix):])
                    if match:
                        found.append(int(match.group(1)))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("cannot list the lease", exc) from None
        return sorted(found)

    def read(self, generation: int) -> Holder | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(generation))
            text = response["Body"].read().decode("utf-8", errors="replace")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error("cannot read the lease", exc) from None
        except BotoCoreError as exc:
            raise self._error("cannot read the lease", exc) from None
        record = _parse(text)
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        ttl = float(record.get("ttl_s", DEFAULT_TTL_S)) if record else DEFAULT_TTL_S
        expired = now - response["LastModified"].timestamp() > ttl + _S3_SLACK_S
        return Holder(generation, record, expired=expired)

    def create(self, generation: int, text: str, *, token: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(generation), Body=text.encode("utf-8"),
                                   ContentType="application/json", IfNoneMatch="*")
            return True
        except ClientError as exc:
            # 412: the key exists; 409: another conditional put of it is in flight.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (409, 412):
                raise self._error("cannot write the lease", exc) from None
        except BotoCoreError as exc:
            raise self._error("cannot write the lease", exc) from None
        # botocore retries a put whose answer was lost, and the retry reads 412 although
        # the first attempt created the key: the token says whose it is.
        seen = self.read(generation)
        return bool(seen and seen.record and seen.record.get("token") == token)

    def write(self, generation: int, text: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(generation), Body=text.encode("utf-8"),
                                   ContentType="application/json")
        except (BotoCoreError, ClientError) as exc:
            raise self._error("cannot write the lease", exc) from None

    def delete(self, generation: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(generation))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("cannot delete from the lease", exc) from None


def _store(output: str, s3_settings: Mapping | None) -> _LocalStore | _S3Store:
    return _S3Store(output, s3_settings) if is_remote(output) else _LocalStore(output)


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

    def __init__(self, store: _LocalStore | _S3Store, *, output: str, record: dict, ttl_s: float,
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
            self._record.update(released=True, heartbeat=_iso(time.time()))
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
            record = {**self._record, "heartbeat": _iso(now), "expires": _iso(now + self.ttl_s)}
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
    store = _store(root, s3_settings)
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
        record = {"generation": top + 1, "token": token, "run_id": run_id, "job": job, **_identity(),
                  "since": _iso(now), "heartbeat": _iso(now), "expires": _iso(now + ttl_s), "ttl_s": float(ttl_s),
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
    calling ``annotate``, a flow calling :func:`keylib.storage.tables.commit_run`) shares the
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
