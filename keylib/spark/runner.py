"""What every Spark job shares: flags, configuration, logging and the session around
its flow. Each ``jobs/*.py`` file is a few lines over :func:`job_main`; exit codes and
the summary line are :mod:`keylib.outcome`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from ..config import load_config
from ..errors import ConfigError, InputError, ModelError, OutputBusyError, StorageError
from ..outcome import EXIT_CONFIG, report_error
from ..redact import RedactingFilter

__all__ = ["job_main"]

log = logging.getLogger("keylib")


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
    from .session import get_session  # imported late: --help needs no JVM

    spark = get_session(config, app_name=f"keylib-{name}")
    try:
        return run(spark, args, config)
    except (InputError, StorageError, ConfigError, ModelError, OutputBusyError) as exc:
        return report_error(name, exc)
    finally:
        spark.stop()
