"""Training settings: ``conf/train.toml`` (``[trainset]``: what the training set renders;
``[train]``: :class:`TrainConfig`), validated like the Spark configuration
(:func:`keylib.config.load_toml`: an unknown key or a wrong type is exit code 2)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DEFAULT_CONF, load_toml
from ..errors import ConfigError
from ..features import FEATURE_VERSION, FEATURE_VERSIONS

__all__ = ["REPO_ROOT", "TRAIN_CONF", "TRAINSET_DEFAULTS", "TRAINSET_SETTINGS", "TrainConfig", "NETWORK_SHAPE", "network_shape", "load_train_config"]

TRAIN_CONF = DEFAULT_CONF.parent / "train.toml"
# What a relative ``[trainset] pop909`` folder is read against, whichever file names it.
REPO_ROOT = DEFAULT_CONF.parent.parent


@dataclass
class TrainConfig:
    """The ``[train]`` settings: architecture, schedule, crops and augmentation, seeds, the
    network's shape; ``threads``, ``name`` and ``version`` come from the job's flags.

    These defaults are the one source of every value the shipped recipe does not change;
    ``conf/train.toml``'s ``[train]`` holds only the recipe's changes to them (tested)."""

    arch: str = "keynet_eq"
    # The features the network is trained on and its card names (keylib.features.FEATURE_VERSIONS):
    # the training rows of this version are used, and the served model's extraction computes them.
    feature_version: str = FEATURE_VERSION
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    learning_rate_decay: float = 1.0  # on a plateau of plateau_epochs, multiply the rate by this
    plateau_epochs: int = 4
    patience: int = 10
    val_fraction: float = 0.12
    label_smoothing: float = 0.05
    seed: int = 7  # the weights' initialisation and the batches
    split_seed: int = 7  # the validation split, kept when seeds are compared
    excerpt_s: tuple[int, int] = (8, 40)  # short crops (s), uniform: what excerpts look like
    long_s: tuple[int, int] = (40, 600)  # long crops (s), log-uniform: what whole songs look like
    long_share: float = 0.35  # share of batches with long crops
    whole_share: float = 0.25  # share of batches of whole tracks (of similar lengths)
    batches_per_epoch: int = 60
    max_steps_per_epoch: int | None = None
    timbre_aug: float = 0.5  # share of crops whose harmonic content is altered (see _timbre)
    loudness_aug: float = 0.5  # share of crops with section loudness changes and fades (see _loudness)
    # 0 = tracks drawn uniformly; 1 = major and minor keys drawn equally often, whatever the
    # training set's mix (classical archives are mostly major: a uniform draw teaches a prior).
    mode_balance: float = 0.0
    ema: float = 0.0  # moving average of the weights (0 = off): what validation scores and the model keeps
    # The keynet_eq networks' shape (keylib.training.networks.build_keynet_eq); 0 = the architecture's own.
    filters: int = 0  # local filters (48)
    mix: int = 0  # channels of the 1x1 mixing layer (48)
    head: int = 0  # channels of the circular head (64)
    context: int = 0  # steps (seconds) the local layer sees (3)
    threads: int | None = None
    name: str = "keynet-eq"
    version: str = ""


NETWORK_SHAPE = ("filters", "mix", "head", "context")


def network_shape(cfg: TrainConfig) -> dict:
    """The shape settings of ``cfg`` that differ from the architecture's own (non-zero ones)."""
    return {k: int(getattr(cfg, k)) for k in NETWORK_SHAPE if getattr(cfg, k)}


