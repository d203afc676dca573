"""Training of the key networks over chroma Parquet, with transposition augmentation,
a validation split held out by piece and source, early stopping, fixed seeds and a model card.

Input: the extraction job's ``chroma/`` Parquet (or the generator's ``chroma_cache.parquet``,
which has the same columns), joined with a manifest's ``key``/``source``/``piece``/``split``
by ``track_id`` when the Parquet lacks them. Rows with ``split == "heldout"`` are never
trained on nor used for early stopping; the card reports the network's score on them.
"""

from __future__ import annotations

import glob
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .keys import N_KEYS, try_parse_key

__all__ = [
    "TrainConfig",
    "load_dataset",
    "split_dataset",
    "mirex_summary",
    "train_model",
]


@dataclass
class TrainConfig:
    arch: str = "keynet_eq"
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 10
    val_fraction: float = 0.12
    label_smoothing: float = 0.05
    seed: int = 7
    crop_steps: tuple[int, ...] = (8, 12, 16, 24, 32)  # training crops, in 1-s steps
    full_track_share: float = 0.25  # share of batches that see whole clips (tiled to 48 steps)
    max_steps_per_epoch: int | None = None
    timbre_aug: float = 0.5  # share of crops whose harmonic content is altered (see _timbre)
    threads: int | None = None
    name: str = "keynet-eq"
    version: str = ""


# --------------------------------------------------------------------------- data

def _read_parquet_rows(path: str | Path):
    import pandas as pd
    import pyarrow.parquet as pq

    p = Path(path)
    files = [str(p)] if p.is_file() else sorted(
        f for f in glob.glob(str(p / "**" / "*.parquet"), recursive=True)
        # as Parquet readers do: skip _staging/ (runs not committed) and hidden files
        if not any(part.startswith(("_", ".")) for part in Path(f).relative_to(p).parts)
    )
    if not files:
        raise FileNotFoundError(f"no Parquet files under {p}")
    frames = []
    for f in files:
        t = pq.read_table(f)
        frames.append(t.to_pandas())
    return pd.concat(frames, ignore_index=True)


def load_dataset(features: Sequence[str | Path], manifests: Sequence[str | Path] = ()):
    """A DataFrame with ``track_id, chroma (12, n) arrays, key (index), source, piece, split``.

    ``features``: Parquet files or folders (searched recursively). ``manifests``: CSV files
    whose ``key``/``source``/``piece``/``split`` columns are joined by ``track_id``.
    """
    import pandas as pd

    from .features import FEATURE_VERSION

    df = pd.concat([_read_parquet_rows(f) for f in features], ignore_index=True)
    if "status" in df:
        df = df[df["status"].fillna("ok") == "ok"]
    if "feature_version" in df:
        bad = df["feature_version"] != FEATURE_VERSION
        if bad.all():
            raise ValueError(f"no rows with feature_version {FEATURE_VERSION!r}")
        df = df[~bad]
    if "key" not in df and "truth_key" in df:  # the extraction job's name for the manifest's key
        df = df.rename(columns={"truth_key": "key"})
    if manifests:
        man = pd.concat([pd.read_csv(m, dtype=str) for m in manifests], ignore_index=True)
        man = man.drop_duplicates("track_id", keep="last")
        cols = [c for c in ("key", "source", "piece", "split", "instrument") if c in man]
        df = df.drop(columns=[c for c in cols if c in df]).merge(man[["track_id"] + cols], on="track_id", how="inner")
    if "key" not in df:
        raise ValueError("no key column: pass the manifest (--manifest) that has one")
    df = df.drop_duplicates("track_id", keep="last").reset_index(drop=True)
    for col, default in (("source", "unknown"), ("split", "train")):
        if col not in df:
            df[col] = default
        df[col] = df[col].fillna(default)
    if "piece" not in df:
        df["piece"] = df["track_id"]
    df["piece"] = df["piece"].fillna(df["track_id"])
    df["key_index"] = [-1 if (k := try_parse_key(label)) is None else k for label in df["key"]]
    df = df[df["key_index"] >= 0].copy()
    df["chroma"] = [np.asarray(c, dtype=np.float32).reshape(12, -1) for c in df["chroma"]]
    df = df[[c.shape[1] >= 1 for c in df["chroma"]]]
    return df.reset_index(drop=True)


