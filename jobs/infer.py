"""Spark job: the chroma table -> the keys table (OUT/keys, one current row per track).

    ./submit.sh infer --features OUT/chroma --output OUT [--model FILE.onnx] [--force]
"""

import sys

from keylib.spark.runner import job_main


def add_arguments(parser):
    parser.add_argument("--features", required=True, help="the chroma table (OUT/chroma)")
    parser.add_argument("--output", required=True, help="output root; keys go to OUTPUT/keys/")
    parser.add_argument("--model", default=None, help="a .onnx model (or its .keras sibling) with its .json card (default: the shipped model)")
    parser.add_argument("--force", action="store_true", help="predict every track, not only new ones")


def run(spark, args, config):
    from keylib.spark.flows import run_infer

    summary = run_infer(spark, features=args.features, output=args.output, config=config,
                        force=args.force, model_path=args.model)
    for track_id, status, error in summary.failures:
        print(f"  {status:<18} {track_id}: {error}", file=sys.stderr)
    print(summary.line(fields=("run_id", "model_version")))
    return summary.exit_code(config["nightly"]["max_failed_share"])


if __name__ == "__main__":
    sys.exit(job_main("infer", __doc__, add_arguments, run))
