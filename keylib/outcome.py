"""How a job ends: its exit code, the one line of a known error, the run's summary line.

Shared by the Spark jobs (:func:`keylib.spark.runner.job_main`), the training jobs and the
``keylib`` command, none of which needs Spark for it.

Exit codes (documented in the README):

====  =======================================================================
0     the run completed and failures (if any) stayed within ``nightly.max_failed_share``
1     internal error (a bug; the traceback is printed)
2     bad configuration, command-line usage, or an unusable model file
3     the input cannot be listed (missing folder or manifest, unreachable S3)
4     more tracks failed than ``nightly.max_failed_share`` allows
5     the output cannot be read or written (store unreachable, commit refused); the run left
      nothing visible
6     another run holds the output's lease; this run wrote nothing and prints one line
      naming the holder
====  =======================================================================
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, InputError, ModelError, OutputBusyError, StorageError
from .redact import redact

__all__ = [
    "EXIT_OK", "EXIT_INTERNAL", "EXIT_CONFIG", "EXIT_INPUT", "EXIT_FAILED_TRACKS", "EXIT_STORAGE", "EXIT_BUSY",
    "RunSummary", "report_error",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_FAILED_TRACKS = 4
EXIT_STORAGE = 5
EXIT_BUSY = 6

@dataclass
class RunSummary:
    """Counts of one run, printed as its last line."""

    job: str
    listed: int = 0
    new: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (track_id, status, error)

    @property
    def seconds(self) -> float:
        return time.time() - self.started

    def line(self, fields: tuple[str, ...] = ()) -> str:
        """The one summary line; ``fields`` names entries of :attr:`extra` to append."""
        seconds = self.seconds
        rate = self.new / seconds if seconds > 0 else 0.0
        extra = "".join(f", {k} {self.extra[k]}" for k in fields if k in self.extra)
        return (
            f"keylib {self.job}: listed {self.listed}, new {self.new}, skipped {self.skipped}, "
            f"failed {self.failed}, seconds {seconds:.1f}, tracks/s {rate:.2f}{extra}"
        )

    def exit_code(self, max_failed_share: float) -> int:
        if self.new and self.failed / self.new > max_failed_share:
            return EXIT_FAILED_TRACKS
        return EXIT_OK


def report_error(name: str, exc: InputError | StorageError | ConfigError | ModelError | OutputBusyError) -> int:
    """Print a known error as ``keylib NAME: <kind> error: ...`` and return its exit code."""
    for kinds, what, code in ((InputError, "input error", EXIT_INPUT), (StorageError, "storage error", EXIT_STORAGE),
                              (OutputBusyError, "output busy", EXIT_BUSY),
                              ((ConfigError, ModelError), "configuration error", EXIT_CONFIG)):
        if isinstance(exc, kinds):
            print(f"keylib {name}: {what}: {redact(str(exc))}", file=sys.stderr)
            return code
    raise exc