# [trainset] of conf/train.toml: what jobs/make_training_set.py renders. Each setting's default
# and what it means (make-training-set --help prints the meaning beside its flag).
TRAINSET_SETTINGS: dict[str, tuple[Any, str]] = {
    "pop909": ("", "POP909 folder, relative to REPO_ROOT unless absolute; '' = none"),
    "pop909_holdout_from": (800, "songs with id >= this are held out (split = heldout)"),
    "pop909_renders": (1, "renders per song (each a random transposition; 2 clips each)"),
    "procedural": (160, "procedural pieces (random keys; 20 s - 5 min when whole)"),
    "chorales": (150, "music21 Bach chorales (modal ones are skipped)"),
    "transpositions": (1, "tonics per chorale (training rolls through all 12 anyway)"),
    "folk": (150, "Ryan's Mammoth tunes (training)"),
    "heldout_folk": (120, "Nottingham + O'Neill's tunes (held out)"),
    "heldout_classical": (24, "music21's string-quartet movements (held out)"),
    "atonal": (200, "clips without a key (noise, drums, speech, twelve-tone rows): tonality negatives"),
    "polish": ("", "Polish Music Heritage scores (folder of .krn or of polish-scores.tar.xz), like pop909; '' = none"),
    "polish_pieces": (0, "training scores of training composers (string parts first)"),
    "validation_polish": (0, "scores of validation composers (rendered by --only-split validation)"),
    "heldout_polish": (0, "scores of held-out composers (held out)"),
    "whole": (1, "1 = whole pieces and songs, 0 = excerpts"),
    "workers": (2, "renderer processes"),
    "seed": (11, "transpositions, instruments and soundfont draws"),
}
TRAINSET_DEFAULTS: dict[str, Any] = {name: default for name, (default, _) in TRAINSET_SETTINGS.items()}

# The [train] defaults are TrainConfig's.
_TRAIN_BOUNDS = {
    **dict.fromkeys([("trainset", "pop909_renders"), ("trainset", "transpositions"), ("trainset", "workers"),
                     ("train", "epochs"), ("train", "batch_size"), ("train", "learning_rate"),
                     ("train", "batches_per_epoch")], "positive"),
    **dict.fromkeys([("trainset", "procedural"), ("trainset", "chorales"), ("trainset", "folk"),
                     ("trainset", "heldout_folk"), ("trainset", "heldout_classical"), ("trainset", "atonal"),
                     ("trainset", "pop909_holdout_from"), ("trainset", "polish_pieces"),
                     ("trainset", "validation_polish"), ("trainset", "heldout_polish"), ("train", "patience"), ("train", "filters"),
                     ("train", "mix"), ("train", "head"), ("train", "context")], "not negative"),
    **dict.fromkeys([("trainset", "whole"), ("train", "val_fraction"), ("train", "label_smoothing"),
                     ("train", "timbre_aug"), ("train", "loudness_aug"), ("train", "long_share"),
                     ("train", "whole_share"), ("train", "ema"), ("train", "mode_balance")], "share"),
}


def load_train_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``conf/train.toml`` (or ``path``) over the training defaults and validate it.

    Parameters
    ----------
    path : str or Path or None
        The TOML file; ``None`` reads ``conf/train.toml`` when it exists, else defaults.

    Returns
    -------
    dict
        ``{"trainset": {...}, "train": {...}}``: ``trainset`` has the keys of
        :data:`TRAINSET_DEFAULTS`; ``train`` has the fields of
        :class:`TrainConfig` that have a plain default (``name``, ``version``,
        ``threads`` and ``max_steps_per_epoch`` are flags of the job). A relative
        ``trainset.pop909`` is made absolute against :data:`REPO_ROOT`.

    Raises
    ------
    ConfigError
        for a missing or malformed file, an unknown section or key, or a bad value (a
        ``train.feature_version`` not in :data:`keylib.features.FEATURE_VERSIONS` too).
    """
    config = {"trainset": copy.deepcopy(TRAINSET_DEFAULTS), "train": _train_defaults()}
    config = load_toml(path, config=config, default_file=TRAIN_CONF, bounds=_TRAIN_BOUNDS)
    if config["train"]["feature_version"] not in FEATURE_VERSIONS:
        raise ConfigError(f"train.feature_version must be one of {', '.join(sorted(FEATURE_VERSIONS))}, "
                          f"got {config['train']['feature_version']!r}")
    for folder in ("pop909", "polish"):
        value = config["trainset"][folder]
        if value and not Path(value).expanduser().is_absolute():
            config["trainset"][folder] = str((REPO_ROOT / value).resolve())
    return config


def _train_defaults() -> dict[str, Any]:
    return {
        field.name: field.default for field in dataclasses.fields(TrainConfig)
        if isinstance(field.default, (bool, int, float, str)) and field.name not in ("name", "version")
    }
