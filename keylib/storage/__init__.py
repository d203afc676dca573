"""Where keylib's data lives, locally or on S3, without Spark.

- :mod:`.io`: the bytes of a track from its URI (a local path, ``file://`` or ``s3://``)
- :mod:`.s3`: boto3 clients, listing and ranged reads of ``s3://`` catalogues
- :mod:`.tables`: the output tables (Delta Lake, one current row per track), read here
- :mod:`.lease`: one run at a time per output
- :mod:`.manifest`: the nightly run manifest ``OUT/_runs/<run_id>.json``
"""