def split_dataset(df, val_fraction: float = 0.12, seed: int = 7):
    """(train, val, heldout): heldout = ``split == 'heldout'``; val = whole pieces per source."""
    held = df[df["split"] == "heldout"]
    rest = df[df["split"] != "heldout"]
    h = np.array([zlib.crc32(f"{seed}|{s}|{p}".encode()) % 10_000 for s, p in zip(rest["source"], rest["piece"])])
    is_val = h < val_fraction * 10_000
    return rest[~is_val].reset_index(drop=True), rest[is_val].reset_index(drop=True), held.reset_index(drop=True)


# --------------------------------------------------------------------------- metric

def mirex_summary(refs: Sequence[int], ests: Sequence[int]) -> dict:
    """Weighted MIREX scores under both fifth conventions, category counts and the confusion
    matrix (from :mod:`keylib.mirex`), in the layout the model card uses."""
    from . import mirex

    refs = [int(r) for r in refs]
    ests = [int(e) for e in ests]
    s = mirex.summarize(refs, ests)
    nan = float("nan")
    return {
        "n": s["n"],
        "ascending_fifths": {"weighted": nan if s["weighted_score"] is None else float(s["weighted_score"]),
                             "categories": s["counts"]},
        "both_fifths": {"weighted": nan if s["weighted_score_both_fifths"] is None else float(s["weighted_score_both_fifths"]),
                        "categories": s["counts_both_fifths"]},
        "accuracy": nan if s["accuracy"] is None else float(s["accuracy"]),
        "confusion": s["confusion"],
        "metric": "keylib.mirex",
    }


# --------------------------------------------------------------------------- batches

