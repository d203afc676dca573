"""Configuration: ``conf/*.toml`` merged over built-in defaults, validated once.

:data:`DEFAULTS` holds every setting; ``conf/local.toml`` spells them out with comments,
and other files (``conf/nightly.toml``, ``conf/cluster.toml``) set only what differs.

Settings live in TOML; run arguments (input, output, date, ``--force``) are flags of the
jobs. ``python -m keylib.config submit-args FILE`` prints the spark-submit options that
must be known before the JVM starts (master, memory), for ``submit.sh``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULTS", "DEFAULT_CONF", "load_config", "config_hash"]

DEFAULT_CONF = Path(__file__).resolve().parent.parent / "conf" / "local.toml"
_LOG4J = DEFAULT_CONF.parent / "log4j2.properties"

DEFAULTS: dict[str, Any] = {
    "spark": {
        "master": "local[2]",
        "driver_memory": "2g",
        "executor_memory": "2g",
        "arrow_batch_rows": 64,
        "tracks_per_partition": 8,
        "task_cpus": 1,
        "conf": {
            "spark.ui.showConsoleProgress": "true",
            "spark.sql.shuffle.partitions": "8",
            "spark.ui.enabled": "false",
        },
    },
    "audio": {"max_duration_s": 600.0, "min_duration_s": 1.0, "max_file_mb": 512},
    "extract": {"hash_content": True},
    "s3": {"endpoint_url": "", "region": "", "max_attempts": 6},
    "model": {"path": ""},
    "report": {"enabled": True},
    "nightly": {"max_failed_share": 0.05},
}

_POSITIVE = {
    ("spark", "arrow_batch_rows"),
    ("spark", "tracks_per_partition"),
    ("spark", "task_cpus"),
    ("audio", "max_duration_s"),
    ("audio", "max_file_mb"),
    ("s3", "max_attempts"),
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
    config = copy.deepcopy(DEFAULTS)
    if path is None:
        path = DEFAULT_CONF if DEFAULT_CONF.exists() else None
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        _merge(config, data, where=str(path))
    _validate(config)
    return config


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


def _validate(config: dict) -> None:
    for section, key in _POSITIVE:
        if config[section][key] <= 0:
            raise ConfigError(f"{section}.{key} must be positive, got {config[section][key]!r}")
    if config["audio"]["min_duration_s"] < 0:
        raise ConfigError("audio.min_duration_s must not be negative")
    share = config["nightly"]["max_failed_share"]
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"nightly.max_failed_share must be within 0..1, got {share!r}")


def config_hash(config: dict) -> str:
    """Short stable hash of a configuration, recorded in run manifests."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _submit_args(path: str | None) -> list[str]:
    spark = load_config(path)["spark"]
    return [
        "--master", spark["master"],
        "--driver-memory", spark["driver_memory"],
        "--executor-memory", spark["executor_memory"],
        "--conf", f"spark.task.cpus={spark['task_cpus']}",
        "--driver-java-options", f"-Dlog4j2.configurationFile=file:{_LOG4J}",
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
