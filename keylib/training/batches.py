"""One epoch of training batches: crops of 8 s to whole tracks, each re-normalised as a
track (training sees the tensors serving sees: :mod:`keylib.tensors`, as extraction would
give for that stretch alone), with loudness and timbre changes and random transpositions."""

from __future__ import annotations

import numpy as np

from ..features import FRAME_RATE
from ..keys import N_KEYS
from ..serving import to_steps
from ..tensors import compress, crop, linear, roll_pitch
from .settings import TrainConfig

__all__ = ["batches"]


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
    (a fifth and a major third above, folded into each band of the chroma), then rescale
    to 0..1."""
    a = rng.uniform(-0.25, 0.35)
    b = rng.uniform(-0.15, 0.25)
    out = c + a * roll_pitch(c, 7) + b * roll_pitch(c, 4)
    out = np.clip(out, 0.0, None)
    peak = float(out.max(initial=0.0))
    return (out / peak).astype(np.float32) if peak > 0 else c


def track_weights(keys: np.ndarray, balance: float) -> np.ndarray | None:
    """How often each track is drawn, shape (n,), summing to 1: uniform (``None``), moved by
    ``balance`` (0..1) towards drawing major and minor keys equally often. At 1 a training
    set that is mostly major (as the classical archives are) teaches the network no prior
    for major."""
    minor = np.asarray(keys) // 12 == 1
    n = len(minor)
    if not balance or not 0 < minor.sum() < n:
        return None
    per_mode = np.where(minor, 0.5 / minor.sum(), 0.5 / (n - minor.sum()))
    return (1.0 - balance) / n + balance * per_mode


def _draw(eligible: np.ndarray, size: int, weights: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    replace = len(eligible) < size
    if weights is None:  # the uniform draw as it always was: same batches for the same seed
        return rng.choice(eligible, size, replace=replace)
    p = weights[eligible]
    return rng.choice(eligible, size, replace=replace, p=p / p.sum())


def _batch_plan(lengths: np.ndarray, cfg: TrainConfig, rng: np.random.Generator,
                weights: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(track indices, crop frames) of one batch; every crop fits its track (no tiling).
    Crops draw tracks by ``weights`` (:func:`track_weights`); whole-track batches take a
    run of tracks of similar lengths."""
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
            return _draw(eligible, size, weights, rng), frames
    lo, hi = cfg.excerpt_s
    frames = int(rng.integers(lo, hi + 1)) * fr
    eligible = np.flatnonzero(lengths >= frames)
    if not len(eligible):
        eligible = np.arange(n)
        frames = int(lengths.min())
    return _draw(eligible, size, weights, rng), frames


def batches(chromas, keys, cfg: TrainConfig, fps: int, rng: np.random.Generator):
    """One epoch of (x, y) batches: crops of 8 s to whole tracks (re-normalised, with
    loudness and timbre changes) and random transpositions (chroma rolled, tonic moved)."""
    lengths = np.array([c.shape[1] for c in chromas])
    weights = track_weights(keys, cfg.mode_balance)
    for _ in range(cfg.batches_per_epoch):
        idx, frames = _batch_plan(lengths, cfg, rng, weights)
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
            xs.append(to_steps(roll_pitch(c, shift), fps))
            k = int(keys[i])
            ys.append((k % 12 + shift) % 12 + 12 * (k // 12))
        y = np.zeros((len(idx), N_KEYS), dtype=np.float32)
        y[np.arange(len(idx)), ys] = 1.0
        yield np.stack(xs).astype(np.float32), y
