"""Nightly incremental annotation: only new or changed tracks, atomic commits, a run manifest.

    ./submit.sh nightly --input FOLDER|MANIFEST.csv|s3://bucket/prefix --output OUT [--conf conf/nightly.toml]

Exit codes: 0 every annotated track succeeded (or the share of failures is within
nightly.max_failed_share); 2 bad configuration; 3 input cannot be listed (missing folder,
unreachable S3); 4 more than nightly.max_failed_share of the tracks failed; 5 the output
cannot be read or written (nothing of the run is visible); 6 another run holds the
output's lease (this run wrote nothing); 1 internal error.

Nothing it prints or logs carries a credential (:func:`keylib.redact.redact`).
"""

import sys

from keylib.redact import redact
from keylib.spark.flows import run_nightly
from keylib.spark.runner import job_main


def add_arguments(parser):
    parser.add_argument("--input", required=True, help="folder, CSV manifest or s3://bucket/prefix")
    parser.add_argument("--output", required=True, help="output root, a folder or s3://bucket/prefix (chroma/, keys/, _runs/ manifests)")
    parser.add_argument("--extract-only", action="store_true", help="stop after chroma extraction (no keys)")
    parser.add_argument("--force", action="store_true",
                        help="redo every track, failures whose retries are spent (nightly.max_attempts) included")


def run(spark, args, config):
    summary = run_nightly(spark, input_uri=args.input, output=args.output, config=config, conf_path=args.conf,
                          with_keys=not args.extract_only, force=args.force)
    for track_id, status, error in summary.failures:
        print(f"  {status:<18} {redact(track_id)}: {redact(error)}", file=sys.stderr)
    print(redact(summary.line(fields=("run_id", "manifest"))))
    return summary.extra["exit_code"]


if __name__ == "__main__":
    sys.exit(job_main("nightly", __doc__, add_arguments, run))
