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
from pathlib import Path
from typing import Sequence

import numpy as np

from ..features import FRAME_RATE
from ..keys import N_KEYS, try_parse_key
from ..mirex import calibration_error
from ..serving import CALIBRATION_RANGE_S, calibrate, temperatures, track_seconds
from ..tensors import compress, crop, excerpt, linear
from .settings import TrainConfig, network_shape

__all__ = [
    "load_dataset",
    "split_dataset",
    "mirex_summary",
    "train_model",
    "predict_exact",
    "fit_calibration",
    "WeightAverage",
]


# --------------------------------------------------------------------------- data

def _read_parquet_rows(path: str | Path):
    import pandas as pd
    import pyarrow.parquet as pq

    p = Path(path)
    if (p / "_delta_log").is_dir():  # a keylib table: its current rows only (keylib.storage.tables)
        from ..storage.tables import read_rows

        return read_rows(str(p))
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

    from ..features import FEATURE_VERSION

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
    df = df[(df["key_index"] >= 0) | (df["split"] == "atonal")].copy()  # atonal: music without a key
    df["chroma"] = [np.asarray(c, dtype=np.float32).reshape(12, -1) for c in df["chroma"]]
    df = df[[c.shape[1] >= 1 for c in df["chroma"]]]
    return df.reset_index(drop=True)


def split_dataset(df, val_fraction: float = 0.12, seed: int = 7):
    """(train, val, heldout): heldout = ``split == 'heldout'``; val = whole pieces per source.

    Rows of ``split == 'atonal'`` (no key) are in none of them: see :func:`train_model`.
    """
    held = df[df["split"] == "heldout"]
    rest = df[~df["split"].isin(("heldout", "atonal"))]
    h = np.array([zlib.crc32(f"{seed}|{s}|{p}".encode()) % 10_000 for s, p in zip(rest["source"], rest["piece"])])
    is_val = h < val_fraction * 10_000
    return rest[~is_val].reset_index(drop=True), rest[is_val].reset_index(drop=True), held.reset_index(drop=True)


# --------------------------------------------------------------------------- metric

def mirex_summary(refs: Sequence[int], ests: Sequence[int]) -> dict:
    """Weighted MIREX scores under both fifth conventions, category counts and the confusion
    matrix (from :mod:`keylib.mirex`), in the layout the model card uses."""
    from .. import mirex

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
# Training sees the same tensors serving sees: a crop of a track is re-normalised as if it
# were the whole track (keylib.tensors), as extraction would give for that stretch alone.


def _loudness(linear: np.ndarray, rng: np.random.Generator, fps: float = FRAME_RATE) -> np.ndarray:
    """Sections of 8-60 s at -24..0 dB with 1-4 s ramps between them, sometimes a fade in
    and out: verse and chorus, quiet passages, intros and outros of whole songs."""
    n = linear.shape[1]
    gains_db = np.zeros(n)
    t = 0
    level = 0.0
    while t < n:
        length = int(rng.uniform(8, 60) * fps)
        target = -rng.uniform(0, 24) if rng.random() < 0.7 else 0.0
        ramp = min(length, int(rng.uniform(1, 4) * fps))
        seg = np.full(length, target)
        seg[:ramp] = np.linspace(level, target, ramp, endpoint=False)
        gains_db[t:t + length] = seg[: n - t]
        t += length
        level = target
    if rng.random() < 0.3:
        fade = min(n, int(rng.uniform(2, 15) * fps))
        gains_db[:fade] += np.linspace(-40, 0, fade)
    if rng.random() < 0.3:
        fade = min(n, int(rng.uniform(2, 15) * fps))
        gains_db[n - fade:] += np.linspace(0, -40, fade)
    return linear * 10 ** (gains_db / 20)


