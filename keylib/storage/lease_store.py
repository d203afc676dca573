"""The lease's files: one record per generation in ``OUT/_lease/``, who wrote it, when it
lapses, and the two stores that hold them (the lease itself is :mod:`keylib.storage.lease`).

The lease is a series of generation files ``OUT/_lease/<generation:012d>.json``, in a
local folder and under ``s3://bucket/prefix`` alike; the highest generation is the
current lease. Each file says who took it (run id, job, host, pid), since when, its last
heartbeat, when it expires, its ``ttl_s`` and whether it was released. A run takes the
lease by creating generation N+1 when generation N is released or expired (or there is
none), with an exclusive create (:meth:`LocalStore.create`, :meth:`S3Store.create`), so
that of two runs that both saw N free exactly one creates N+1:

* locally the file is written aside and hard-linked into place: ``link`` fails with
  ``EEXIST`` exactly like ``open(O_CREAT|O_EXCL)``, and the file appears whole;
* on S3 with a conditional put (``If-None-Match: *``), refused with 412 when the key
  exists (AWS S3, MinIO and moto's server alike).

A lease is free when released, expired, or held by a process of this machine that has
ended (same host name, boot and pid namespace, and that pid no longer running the process
that took it: Linux's ``/proc``), so a run killed here is followed at once by the next
one; a holder on another machine can only be waited out.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Mapping

from ..config import DEFAULTS
from ..errors import StorageError
from .files import write_text
from .io import is_remote
from .locations import storage_error

__all__ = ["LEASE_FOLDER", "DEFAULT_TTL_S", "Holder", "LocalStore", "S3Store", "open_store", "identity", "iso"]

LEASE_FOLDER = "_lease"
DEFAULT_TTL_S = float(DEFAULTS["lease"]["ttl_s"])
_NAME = re.compile(r"^(\d{12})\.json$")
# S3's LastModified and Date header are whole seconds: a lease counts as expired only this
# much after its ttl, so the truncation never makes a live lease look dead.
_S3_SLACK_S = 1.0


def iso(timestamp: float) -> str:
    """A UTC time as the lease records write it (ISO 8601, milliseconds, ``Z``)."""
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
        :class:`LocalStore` and :class:`S3Store`.
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


def identity() -> dict[str, Any]:
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


class LocalStore:
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
            raise storage_error(f"cannot list the lease {self.where}", exc) from None
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def read(self, generation: int) -> Holder | None:
        path = self._path(generation)
        try:
            text = path.read_text(encoding="utf-8")
            modified = path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(f"cannot read the lease {path}", exc) from None
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
            raise storage_error(f"cannot write the lease {self.where}", exc) from None

    def write(self, generation: int, text: str) -> None:
        try:
            write_text(str(self._path(generation)), text)
        except OSError as exc:
            raise storage_error(f"cannot write the lease {self.where}", exc) from None

    def delete(self, generation: int) -> None:
        try:
            self._path(generation).unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error(f"cannot delete from the lease {self.where}", exc) from None


class S3Store:
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
        return storage_error(f"{what} {self.where}", exc)

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


def open_store(output: str, s3_settings: Mapping | None) -> LocalStore | S3Store:
    """The store of the lease files of ``output`` (a resolved output root)."""
    return S3Store(output, s3_settings) if is_remote(output) else LocalStore(output)
