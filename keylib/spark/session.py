"""The Spark session from configuration, and the JVM class-data archive that starts it faster.

``python -m keylib.spark.session class-archive PATH`` writes the archive (``./submit.sh setup``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Mapping

from pyspark.sql import SparkSession

from ..config import driver_java_options

__all__ = [
    "get_session",
    "write_class_archive",
]

def get_session(config: Mapping[str, Any], app_name: str = "keylib") -> SparkSession:
    """The Spark session for ``config`` (``[spark]`` section).

    Under ``spark-submit`` the master comes from its ``--master`` flag; elsewhere (tests,
    notebooks) from ``spark.master`` in the configuration.
    """
    spark_conf = config["spark"]
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        builder = (builder.master(spark_conf["master"]).config("spark.driver.memory", spark_conf["driver_memory"])
                   .config("spark.driver.extraJavaOptions", driver_java_options(spark_conf)))
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(spark_conf["arrow_batch_rows"]))
        .config("spark.task.cpus", str(spark_conf["task_cpus"]))
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    for key, value in spark_conf["conf"].items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def write_class_archive(path: str | os.PathLike) -> bool:
    """Write a JVM class-data archive of the classes a keylib Spark run loads.

    A JVM started with ``-XX:SharedArchiveFile=PATH`` maps those classes instead of loading
    and verifying them one by one from Spark's jars: a local session starts in about 4 s
    instead of 8 and its first job in 2 s instead of 4 (measured on the 2-core machine).
    ``./submit.sh setup`` calls this once per environment (``python -m keylib.spark.session
    class-archive PATH``); :func:`keylib.config.driver_java_options` adds the archive to
    every driver JVM while the file exists. A JVM dumps the archive as it exits, so the
    session runs in a child process; the archive is written next to ``path`` and renamed
    into place only once that process is done (a truncated archive would crash the JVMs
    that map it).

    Returns
    -------
    bool
        Whether the archive was written.
    """
    path = os.fspath(path)
    part = path + ".part"
    for stale in (path, part):
        if os.path.exists(stale):
            os.remove(stale)
    env = {**os.environ, "KEYLIB_CLASS_ARCHIVE": "", "KEYLIB_CLASS_ARCHIVE_DUMP": part}
    done = subprocess.run([sys.executable, "-m", "keylib.spark.session", "class-archive-run"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    if done.returncode != 0 or not os.path.isfile(part) or os.path.getsize(part) == 0:
        if os.path.exists(part):
            os.remove(part)
        return False
    os.replace(part, path)
    return True


def _class_archive_run() -> None:
    """A small run through the paths every job takes (a DataFrame from pandas through Arrow
    and from rows, shuffle, a pandas and an Arrow UDF, persist, collect) in a JVM that dumps
    its classes as it exits."""
    import pandas as pd

    from ..config import load_config

    for name, value in (("PYSPARK_PYTHON", sys.executable), ("SPARK_LOCAL_IP", "127.0.0.1"),
                        ("OPENBLAS_NUM_THREADS", "1")):
        os.environ.setdefault(name, value)
    config = load_config(None)
    config["spark"]["driver_java_options"] += f" -XX:ArchiveClassesAtExit={os.environ['KEYLIB_CLASS_ARCHIVE_DUMP']}"
    spark = get_session(config, app_name="keylib-class-archive")
    rows = pd.DataFrame({"track_id": [str(i) for i in range(64)], "x": [float(i) for i in range(64)]})
    spark.createDataFrame([tuple(r) for r in rows.itertuples(index=False)], "track_id string, x double").count()
    frame = spark.createDataFrame(rows, "track_id string, x double").repartition(4)
    frame = frame.mapInPandas(lambda batches: (b.assign(x=b.x * 2) for b in batches), frame.schema).persist()
    frame.mapInArrow(lambda batches: (b for b in batches), frame.schema).collect()
    frame.groupBy("track_id").count().toPandas()
    gateway = spark.sparkContext._gateway
    spark.stop()
    # The JVM exits (and writes the archive) when its standard input closes; wait for it.
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()
        proc.wait(timeout=300)


if __name__ == "__main__":
    if sys.argv[1:2] == ["class-archive"] and len(sys.argv) == 3:
        sys.exit(0 if write_class_archive(sys.argv[2]) else 1)
    elif sys.argv[1:] == ["class-archive-run"]:
        _class_archive_run()
    else:
        print("usage: python -m keylib.spark.session class-archive PATH", file=sys.stderr)
        sys.exit(2)
