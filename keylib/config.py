"""Configuration: ``conf/*.toml`` merged over built-in defaults, validated once.

:data:`DEFAULTS` holds every setting; ``conf/local.toml`` spells them out with comments,
and other files (``conf/nightly.toml``, ``conf/cluster.toml``) set only what differs.

Settings live in TOML; run arguments (input, output, date, ``--force``) are flags of the
jobs. Unknown sections and keys and wrong types raise :class:`~keylib.errors.ConfigError`
(exit code 2); ``conf/train.toml`` is read with the same rules (:func:`load_toml`) by
:func:`keylib.training.settings.load_train_config`. ``python -m keylib.config submit-args
FILE`` prints the spark-submit options that must be known before the JVM starts (master,
memory), for ``submit.sh``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["DEFAULTS", "DEFAULT_CONF", "load_config", "load_toml", "config_hash"]

DEFAULT_CONF = Path(__file__).resolve().parent.parent / "conf" / "local.toml"
_LOG4J = DEFAULT_CONF.parent / "log4j2.properties"

DEFAULTS: dict[str, Any] = {
    "spark": {
        "master": "local[2]",
        "driver_memory": "2g",
        "executor_memory": "2g",
        "arrow_batch_rows": 64,
        "tracks_per_partition": 32,
        "task_cpus": 1,
        "driver_java_options": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "conf": {
            "spark.python.daemon.module": "keylib.spark.daemon",
            "spark.ui.showConsoleProgress": "true",
            "spark.sql.shuffle.partitions": "8",
            "spark.ui.enabled": "false",
        },
    },
    "audio": {"max_duration_s": 600.0, "min_duration_s": 1.0, "max_file_mb": 512,
              "track_timeout_s": 120.0, "max_track_memory_mb": 1024},
    "extract": {"hash_content": True},
    "s3": {"endpoint_url": "", "region": "", "max_attempts": 6},
    "model": {"path": ""},
    "report": {"enabled": True},
    "nightly": {"max_failed_share": 0.05, "max_attempts": 3},
    "lease": {"ttl_s": 120.0, "heartbeat_s": 20.0},
}

# What each setting with a range may hold (checked after merging a file over the defaults).
_BOUNDS = {
    ("spark", "arrow_batch_rows"): "positive",
    ("spark", "tracks_per_partition"): "positive",
    ("spark", "task_cpus"): "positive",
    ("audio", "max_duration_s"): "positive",
    ("audio", "max_file_mb"): "positive",
    ("s3", "max_attempts"): "positive",
    ("audio", "track_timeout_s"): "positive",
    ("audio", "max_track_memory_mb"): "positive",
    ("nightly", "max_attempts"): "positive",
    ("lease", "ttl_s"): "positive",
    ("lease", "heartbeat_s"): "positive",
    ("audio", "min_duration_s"): "not negative",
    ("nightly", "max_failed_share"): "share",
}
_CHECKS = {
    "positive": (lambda value: value > 0, "must be positive"),
    "not negative": (lambda value: value >= 0, "must not be negative"),
    "share": (lambda value: 0.0 <= value <= 1.0, "must be within 0..1"),
}

def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read a TOML file over :data:`DEFAULTS` and validate it.

    Parameters
    ----------
    path : str or Path or None
        The TOML file; ``None`` reads ``conf/local.toml`` when it exists, else defaults.

    Raises
    ------
    ConfigError
        for a missing or malformed file, an unknown section or key, or a bad value.
    """
    config = load_toml(path, config=copy.deepcopy(DEFAULTS), default_file=DEFAULT_CONF, bounds=_BOUNDS)
    _refuse_renamed_modules(config, where=str(path or DEFAULT_CONF))
    return config


# keylib modules a configuration may name by an old path: such a file would make every Spark
# Python worker fail on an import, so say what to write instead.
_RENAMED_MODULES = {"keylib.daemon": "keylib.spark.daemon"}


def _refuse_renamed_modules(config: Mapping[str, Any], *, where: str) -> None:
    for key, value in config["spark"]["conf"].items():
        if value in _RENAMED_MODULES:
            raise ConfigError(f"{where}: spark.conf {key!r} = {value!r}: that module is now "
                              f"{_RENAMED_MODULES[value]!r}")


def load_toml(path: str | Path | None, *, config: dict, default_file: Path, bounds: dict) -> dict[str, Any]:
    """``config`` (the defaults) updated from ``path`` (or ``default_file`` when it exists), checked.

    ``bounds`` maps ``(section, key)`` to ``"positive"``, ``"not negative"`` or ``"share"``.
    Unknown sections and keys and wrong types raise :class:`~keylib.errors.ConfigError`.
    """
    if path is None:
        path = default_file if default_file.exists() else None
    if path is not None:
        _merge(config, _read_toml(path), where=str(path))
    for (section, key), bound in bounds.items():
        holds, requirement = _CHECKS[bound]
        if not holds(config[section][key]):
            raise ConfigError(f"{section}.{key} {requirement}, got {config[section][key]!r}")
    return config


def _read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _merge(base: dict, update: dict, *, where: str, prefix: str = "") -> None:
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{where}: unknown setting {name!r}")
        if key == "conf":  # free-form Spark settings
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a table")
            base[key].update({str(k): str(v) for k, v in value.items()})
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a table")
            _merge(base[key], value, where=where, prefix=f"{name}.")
        else:
            expected = type(base[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(
                    f"{where}: {name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
                )
            base[key] = value


def config_hash(config: dict) -> str:
    """Short stable hash of a configuration, recorded in run manifests."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# A JVM class-data archive of Spark's classes, written by ``./submit.sh setup`` (see
# keylib.spark.session.write_class_archive): a driver JVM that maps it starts in half the time.
CLASS_ARCHIVE_ENV = "KEYLIB_CLASS_ARCHIVE"


def driver_java_options(spark: Mapping[str, Any]) -> str:
    """The driver JVM's options: ``spark.driver_java_options`` of the configuration, plus
    the class-data archive named by ``$KEYLIB_CLASS_ARCHIVE`` when that file exists (a
    missing or stale archive is no error: the JVM then starts without it)."""
    options = spark["driver_java_options"].split()
    archive = os.environ.get(CLASS_ARCHIVE_ENV, "")
    if archive and os.path.isfile(archive):
        options.append(f"-XX:SharedArchiveFile={archive}")
    return " ".join(options)


def _submit_args(path: str | None) -> list[str]:
    spark = load_config(path)["spark"]
    return [
        "--master", spark["master"],
        "--driver-memory", spark["driver_memory"],
        "--executor-memory", spark["executor_memory"],
        "--conf", f"spark.task.cpus={spark['task_cpus']}",
        "--driver-java-options",
        f"-Dlog4j2.configurationFile=file:{_LOG4J} {driver_java_options(spark)}",
    ]


if __name__ == "__main__":  # used by submit.sh before the JVM starts
    if len(sys.argv) >= 2 and sys.argv[1] == "submit-args":
        try:
            print("\n".join(_submit_args(sys.argv[2] if len(sys.argv) > 2 else None)))
        except ConfigError as exc:
            print(f"keylib: configuration error: {exc}", file=sys.stderr)
            sys.exit(2)
    else:
        print("usage: python -m keylib.config submit-args [FILE.toml]", file=sys.stderr)
        sys.exit(2)