def _crop(chroma: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    n = chroma.shape[1]
    if n <= frames:
        idx = np.arange(frames) % n
        return chroma[:, idx]
    s = int(rng.integers(0, n - frames + 1))
    return chroma[:, s:s + frames]


def _timbre(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate another timbre: add or remove some of each pitch's 3rd and 5th harmonics
    (a fifth and a major third above, folded into the chroma), then rescale to 0..1."""
    a = rng.uniform(-0.25, 0.35)
    b = rng.uniform(-0.15, 0.25)
    out = c + a * np.roll(c, 7, axis=0) + b * np.roll(c, 4, axis=0)
    out = np.clip(out, 0.0, None)
    peak = float(out.max(initial=0.0))
    return (out / peak).astype(np.float32) if peak > 0 else c


def _batches(chromas, keys, cfg: TrainConfig, fps: int, rng: np.random.Generator):
    """One epoch of (x, y) batches: random crops, random transpositions (roll + tonic move)."""
    from .model import fit_length, to_steps

    order = rng.permutation(len(chromas))
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        whole = rng.random() < cfg.full_track_share
        seconds = 48 if whole else int(rng.choice(cfg.crop_steps))
        length = seconds * 5 // fps  # network input length (steps of fps frames)
        xs, ys = [], []
        for i in idx:
            c = chromas[i] if whole else _crop(chromas[i], seconds * 5, rng)
            if rng.random() < cfg.timbre_aug:
                c = _timbre(c, rng)
            shift = int(rng.integers(12))
            xs.append(fit_length(to_steps(np.roll(c, shift, axis=0), fps), length))
            k = int(keys[i])
            ys.append((k % 12 + shift) % 12 + 12 * (k // 12))
        y = np.zeros((len(idx), N_KEYS), dtype=np.float32)
        y[np.arange(len(idx)), ys] = 1.0
        yield np.stack(xs).astype(np.float32), y


# --------------------------------------------------------------------------- training

def train_model(train_df, val_df, cfg: TrainConfig, *, heldout_df=None, out_dir: Path | None = None,
                log=print) -> tuple[object, dict]:
    """Train ``cfg.arch`` on ``train_df``; early stopping on the validation MIREX score.

    Returns (KeyModel, card). When ``out_dir`` is given, writes ``<name>.keras``, its
    served export ``<name>.onnx`` and the card ``<name>.json`` there.
    """
    from .features import FEATURE_VERSION
    from .model import ARCHITECTURES, FRAMES_PER_STEP, KeyModel, configure_tensorflow, export_onnx

    configure_tensorflow(cfg.threads)
    import keras

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    fps = FRAMES_PER_STEP[cfg.arch]
    net = ARCHITECTURES[cfg.arch]()
    net.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    card_base = {
        "name": cfg.name,
        "version": cfg.version or f"{cfg.name}-{time.strftime('%Y.%m.%d')}",
        "architecture": cfg.arch,
        "feature_version": FEATURE_VERSION,
        "input": {"frames_per_step": fps, "min_steps": 8 if fps > 1 else 40,
                  "layout": "(batch, steps, 12) chroma averaged over frames_per_step frames"},
    }
    probe = KeyModel(net, card_base)
    chromas = list(train_df["chroma"])
    keys = np.asarray(train_df["key_index"])
    val_refs = list(val_df["key_index"])
    best = (-1.0, 0)
    best_weights = net.get_weights()
    history = []
    t0 = time.time()
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for b, (x, y) in enumerate(_batches(chromas, keys, cfg, fps, rng)):
            if cfg.max_steps_per_epoch and b >= cfg.max_steps_per_epoch:
                break
            losses.append(float(net.train_on_batch(x, y)))
        probe._fn = None
        if len(val_df):
            probs = probe.predict_probs(list(val_df["chroma"]))
            ests = probs.argmax(1)
            score = mirex_summary(val_refs, ests)["both_fifths"]["weighted"]
            val_loss = float(-np.mean(np.log(probs[np.arange(len(val_refs)), val_refs] + 1e-7)))
        else:
            score, val_loss = float("nan"), float("nan")
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_loss": val_loss, "val_mirex": score})
        log(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  val_loss {val_loss:.4f}  val MIREX {score:.4f}  "
            f"({time.time() - t0:.0f} s)")
        if not len(val_df) or score > best[0] + 1e-4:
            best = (score, epoch)
            best_weights = net.get_weights()
        elif epoch - best[1] >= cfg.patience:
            log(f"early stop: best epoch {best[1]} (val MIREX {best[0]:.4f})")
            break
    net.set_weights(best_weights)
    probe._fn = None
    card = dict(card_base)
    card.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": int(net.count_params()),
        "training": {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "epochs_run": len(history), "best_epoch": best[1], "seconds": round(time.time() - t0, 1),
            "augmentation": "random crops of 8-32 s (and whole clips); transposition by 0-11 semitones "
                            "(chroma rolled, tonic moved); audio augmented at render time",
            "history": history,
        },
        "data": {
            "train": _counts(train_df), "validation": _counts(val_df),
            "heldout": _counts(heldout_df) if heldout_df is not None else {},
            "validation_rule": f"whole pieces per source, crc32(seed|source|piece) < {cfg.val_fraction:.2f}",
        },
    })
    if len(val_df):
        card["validation"] = mirex_summary(val_refs, probe.predict_probs(list(val_df["chroma"])).argmax(1))
    if heldout_df is not None and len(heldout_df):
        card["heldout"] = _eval_by_source(probe, heldout_df)
    model = KeyModel(net, card)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        net.save(str(out_dir / f"{cfg.name}.keras"))
        export_onnx(net, out_dir / f"{cfg.name}.onnx")  # what serving runs (keylib.serving)
        (out_dir / f"{cfg.name}.json").write_text(json.dumps(card, indent=1))
    return model, card


def _eval_by_source(model, df) -> dict:
    probs = model.predict_probs(list(df["chroma"]))
    ests = probs.argmax(1)
    refs = np.asarray(df["key_index"])
    out = {"all": mirex_summary(refs, ests), "by_source": {}}
    for src in sorted(set(df["source"])):
        m = np.asarray(df["source"] == src)
        s = mirex_summary(refs[m], ests[m])
        out["by_source"][src] = {k: s[k] for k in ("n", "ascending_fifths", "both_fifths", "accuracy")}
    return out


def _counts(df) -> dict:
    if df is None or not len(df):
        return {"tracks": 0}
    modes = np.asarray(df["key_index"]) // 12
    return {
        "tracks": int(len(df)), "pieces": int(df.groupby(["source", "piece"]).ngroups),
        "by_source": {str(k): int(v) for k, v in df["source"].value_counts().sort_index().items()},
        "major": int((modes == 0).sum()), "minor": int((modes == 1).sum()),
        "hours": round(float(sum(c.shape[1] for c in df["chroma"])) / 5.0 / 3600, 2),
    }
