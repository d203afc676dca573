"""Training set: labelled audio rendered from MIDI with FluidSynth, plus manifest.csv.

    ./submit.sh make-training-set --output DIR [--train-conf conf/train.toml] [--procedural N] ...
    ./submit.sh make-training-set --output DIR --refresh-chroma [--feature-version V]
        # after a feature change, or to train on V (keylib.features.FEATURE_VERSIONS)

Runs in a local process pool (no Spark) with a progress bar. Writes DIR/audio/**.flac,
DIR/manifest.csv (path, track_id, key, source, piece, instrument, split, duration_s) and
DIR/chroma_cache.parquet (the extraction job's columns, computed by the same code).
Stopped part way, the same command run again into the same DIR renders only what is missing.
"""

import argparse
import sys
from pathlib import Path

from keylib.errors import ConfigError, InputError
from keylib.features import FEATURE_VERSION, FEATURE_VERSIONS
from keylib.outcome import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, report_error
from keylib.training.settings import REPO_ROOT, TRAIN_CONF, TRAINSET_SETTINGS, load_train_config
from keylib.training.trainset import make_training_set, polish_root, refresh_chroma_cache


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="submit.sh make-training-set", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="output folder (outside the repository)")
    p.add_argument("--train-conf", default=str(TRAIN_CONF), help="training settings (TOML, [trainset] section)")
    p.add_argument("--conf", default=None, help="Spark configuration (unused: this job runs a local pool)")
    for name, (default, meaning) in TRAINSET_SETTINGS.items():  # each setting can be overridden by a flag
        p.add_argument("--" + name.replace("_", "-"), default=None, type=type(default),
                       help=f"{meaning} (else [trainset] {name} of --train-conf)")
    p.add_argument("--pop909-limit", type=int, default=None, help="at most this many training songs")
    p.add_argument("--pop909-offset", type=int, default=0, help="skip this many training songs")
    p.add_argument("--no-pop909-heldout", action="store_true", help="do not render the held-out songs")
    p.add_argument("--only-split", choices=("train", "heldout", "atonal", "validation"), default=None,
                   help="render only this split of the same plan (e.g. the held-out set for bench/); "
                        "validation: the validation pieces played by TiMidity++, which training never hears")
    p.add_argument("--soundfonts", default="",
                   help="comma-separated soundfonts for the training clips instead of the defaults "
                        "(e.g. a second render with other timbres), or 'wavetable' for keylib's own synthesis "
                        "engine (keylib.training.trainset.wavetable); never a held-out one")
    p.add_argument("--no-chroma", action="store_true", help="audio and manifest only (no chroma cache)")
    p.add_argument("--refresh-chroma", action="store_true",
                   help="render nothing: recompute DIR's chroma cache from its audio with this keylib's features")
    p.add_argument("--feature-version", choices=sorted(FEATURE_VERSIONS), default=None,
                   help=f"with --refresh-chroma: the features to fold (default {FEATURE_VERSION}, the shipped "
                        "model's); train on them with [train] feature_version")
    args = p.parse_args(argv)
    if args.feature_version and not args.refresh_chroma:
        return report_error("make-training-set", ConfigError(
            "--feature-version goes with --refresh-chroma: render the set, then refold its audio"))
    if args.refresh_chroma:
        version = args.feature_version or FEATURE_VERSION
        try:
            s = load_train_config(args.train_conf)["trainset"]
            cache = refresh_chroma_cache(Path(args.output), workers=args.workers or s["workers"],
                                         feature_version=version)
        except (ConfigError, InputError) as exc:
            return report_error("make-training-set", exc)
        print(f"make-training-set: chroma ({version}) recomputed into {cache}")
        return EXIT_OK
    try:
        s = load_train_config(args.train_conf)["trainset"]
        s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
        manifest = make_training_set(
            Path(args.output), workers=s["workers"], with_chroma=not args.no_chroma,
            pop909=Path(s["pop909"]) if s["pop909"] else None, n_procedural=s["procedural"],
            n_chorales=s["chorales"], n_folk=s["folk"], n_heldout_folk=s["heldout_folk"],
            transpositions=s["transpositions"], pop909_renders=s["pop909_renders"],
            pop909_holdout_from=s["pop909_holdout_from"], seed=s["seed"],
            pop909_limit=args.pop909_limit, pop909_offset=args.pop909_offset,
            pop909_heldout=not args.no_pop909_heldout, whole=bool(s["whole"]), only_split=args.only_split,
            n_heldout_classical=s["heldout_classical"], n_atonal=s["atonal"],
            soundfonts=[f for f in args.soundfonts.split(",") if f],
            polish=polish_root(s["polish"], cache=REPO_ROOT / "build") if s["polish"] else None,
            n_polish=s["polish_pieces"], n_validation_polish=s["validation_polish"], n_heldout_polish=s["heldout_polish"],
        )
    except (FileNotFoundError, OSError) as exc:
        return report_error("make-training-set", InputError(str(exc)))
    except ConfigError as exc:  # a bad [trainset] setting or soundfont: exit 2 before any rendering
        print(f"keylib make-training-set: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    n = sum(1 for _ in open(manifest)) - 1
    print(f"make-training-set: {n} clips, manifest {manifest}")
    return EXIT_OK if n > 0 else EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
