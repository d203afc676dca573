"""Where keylib's data lives, locally or on S3, without Spark.

- :mod:`.io`: the bytes of a track from its URI (a local path, ``file://`` or ``s3://``)
- :mod:`.s3`: boto3 clients, listing and ranged reads of ``s3://`` catalogues
- :mod:`.locations`: output roots and table URIs, run ids, filesystems, storage options
- :mod:`.tables`: the output tables (Delta Lake, one current row per track), and reading them
- :mod:`.commit`: a run's files committed as one table version (what the executors run,
  and the driver's one commit)
- :mod:`.staging`: a table's run folders: checked before a commit, tidied after, cleared
  of runs that never committed
- :mod:`.files`: small files beside the tables (manifests, reports)
- :mod:`.lease`: one run at a time per output; :mod:`.lease_store`: the lease's files
- :mod:`.manifest`: the nightly run manifest ``OUT/_runs/<run_id>.json``

Nothing here imports Spark: :mod:`keylib.spark.frames` has Spark's executors run the
writers and readers defined here.
"""
