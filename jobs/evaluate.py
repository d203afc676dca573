"""Spark job: MIREX report of predicted keys against a ground-truth manifest.

    ./submit.sh evaluate --keys OUT/keys --truth MANIFEST.csv --output OUT/report
"""

import sys

from keylib.outcome import EXIT_OK
from keylib.spark.runner import job_main


def add_arguments(parser):
    parser.add_argument("--keys", required=True, help="the keys table (OUT/keys) or the output root OUT")
    parser.add_argument("--truth", required=True, help="CSV with a key column and track_id and/or path")
    parser.add_argument("--output", required=True, help="report folder (report.json, .md, .html, PNGs)")


def run(spark, args, config):
    from keylib.spark.flows import run_evaluate

    result, report = run_evaluate(spark, keys=args.keys, truth=args.truth, output=args.output,
                                  s3_settings=config["s3"])
    s = result.summary
    score = "n/a" if s["weighted_score"] is None else f"{s['weighted_score']:.3f}"
    both = "n/a" if s["weighted_score_both_fifths"] is None else f"{s['weighted_score_both_fifths']:.3f}"
    print(f"keylib evaluate: scored {s['scored']}, excluded {s['excluded_total']}, "
          f"weighted score {score} (fifth up) / {both} (both fifths), report {report}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(job_main("evaluate", __doc__, add_arguments, run))
