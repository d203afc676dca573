"""Training set: labelled audio rendered from MIDI with FluidSynth, plus manifest.csv.

    ./submit.sh make-training-set --output DIR [--train-conf conf/train.toml] [--procedural N] ...

Runs in a local process pool (no Spark) with a progress bar. Writes DIR/audio/**.flac,
DIR/manifest.csv (path, track_id, key, source, piece, instrument, split, duration_s) and
DIR/chroma_cache.parquet (the extraction job's columns, computed by the same code).
"""

import argparse
import sys
import tomllib
from pathlib import Path

from keylib.trainset import make_training_set

SETTINGS = ("pop909", "pop909_holdout_from", "pop909_renders", "procedural", "chorales",
            "transpositions", "folk", "heldout_folk", "heldout_classical", "atonal", "whole", "workers", "seed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="submit.sh make-training-set", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="output folder (outside the repository)")
    p.add_argument("--train-conf", default=str(Path(__file__).resolve().parent.parent / "conf" / "train.toml"))
    p.add_argument("--conf", default=None, help="Spark configuration (unused: this job runs a local pool)")
    for name in SETTINGS:
        p.add_argument("--" + name.replace("_", "-"), default=None,
                       type=str if name == "pop909" else int)
    p.add_argument("--pop909-limit", type=int, default=None, help="at most this many training songs")
    p.add_argument("--pop909-offset", type=int, default=0, help="skip this many training songs")
    p.add_argument("--no-pop909-heldout", action="store_true", help="do not render the held-out songs")
    p.add_argument("--no-chroma", action="store_true", help="audio and manifest only (no chroma cache)")
    args = p.parse_args(argv)
    conf = {}
    if args.train_conf and Path(args.train_conf).is_file():
        conf = tomllib.loads(Path(args.train_conf).read_text()).get("trainset", {})
    s = {k: (getattr(args, k) if getattr(args, k) is not None else conf.get(k)) for k in SETTINGS}
    manifest = make_training_set(
        Path(args.output), workers=int(s["workers"] or 2), with_chroma=not args.no_chroma,
        pop909=Path(s["pop909"]) if s["pop909"] else None, n_procedural=int(s["procedural"] or 0),
        n_chorales=int(s["chorales"] or 0), n_folk=int(s["folk"] or 0), n_heldout_folk=int(s["heldout_folk"] or 0),
        transpositions=int(s["transpositions"] or 1), pop909_renders=int(s["pop909_renders"] or 1),
        pop909_holdout_from=int(s["pop909_holdout_from"] or 800), seed=int(s["seed"] or 0),
        pop909_limit=args.pop909_limit, pop909_offset=args.pop909_offset, pop909_heldout=not args.no_pop909_heldout,
        whole=bool(int(s["whole"] or 0)), n_heldout_classical=int(s["heldout_classical"] or 0),
        n_atonal=int(s["atonal"] or 0),
    )
    n = sum(1 for _ in open(manifest)) - 1
    print(f"make-training-set: {n} clips, manifest {manifest}")
    return 0 if n > 0 else 3


if __name__ == "__main__":
    sys.exit(main())
