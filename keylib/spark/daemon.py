"""Spark's Python daemon with keylib's worker imports done once, before it forks workers.

Spark starts one Python daemon per executor, which forks a Python worker for each task
slot and each Python UDF of a task (a one-pass annotate task runs two: the extraction and
the table writer). PySpark's own daemon forks bare workers, so each worker imports pandas,
pyarrow, soundfile and keylib on its own: about 2.5 s of CPU each, paid by every worker of
every run, several times over on a two-core machine before the first track is decoded.
This daemon imports them first; forked workers share them (copy-on-write) and start at
once. Enabled by ``spark.python.daemon.module = "keylib.spark.daemon"`` in the configuration.

The imports start no thread that a fork could break: numpy's BLAS pool is one thread
(``OPENBLAS_NUM_THREADS=1``, set by ``submit.sh`` and for executors), and the only thread
pyarrow starts on import is jemalloc's background thread, which jemalloc's own fork
handlers stop and restart. Nothing here loads the model (ONNX Runtime's thread pools are
created in each worker when it loads the model).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pyspark.daemon import manager  # noqa: E402

try:
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import pyspark.worker  # noqa: F401

    import keylib.spark.frames  # noqa: F401  (the tables' writers and readers: keylib.storage.commit)
    import keylib.spark.workers  # noqa: F401  (extract, audio, features, inference)
except ImportError:
    # An interpreter without keylib's environment (PYSPARK_PYTHON pointing elsewhere):
    # serve as PySpark's own daemon, so the task that needs the module says which is missing.
    pass

if __name__ == "__main__":
    manager()
