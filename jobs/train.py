"""Train the key network on chroma Parquet; writes MODEL_DIR/<name>.keras and its card.

    ./submit.sh train --features DIR [--features DIR2] [--manifest M.csv] --output MODEL_DIR
                      [--arch keynet_eq|keycnn_ref] [--train-conf conf/train.toml] [--training-only DIR]

--features: the extraction job's output (its chroma/ Parquet, searched recursively) or a
training set's chroma_cache.parquet. Labels (key, source, piece, split) come from the
Parquet or from --manifest, joined by track_id. No Spark: the data fit in memory.
--training-only: another render of training pieces, of which only the training rows are
used, so the validation and held-out rows stay those of --features.
"""

import argparse
import json
import sys
from pathlib import Path

from keylib.errors import ConfigError, ModelError
from keylib.outcome import EXIT_INPUT, report_error
from keylib.training.data import add_training_rows, load_dataset, split_dataset
from keylib.training.settings import TRAIN_CONF, TrainConfig, load_train_config, network_shape
from keylib.training.train import train_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="submit.sh train", description=__doc__.splitlines()[0])
    p.add_argument("--features", action="append", required=True, help="Parquet file or folder (repeatable)")
    p.add_argument("--training-only", action="append", default=[], metavar="PARQUET",
                   help="another render of training pieces (repeatable): only its training rows are used, its "
                        "validation pieces' and held-out rows dropped, so the validation stays that of --features")
    p.add_argument("--manifest", action="append", default=[], help="manifest CSV with key/source (repeatable)")
    p.add_argument("--output", required=True, help="model folder")
    p.add_argument("--train-conf", default=str(TRAIN_CONF), help="training settings (TOML, [train] section)")
    p.add_argument("--conf", default=None, help="Spark configuration (unused: training runs in one process)")
    p.add_argument("--arch", default=None)
    p.add_argument("--name", default=None, help="file name of the model (default from the architecture)")
    p.add_argument("--version", default="")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the weights and batches (the validation split keeps [train] split_seed)")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default OMP_NUM_THREADS)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--refit", default=None, metavar="MODEL.keras",
                   help="train nothing: keep this network's weights and fit its calibration, tonality classifier "
                        "and scores again on --features (after a feature change that keeps most tensors; "
                        "the network must take the rows of [train] feature_version)")
    p.add_argument("--init-from", default=None, metavar="MODEL.keras",
                   help="start training from this network's weights (same architecture and shape; a 12-row "
                        "network starts a 24-row one as the same model, its bass weights zero)")
    args = p.parse_args(argv)
    if args.refit and args.init_from:
        return report_error("train", ConfigError("--refit trains nothing, --init-from starts training: give one"))
    try:
        cfg = TrainConfig(**load_train_config(args.train_conf)["train"])
        for k in ("arch", "epochs", "seed", "threads", "max_steps_per_epoch"):
            if getattr(args, k) is not None:
                setattr(cfg, k, getattr(args, k))
        _check_arch(cfg)
    except ConfigError as exc:
        return report_error("train", exc)
    cfg.name = args.name or cfg.arch.replace("_", "-")
    cfg.version = args.version
    try:
        df = load_dataset(args.features, args.manifest, feature_version=cfg.feature_version)
        more = (load_dataset(args.training_only, args.manifest, feature_version=cfg.feature_version)
                if args.training_only else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"keylib train: input error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    train_df, val_df, held_df = split_dataset(df, cfg.val_fraction, cfg.split_seed)
    if more is not None:
        train_df, dropped = add_training_rows(train_df, more, cfg.val_fraction, cfg.split_seed)
        print(f"--training-only: {len(more) - dropped} training rows added, {dropped} rows of validation pieces, "
              f"held-out or atonal dropped")
    atonal_df = df[df["split"] == "atonal"]
    print(f"train: {len(train_df)} tracks, validation: {len(val_df)}, held out: {len(held_df)}, "
          f"atonal: {len(atonal_df)}")
    if not len(train_df):
        print("keylib train: no training rows", file=sys.stderr)
        return EXIT_INPUT
    try:
        refit, init_from = (_network_and_card(path, cfg.threads) if path else None
                            for path in (args.refit, args.init_from))
        # A refit network that does not take cfg.feature_version's rows is refused first thing.
        _, card = train_model(train_df, val_df, cfg, heldout_df=held_df, atonal_df=atonal_df,
                              out_dir=Path(args.output), refit=refit, init_from=init_from)
    except ModelError as exc:  # as for --model elsewhere: a configuration error
        return report_error("train", exc)
    validation = dict(card.get("validation", {}))
    by_group = {**validation.pop("by_sound_source", {}), **validation.pop("by_source", {})}
    summary = {f"validation {name}": s["both_fifths"]["weighted"] for name, s in validation.items()}
    summary.update({f"validation by {group} (whole+excerpt)/2": s["mean"] for group, s in by_group.items()})
    if "heldout" in card:
        summary["heldout"] = card["heldout"]["all"]["both_fifths"]["weighted"]
        summary.update({f"heldout {k}": v["both_fifths"]["weighted"] for k, v in card["heldout"]["by_length"].items()})
        summary["heldout ECE"] = card["heldout"]["calibration"]["ece"]
        summary["heldout tonal kept"] = card["heldout"].get("tonal_kept")
    print(f"model: {Path(args.output) / (cfg.name + '.keras')}  MIREX (fifths both ways): {json.dumps(summary)}")
    return 0


def _network_and_card(path: str, threads: int | None) -> tuple[object, dict]:
    """A trained network (``.keras``) and its card, for --refit and --init-from."""
    from keylib.serving import card_path, read_card
    from keylib.training.networks import load_network

    return load_network(path, threads=threads), read_card(card_path(path))


def _check_arch(cfg: TrainConfig) -> None:
    from keylib.training.networks import ARCHITECTURES

    if cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"train.arch must be one of {', '.join(sorted(ARCHITECTURES))}, got {cfg.arch!r}")
    if network_shape(cfg) and not cfg.arch.startswith("keynet_eq"):
        raise ConfigError(f"train.{', train.'.join(network_shape(cfg))} shape the keynet_eq networks, "
                          f"not {cfg.arch}: set them to 0")


if __name__ == "__main__":
    sys.exit(main())
