"""The only rooms of keylib that know Spark.

- :mod:`.session`: the session from configuration (and the JVM class-data archive)
- :mod:`.schemas`: the Spark schemas of the chroma and keys tables
- :mod:`.workers`: what runs in the Python workers (``mapInPandas`` steps)
- :mod:`.frames`: tables as Spark DataFrames (a run written by the executors and committed
  once; the current rows read back)
- :mod:`.flows`: each job's logic (extract, infer, annotate, evaluate, nightly)
- :mod:`.runner`: flags, configuration and session around a flow (``jobs/*.py``)
- :mod:`.daemon`: the Python daemon that forks workers with keylib imported
- :mod:`.cluster`: the environment and code shipped to a standalone cluster's executors

Nothing outside this package imports it; importing the package itself imports no Spark.
"""
