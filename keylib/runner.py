"""What every Spark job shares: flags, configuration, the session, exit codes, the
summary line. Each ``jobs/*.py`` file is a few lines over :func:`job_main`.

Exit codes (documented in the README):

====  =======================================================================
0     every track succeeded (silent tracks count as success)
1     unexpected internal error (a bug: the traceback is printed)
2     bad configuration or command-line usage
3     the input cannot be listed (missing folder or manifest, unreachable S3)
4     more tracks failed than ``nightly.max_failed_share`` allows
5     the output cannot be read or written (store unreachable); the run left nothing visible
6     another run holds the output (its lease has not expired); this run wrote nothing
====  =======================================================================
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import load_config
from .errors import ConfigError, InputError, ModelError, OutputBusyError, StorageError
from .redact import RedactingFilter, redact

__all__ = [
    "EXIT_OK", "EXIT_INTERNAL", "EXIT_CONFIG", "EXIT_INPUT", "EXIT_FAILED_TRACKS", "EXIT_STORAGE", "EXIT_BUSY",
    "RunSummary", "job_main",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_FAILED_TRACKS = 4
EXIT_STORAGE = 5
EXIT_BUSY = 6

log = logging.getLogger("keylib")


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


def _configure_logging() -> None:
    # Under spark-submit the driver's stdout and stderr both reach the console through the
    # JVM; keylib logs to stderr with its own handler, py4j's chatter is silenced.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s keylib %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())  # no log line of any job carries a credential
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("py4j").setLevel(logging.WARNING)


def job_main(
    name: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[Any, argparse.Namespace, dict], int],
    argv: list[str] | None = None,
) -> int:
    """Parse flags, load ``--conf``, start Spark, call ``run(spark, args, config)``.

    ``run`` returns the exit code; known error types map to the documented codes.
    """
    parser = argparse.ArgumentParser(prog=f"submit.sh {name}", description=description)
    parser.add_argument("--conf", default=None, help="configuration file (default conf/local.toml)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        config = load_config(args.conf)
    except ConfigError as exc:
        print(f"keylib {name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from .spark import get_session  # imported late: --help needs no JVM

    spark = get_session(config, app_name=f"keylib-{name}")
    try:
        return run(spark, args, config)
    except (InputError, StorageError, ConfigError, ModelError, OutputBusyError) as exc:
        return report_error(name, exc)
    finally:
        spark.stop()


def report_error(name: str, exc: InputError | StorageError | ConfigError | ModelError | OutputBusyError) -> int:
    """Print a known error as ``keylib NAME: <kind> error: ...`` and return its exit code."""
    for kinds, what, code in ((InputError, "input error", EXIT_INPUT), (StorageError, "storage error", EXIT_STORAGE),
                              (OutputBusyError, "output busy", EXIT_BUSY),
                              ((ConfigError, ModelError), "configuration error", EXIT_CONFIG)):
        if isinstance(exc, kinds):
            print(f"keylib {name}: {what}: {redact(str(exc))}", file=sys.stderr)
            return code
    raise exc
