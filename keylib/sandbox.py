"""Run a per-track function in a child process that may crash, hang or bloat without taking
its caller down.

A Spark task decodes dozens of tracks in one Python worker. A decoder that segfaults, a
file that makes a library allocate gigabytes, a read that never returns: in the worker
itself, each would fail the whole task (and, after Spark's retries, the run), and the
track would never get a row. :class:`TrackSandbox` forks one child per worker that works
through the tracks one at a time; the parent waits for each result with a wall-clock limit
and watches the child's resident memory. A child that dies, overruns its time or outgrows
its memory is killed with its whole process group (an ``ffmpeg`` it started included), the
track gets a ``crashed`` or ``timeout`` row, and a fresh child takes the next track.

Why not ``concurrent.futures`` or ``multiprocessing.Pool``: neither bounds a task's memory,
and a pool whose worker dies is broken for every task after it; a fork server is kept here
for its cost (a fork per track would copy the page tables of a worker that holds pandas,
pyarrow and the model, about 5 ms each).

Fault injection, for tests and operators' drills: ``KEYLIB_FAULT_INJECTION="ACTION:NAME"``
makes the child ``kill`` itself (SIGKILL), ``segv`` (a real segmentation fault), ``hang``
or ``bloat`` (allocate without end) when it starts a track whose URI ends with ``NAME``.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import time
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable, Mapping

from .errors import TrackCrashedError, TrackTimeoutError

__all__ = ["TrackSandbox", "FAULT_ENV"]

FAULT_ENV = "KEYLIB_FAULT_INJECTION"
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
# How often the parent looks at the child's memory while it waits (a result wakes it at once).
_POLL_S = 0.05


class TrackSandbox:
    """Call ``function(track)`` in a forked child process, one track at a time.

    Parameters
    ----------
    function : callable
        ``function(track) -> result``; it runs in the child, and its result is pickled
        back. It should catch its own per-track errors: an exception that escapes it is
        the ``error`` of a ``crashed`` row.
    timeout_s : float
        Wall-clock limit for one call; longer -> :class:`~keylib.errors.TrackTimeoutError`.
    max_memory_mb : float
        Resident memory limit of the child (it starts as a copy of its parent, so this
        bounds the whole process); more -> :class:`~keylib.errors.TrackCrashedError`.

    Examples
    --------
    >>> with TrackSandbox(len, timeout_s=5, max_memory_mb=2048) as box:  # doctest: +SKIP
    ...     box.run("abc")
    3
    """

    def __init__(self, function: Callable[[Any], Any], *, timeout_s: float, max_memory_mb: float):
        self.function = function
        self.timeout_s = float(timeout_s)
        self.max_memory_mb = float(max_memory_mb)
        self._pid: int | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> "TrackSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, track: Any, *, name: str = "") -> Any:
        """``function(track)`` from the child.

        Raises
        ------
        TrackTimeoutError
            the call took longer than ``timeout_s`` (the child is killed).
        TrackCrashedError
            the child died (signal, exit, an exception that escaped ``function``) or went
            over ``max_memory_mb`` (the child is killed); ``name`` is quoted in the message.
        """
        self.start()
        started = time.monotonic()
        try:
            self._conn.send(track)
        except (BrokenPipeError, OSError):
            raise TrackCrashedError(self._death(f"the decoding process of {name or 'this track'} died")) from None
        while True:
            if self._conn.poll(_POLL_S):
                try:
                    ok, value = self._conn.recv()
                except (EOFError, OSError):
                    raise TrackCrashedError(self._death(f"the decoding process died on {name or 'this track'}")) \
                        from None
                if ok:
                    return value
                raise TrackCrashedError(f"decoding {name or 'this track'} failed: {value}")
            elapsed = time.monotonic() - started
            rss = _resident_mb(self._pid)
            if rss is None:  # gone without a word
                raise TrackCrashedError(self._death(f"the decoding process died on {name or 'this track'}"))
            if rss > self.max_memory_mb:
                self._kill()
                raise TrackCrashedError(
                    f"decoding used {rss:.0f} MB of memory, above the limit of {self.max_memory_mb:.0f} MB "
                    f"(audio.max_track_memory_mb); stopped after {elapsed:.1f} s"
                )
            if elapsed > self.timeout_s:
                self._kill()
                raise TrackTimeoutError(
                    f"reading and decoding took longer than {self.timeout_s:g} s (audio.track_timeout_s); stopped"
                )

    def start(self) -> None:
        """Fork the child now if there is none (:meth:`run` does it when needed)."""
        if self._pid is not None:
            return
        parent_end, child_end = Pipe(duplex=True)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            parent_end.close()
            _child_main(self.function, child_end)
        child_end.close()
        self._pid, self._conn = pid, parent_end

    def close(self) -> None:
        """End the child (it also ends by itself when its parent goes)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        self._kill()

    # ------------------------------------------------------------------ internals

    def _kill(self) -> None:
        """SIGKILL the child's process group and reap it."""
        if self._pid is None:
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(self._pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass
        self._forget()

    def _death(self, what: str) -> str:
        """``what`` with the cause of the child's death (it is reaped and forgotten)."""
        cause = "it stopped answering"
        deadline = time.monotonic() + 2.0  # the pipe closes as the child exits: it is nearly gone
        try:
            while time.monotonic() < deadline:
                done, status = os.waitpid(self._pid, os.WNOHANG)
                if done:
                    if os.WIFSIGNALED(status):
                        number = os.WTERMSIG(status)
                        cause = f"killed by {signal.Signals(number).name}" + (
                            ", out of memory?" if number == signal.SIGKILL else "")
                    elif os.WIFEXITED(status):
                        cause = f"exit status {os.WEXITSTATUS(status)}"
                    break
                time.sleep(0.01)
        except ChildProcessError:
            cause = "cause unknown"
        self._kill()
        return f"{what} ({cause})"

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._pid = self._conn = None


def _child_main(function: Callable[[Any], Any], conn: Connection) -> None:
    """Serve ``function`` over ``conn`` until told to stop or the parent goes."""
    code = 0
    try:
        os.setpgid(0, 0)  # its own group: killing it kills the ffmpeg it started too
        faulthandler.disable()  # a crash is reported by the parent, in the track's row
        _die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        fault = _fault_injection()
        while True:
            try:
                track = conn.recv()
            except (EOFError, OSError):
                break
            if track is None:
                break
            if fault is not None:
                _inject(fault, track)
            try:
                reply = (True, function(track))
            except Exception as exc:  # noqa: BLE001 - reported to the parent as this track's failure
                reply = (False, f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    except BaseException:  # noqa: BLE001 - a child must never run its parent's code on the way out
        code = 1
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed Spark worker must
    not leave a decoder running); elsewhere the closed pipe ends the child after its track."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)


def _resident_mb(pid: int | None) -> float | None:
    """Resident memory of a live process in MB, ``None`` when it is gone (or a zombie)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        # No /proc (not Linux): memory is not watched; a dead child shows in waitpid.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return None if done else 0.0
    if resident_pages == 0:
        return None  # a zombie: it has exited and waits to be reaped
    return resident_pages * _PAGE_MB


def _fault_injection() -> tuple[str, str] | None:
    spec = os.environ.get(FAULT_ENV, "")
    action, _, name = spec.partition(":")
    return (action, name) if action in {"kill", "segv", "hang", "bloat"} and name else None


def _inject(fault: tuple[str, str], track: Any) -> None:
    action, name = fault
    uri = track.get("uri", "") if isinstance(track, Mapping) else str(track)
    if not str(uri).endswith(name):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "segv":
        ctypes.string_at(0)  # a real segmentation fault
    elif action == "hang":
        while True:
            time.sleep(3600)
    elif action == "bloat":
        hoard = []
        while True:
            hoard.append(bytearray(64 * 2**20))  # written, so resident
            for i in range(0, len(hoard[-1]), 4096):
                hoard[-1][i] = 1