def _timbre(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate another timbre: add or remove some of each pitch's 3rd and 5th harmonics
    (a fifth and a major third above, folded into the chroma), then rescale to 0..1."""
    a = rng.uniform(-0.25, 0.35)
    b = rng.uniform(-0.15, 0.25)
    out = c + a * np.roll(c, 7, axis=0) + b * np.roll(c, 4, axis=0)
    out = np.clip(out, 0.0, None)
    peak = float(out.max(initial=0.0))
    return (out / peak).astype(np.float32) if peak > 0 else c


def _batch_plan(lengths: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(track indices, crop frames) of one batch; every crop fits its track (no tiling)."""
    fr = int(FRAME_RATE)
    n = len(lengths)
    size = min(cfg.batch_size, n)
    u = rng.random()
    if u < cfg.whole_share:  # whole tracks of similar lengths, cropped to the shortest
        order = np.argsort(lengths, kind="stable")
        start = int(rng.integers(0, n - size + 1))
        idx = order[start:start + size]
        return idx, int(lengths[idx].min())
    if u < cfg.whole_share + cfg.long_share:
        lo, hi = cfg.long_s
        frames = int(np.exp(rng.uniform(np.log(lo), np.log(hi))) * fr)
        eligible = np.flatnonzero(lengths >= frames)
        if len(eligible) >= max(8, size // 4):
            return rng.choice(eligible, size, replace=len(eligible) < size), frames
    lo, hi = cfg.excerpt_s
    frames = int(rng.integers(lo, hi + 1)) * fr
    eligible = np.flatnonzero(lengths >= frames)
    if not len(eligible):
        eligible = np.arange(n)
        frames = int(lengths.min())
    return rng.choice(eligible, size, replace=len(eligible) < size), frames


def _batches(chromas, keys, cfg: TrainConfig, fps: int, rng: np.random.Generator):
    """One epoch of (x, y) batches: crops of 8 s to whole tracks (re-normalised, with
    loudness and timbre changes) and random transpositions (chroma rolled, tonic moved)."""
    from ..serving import to_steps

    lengths = np.array([c.shape[1] for c in chromas])
    for _ in range(cfg.batches_per_epoch):
        idx, frames = _batch_plan(lengths, cfg, rng)
        xs, ys = [], []
        for i in idx:
            c = chromas[i]
            start = int(rng.integers(0, c.shape[1] - frames + 1))
            if rng.random() < cfg.loudness_aug:
                c = compress(_loudness(linear(c[:, start:start + frames]), rng))
            else:
                c = crop(c, frames, start=start)
            if rng.random() < cfg.timbre_aug:
                c = _timbre(c, rng)
            shift = int(rng.integers(12))
            xs.append(to_steps(np.roll(c, shift, axis=0), fps))
            k = int(keys[i])
            ys.append((k % 12 + shift) % 12 + 12 * (k // 12))
        y = np.zeros((len(idx), N_KEYS), dtype=np.float32)
        y[np.arange(len(idx)), ys] = 1.0
        yield np.stack(xs).astype(np.float32), y


def predict_exact(net, chromas: Sequence[np.ndarray], fps: int, *, batch_size: int = 64) -> np.ndarray:
    """Probabilities of a Keras network for each track at its own length, exactly as the
    served model batches them (:func:`keylib.serving.predict_by_length`).

    Parameters
    ----------
    chromas : sequence of np.ndarray, each (12, n_frames)

    Returns
    -------
    np.ndarray, shape (n, 24)
    """
    from ..serving import predict_by_length, to_steps

    return predict_by_length([to_steps(c, fps) for c in chromas],
                             lambda x: np.asarray(net(x, training=False)), batch_size=batch_size)


# --------------------------------------------------------------------------- calibration

def fit_calibration(probs: np.ndarray, refs: Sequence[int], seconds: Sequence[float], *,
                    reference_s: float = 30.0) -> dict:
    """The length-dependent temperature that minimises the negative log-likelihood of ``refs``.

    Parameters
    ----------
    probs : np.ndarray, shape (n, 24)
        Uncalibrated network probabilities.
    refs : sequence of int, shape (n,)
        True key indices.
    seconds : sequence of float, shape (n,)
        Each track's length; the temperature is ``T * (seconds / reference_s) ** g``
        (:func:`keylib.serving.temperatures`).
    reference_s : float
        The length ``T`` applies to.

    Returns
    -------
    dict
        ``temperature`` (T, 0.05..20), ``duration_exponent`` (g, -1..1) and ``reference_s``:
        a model card's ``calibration`` entry. ``g`` is 0 when the tracks' lengths (within
        5-600 s) span less than a factor of 2: there they cannot tell T from g, and a
        slope fitted on noise would be extrapolated to every other length.

    Raises
    ------
    ValueError
        when the shapes disagree or there are no tracks.
    """
    from scipy.optimize import minimize, minimize_scalar

    refs = np.asarray(refs, dtype=int)
    probs = np.asarray(probs)
    seconds = np.clip(np.asarray(seconds, dtype=np.float64), *CALIBRATION_RANGE_S)
    if not len(refs) or probs.shape != (len(refs), N_KEYS) or seconds.shape != refs.shape:
        raise ValueError(f"fit_calibration needs (n, 24) probs, n refs and n lengths with n > 0; got "
                         f"{probs.shape}, {refs.shape}, {seconds.shape}")
    rows = np.arange(len(refs))

    def entry(theta) -> dict:
        return {"temperature": float(np.exp(theta[0])), "duration_exponent": float(theta[1]),
                "reference_s": float(reference_s)}

    def nll(theta) -> float:
        p = calibrate(probs, temperatures(seconds, entry(theta)))
        return float(-np.mean(np.log(p[rows, refs] + 1e-12)))

    bounds = [(np.log(0.05), np.log(20.0)), (-1.0, 1.0)]
    if seconds.max() < 2 * seconds.min():
        res = minimize_scalar(lambda log_t: nll((log_t, 0.0)), bounds=bounds[0], method="bounded")
        return entry((res.x, 0.0))
    # Nelder-Mead: calibrate() works in float32, too coarse for finite-difference gradients.
    res = minimize(nll, np.zeros(2), method="Nelder-Mead", bounds=bounds, options={"xatol": 1e-4, "fatol": 1e-7})
    return entry(res.x)


# --------------------------------------------------------------------------- training

def train_model(train_df, val_df, cfg: TrainConfig, *, heldout_df=None, atonal_df=None,
                out_dir: Path | None = None, log=print, refit: tuple[object, dict] | None = None) -> tuple[object, dict]:
    """Train ``cfg.arch`` on ``train_df``; early stopping on the validation MIREX score.

    With ``refit`` (a trained network and its card) nothing is trained: the network keeps
    its weights and everything fitted on validation (calibration, tonality classifier,
    scores) is fitted again on this data, e.g. after a feature change that leaves most
    tensors as they were; the card keeps the network's training record under ``training``
    and says where it came from under ``refit``.

    Validation scores each validation track whole and as its 30 s excerpt from 15 s
    (:func:`excerpt`), at the track's own length, as serving does; early stopping follows
    the mean of the two. The length-dependent softmax temperature that best calibrates the
    validation probabilities (music the network did not train on; :func:`fit_calibration`)
    goes into the card, and with
    ``atonal_df`` (music without a key) the tonality classifier of :mod:`keylib.tonality`.

    Returns (keras model, card). When ``out_dir`` is given, writes ``<name>.keras``, its
    served export ``<name>.onnx`` and the card ``<name>.json`` there.
    """
    from ..features import FEATURE_VERSION
    from .networks import ARCHITECTURES, FRAMES_PER_STEP, configure_tensorflow, export_onnx

    configure_tensorflow(cfg.threads)
    import keras

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    arch = str(refit[1].get("architecture", cfg.arch)) if refit is not None else cfg.arch
    fps = FRAMES_PER_STEP[arch]
    if refit is not None:
        net = refit[0]
    else:
        net = ARCHITECTURES[arch](**network_shape(cfg))
        net.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    card = {
        "name": cfg.name,
        "version": cfg.version or f"{cfg.name}-{time.strftime('%Y.%m.%d')}",
        "architecture": arch,
        "feature_version": FEATURE_VERSION,
        "input": {"frames_per_step": fps, "min_steps": 1,
                  "layout": "(batch, steps, 12) chroma averaged over frames_per_step frames; any number of steps"},
    }
    chromas = list(train_df["chroma"])
    keys = np.asarray(train_df["key_index"])
    val_refs = np.asarray(val_df["key_index"]) if len(val_df) else np.zeros(0, int)
    val_sets = {"whole": list(val_df["chroma"]), "excerpt": [excerpt(c) for c in val_df["chroma"]]}
    best = (-1.0, 0)
    best_weights = net.get_weights()
    average = WeightAverage(net, cfg.ema) if cfg.ema and refit is None else None
    history = []
    t0 = time.time()
    epochs = 0 if refit is not None else cfg.epochs  # a refit trains nothing
    for epoch in range(1, epochs + 1):
        losses = []
        for b, (x, y) in enumerate(_batches(chromas, keys, cfg, fps, rng)):
            if cfg.max_steps_per_epoch and b >= cfg.max_steps_per_epoch:
                break
            losses.append(float(net.train_on_batch(x, y)))
            if average is not None:
                average.update()
        entry = {"epoch": epoch, "loss": float(np.mean(losses))}
        live = None
        if average is not None:  # validation scores (and early stopping keeps) the averaged weights
            live = net.get_weights()
            net.set_weights([w.astype(np.float32) for w in average.weights])
        if len(val_df):
            for name, data in val_sets.items():
                ests = predict_exact(net, data, fps).argmax(1)
                entry[f"val_mirex_{name}"] = mirex_summary(val_refs, ests)["both_fifths"]["weighted"]
            score = (entry["val_mirex_whole"] + entry["val_mirex_excerpt"]) / 2
        else:
            score = float("nan")
        history.append(entry)
        log(f"epoch {epoch:3d}  loss {entry['loss']:.4f}  val MIREX whole {entry.get('val_mirex_whole', score):.4f}  "
            f"excerpt {entry.get('val_mirex_excerpt', score):.4f}  ({time.time() - t0:.0f} s)")
        improved = not len(val_df) or score > best[0] + 1e-4
        if improved:
            best = (score, epoch)
            best_weights = net.get_weights()
        if live is not None:
            net.set_weights(live)  # training goes on from the last step's weights
        if not improved and cfg.learning_rate_decay < 1.0 and (epoch - best[1]) % cfg.plateau_epochs == 0:
            rate = float(net.optimizer.learning_rate.numpy()) * cfg.learning_rate_decay
            net.optimizer.learning_rate.assign(rate)
            log(f"validation plateau: learning rate {rate:.2e}")
        if epoch - best[1] >= cfg.patience:
            log(f"early stop: best epoch {best[1]} (val MIREX {best[0]:.4f})")
            break
    if refit is None:
        net.set_weights(best_weights)
    calibration: dict = {}
    if len(val_df):
        val_raw = {name: predict_exact(net, data, fps) for name, data in val_sets.items()}  # once, used thrice
        val_probs = np.concatenate(list(val_raw.values()))
        val_all = np.concatenate([val_refs, val_refs])
        val_seconds = np.concatenate([track_seconds(data) for data in val_sets.values()])
        calibration = fit_calibration(val_probs, val_all, val_seconds)
        card["validation"] = {name: mirex_summary(val_refs, probs.argmax(1)) for name, probs in val_raw.items()}
        card["calibration"] = {
            **calibration,
            "fitted_on": "validation split (pieces never trained on), whole tracks and 30 s excerpts; "
                         "minimum negative log-likelihood of a temperature that follows the track's length",
            "validation_ece_before": calibration_error(val_probs.max(1), val_probs.argmax(1) == val_all)["ece"],
            "validation_ece_after": calibration_error(
                calibrate(val_probs, temperatures(val_seconds, calibration)).max(1), val_probs.argmax(1) == val_all)["ece"],
        }
        if atonal_df is not None and len(atonal_df):
            card["tonality"] = _fit_tonality(net, fps, val_sets, val_raw, atonal_df, calibration)
    card.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": int(net.count_params()),
        "training": {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "epochs_run": len(history), "best_epoch": best[1], "seconds": round(time.time() - t0, 1),
            "augmentation": "crops of 8-40 s and 40-600 s and whole tracks, each re-normalised as a track; "
                            "section loudness changes and fades; harmonic-content (timbre) changes; "
                            "transposition by 0-11 semitones (chroma rolled, tonic moved); audio augmented "
                            "at render time (level, EQ, reverb, noise, detuning)",
            "history": history,
        } if refit is None else refit[1].get("training", {}),
        "data": {
            "train": _counts(train_df), "validation": _counts(val_df),
            "heldout": _counts(heldout_df) if heldout_df is not None else {},
            "validation_rule": f"whole pieces per source, crc32(split_seed|source|piece) < {cfg.val_fraction:.2f}, split_seed {cfg.split_seed}",
        },
    })
    if refit is not None:
        card["refit"] = {
            "from": refit[1].get("version"), "network_features": refit[1].get("feature_version"),
            "why": "weights kept; calibration, tonality classifier and scores fitted again on this feature version",
        }
    if heldout_df is not None and len(heldout_df):
        card["heldout"] = evaluate_heldout(net, heldout_df, fps, calibration=calibration,
                                           tonality=card.get("tonality"))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        net.save(str(out_dir / f"{cfg.name}.keras"))
        export_onnx(net, out_dir / f"{cfg.name}.onnx")  # what serving runs (keylib.serving)
        (out_dir / f"{cfg.name}.json").write_text(json.dumps(card, indent=1))
    return net, card


class WeightAverage:
    """An exponential moving average of a network's weights, updated after each step.

    The decay ramps up as ``(1 + n) / (10 + n)`` towards ``decay`` (as TensorFlow's
    ExponentialMovingAverage with ``num_updates``), so early averages are not held at the
    initial weights. Averaged weights give steadier validation scores than the last step's
    (the validation split is small, and each step sees one random batch of crops).
    """

    def __init__(self, net, decay: float):
        self.net, self.decay, self.updates = net, float(decay), 0
        self.weights = [np.array(w, dtype=np.float64) for w in net.get_weights()]

    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, w in zip(self.weights, self.net.get_weights()):
            avg *= d
            avg += (1 - d) * w


def _fit_tonality(net, fps: int, val_sets: dict, val_raw: dict, atonal_df, calibration: dict) -> dict:
    """The tonality classifier: tonal validation music (whole and excerpts; ``val_raw`` their
    uncalibrated probabilities) against the generated atonal clips, on calibrated probabilities."""
    from ..tonality import fit_tonality, tonality_features

    def feats(chromas, raw):
        probs = calibrate(raw, temperatures(track_seconds(chromas), calibration))
        return [tonality_features(c, p) for c, p in zip(chromas, probs)]

    tonal = [f for name, data in val_sets.items() for f in feats(data, val_raw[name])]
    atonal_chromas = list(atonal_df["chroma"])
    atonal = feats(atonal_chromas, predict_exact(net, atonal_chromas, fps))
    params = fit_tonality(tonal, atonal)
    params["fitted_on"] = (f"{len(tonal)} validation tracks (whole and 30 s excerpts) against "
                           f"{len(atonal)} atonal clips ({', '.join(sorted(set(atonal_df['source'])))})")
    return params


LENGTH_BUCKETS = (("up to 30 s", 0.0, 30.5), ("30-120 s", 30.5, 120.0), ("whole, over 120 s", 120.0, float("inf")))


def length_bucket(duration_s: float) -> str:
    """The length bucket a track of ``duration_s`` seconds is reported in."""
    for name, lo, hi in LENGTH_BUCKETS:
        if lo <= duration_s < hi:
            return name
    return LENGTH_BUCKETS[-1][0]


def evaluate_heldout(net, df, fps: int, *, calibration: dict | None = None, tonality: dict | None = None) -> dict:
    """MIREX scores of ``df`` overall, by source and by length bucket, the calibration
    error of the calibrated confidence (``calibration``: a card's entry), and the share of
    it the tonality classifier keeps tonal."""
    chromas = list(df["chroma"])
    probs = calibrate(predict_exact(net, chromas, fps), temperatures(track_seconds(chromas), calibration))
    ests = probs.argmax(1)
    refs = np.asarray(df["key_index"])
    out = {"all": mirex_summary(refs, ests), "by_source": {}, "by_length": {}}
    out["calibration"] = calibration_error(probs.max(1), ests == refs)
    if tonality:
        from ..tonality import tonal_score, tonality_features

        feats = np.array([tonality_features(c, p) for c, p in zip(df["chroma"], probs)])
        out["tonal_kept"] = float((tonal_score(feats, tonality) >= tonality["threshold"]).mean())
    seconds = np.array([c.shape[1] / FRAME_RATE for c in df["chroma"]])
    groups = [("by_source", np.asarray(df["source"]))]
    groups.append(("by_length", np.array([length_bucket(x) for x in seconds])))
    for field, labels in groups:
        for label in sorted(set(labels)):
            m = labels == label
            s = mirex_summary(refs[m], ests[m])
            out[field][str(label)] = {k: s[k] for k in ("n", "ascending_fifths", "both_fifths", "accuracy")}
    return out


def _counts(df) -> dict:
    if df is None or not len(df):
        return {"tracks": 0}
    modes = np.asarray(df["key_index"]) // 12
    return {
        "tracks": int(len(df)), "pieces": int(df.groupby(["source", "piece"]).ngroups),
        "by_source": {str(k): int(v) for k, v in df["source"].value_counts().sort_index().items()},
        "major": int((modes == 0).sum()), "minor": int((modes == 1).sum()),
        "by_soundfont": ({str(k): int(v) for k, v in df["soundfont"].value_counts().sort_index().items()}
                         if "soundfont" in df else {}),
        "hours": round(float(sum(c.shape[1] for c in df["chroma"])) / 5.0 / 3600, 2),
    }
