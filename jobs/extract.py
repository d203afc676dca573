"""Spark job: audio catalogue -> chroma tensors as Parquet (OUT/chroma/).

    ./submit.sh extract --input FOLDER|MANIFEST.csv|s3://bucket/prefix --output OUT [--force]
"""

import sys

from keylib.spark.flows import run_extract
from keylib.spark.runner import job_main


def add_arguments(parser):
    parser.add_argument("--input", required=True, help="folder, CSV manifest or s3://bucket/prefix")
    parser.add_argument("--output", required=True, help="output root; chroma goes to OUTPUT/chroma/")
    parser.add_argument("--force", action="store_true", help="recompute every track, not only new ones")


def run(spark, args, config):
    summary = run_extract(spark, input_uri=args.input, output=args.output, config=config, force=args.force)
    for track_id, status, error in summary.failures:
        print(f"  {status:<18} {track_id}: {error}", file=sys.stderr)
    print(summary.line(fields=("run_id",)))
    return summary.exit_code(config["nightly"]["max_failed_share"])


if __name__ == "__main__":
    sys.exit(job_main("extract", __doc__, add_arguments, run))
