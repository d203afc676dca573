"""Spark job: audio to chroma and keys in one pass, then the MIREX report (manifest with keys).

    ./submit.sh annotate --input FOLDER|MANIFEST.csv|s3://bucket/prefix --output OUT [--force]

Incremental like extraction: a rerun only processes new or changed tracks. Prints the
catalogue's keys (first 100) and, when the manifest has a ``key`` column, the report path.
"""

import sys

from keylib.outcome import EXIT_FAILED_TRACKS, EXIT_OK
from keylib.spark.runner import job_main


def add_arguments(parser):
    parser.add_argument("--input", required=True, help="folder, CSV manifest or s3://bucket/prefix")
    parser.add_argument("--output", required=True, help="output root, a folder or s3://bucket/prefix: OUTPUT/chroma, OUTPUT/keys, OUTPUT/report")
    parser.add_argument("--model", default=None, help="a .onnx model (or its .keras sibling) with its .json card (default: the shipped model)")
    parser.add_argument("--force", action="store_true", help="recompute every track, not only new ones")
    parser.add_argument("--show", type=int, default=100, help="print at most this many keys (default 100)")


def run(spark, args, config):
    from keylib.spark.flows import read_keys, run_annotate, summarize_keys

    result = run_annotate(spark, input_uri=args.input, output=args.output, config=config,
                          force=args.force, model_path=args.model)
    extract, infer = result["extract"], result["infer"]
    for track_id, status, error in extract.failures:
        print(f"  {status:<18} {track_id}: {error}", file=sys.stderr)
    ids = set(result["listing"]["track_id"])  # this catalogue's tracks, as the run listed them
    keys = read_keys(spark, args.output, s3_settings=config["s3"])
    if keys is not None:
        frame = keys.select("track_id", "key", "confidence", "camelot", "status", "error").toPandas()
        frame = frame[frame["track_id"].isin(ids)]
        print(summarize_keys(frame, limit=args.show))
        if len(frame) > args.show:
            print(f"... {len(frame) - args.show} more in {args.output}/keys")
    print(extract.line(fields=("run_id",)))
    print(infer.line(fields=("run_id", "model_version")))
    if result["evaluation"] is not None:
        s = result["evaluation"].summary
        score = "n/a" if s["weighted_score"] is None else f"{s['weighted_score']:.3f}"
        both = "n/a" if s["weighted_score_both_fifths"] is None else f"{s['weighted_score_both_fifths']:.3f}"
        print(f"MIREX weighted score {score} (fifth up) / {both} (both fifths) over {s['scored']} tracks, "
              f"{s['excluded_total']} excluded")
        print(f"MIREX report: {result['report']}")
    limit = config["nightly"]["max_failed_share"]
    codes = (extract.exit_code(limit), infer.exit_code(limit))
    return EXIT_FAILED_TRACKS if EXIT_FAILED_TRACKS in codes else EXIT_OK


if __name__ == "__main__":
    sys.exit(job_main("annotate", __doc__, add_arguments, run))
