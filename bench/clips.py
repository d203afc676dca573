"""Benchmark audio: 44.1 kHz stereo 192 kbps mp3 files in known keys, detuned by known cents.

Made with keylib's synthesizer, detuned by resampling, encoded by the ``ffmpeg`` command
(libmp3lame, constant 192 kbps, as a typical catalogue's files), and cached: a folder that
already holds a file is not written again, so reruns of a benchmark reuse its audio.

    from clips import make_clips, make_songs
    rows = make_clips(Path("build/bench-clips"), n=300)        # 30 s clips, tunings over +-50 cents
    rows = make_songs(Path("build/bench-songs"), n=40)         # whole songs of 3-5 minutes
    # each row: {"path": Path, "key": "E minor", "tuning_cents": -12.5, "seconds": 30.0}
"""

from __future__ import annotations

import csv
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soxr

from keylib import synth
from keylib.keys import KEY_NAMES, N_KEYS

__all__ = ["SR", "make_clips", "make_songs", "write_manifest"]

SR = 44100
BITRATE = "192k"


def _stereo(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) -> (n, 2): the right channel a delayed, quieter copy plus a little noise."""
    right = 0.85 * np.roll(y, int(rng.integers(50, 500))) + 0.003 * rng.standard_normal(len(y)).astype(np.float32)
    return np.stack([y, right], axis=1).astype(np.float32)


def _detune(y: np.ndarray, cents: float, *, sr: int) -> np.ndarray:
    """``y`` at ``sr`` played ``cents`` sharp (flat when negative), resampled to :data:`SR`."""
    return soxr.resample(y, sr * 2.0 ** (cents / 1200.0), SR, quality="HQ").astype(np.float32)


def _encode_mp3(path: Path, stereo: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp3")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(SR), "-ac", "2",
           "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", BITRATE, str(tmp)]
    # no timeout: on a busy shared machine a 5-minute song can take longer than any fixed limit
    subprocess.run(cmd, input=np.ascontiguousarray(stereo, dtype="<f4").tobytes(), check=True)
    tmp.rename(path)  # a killed run leaves no half-written clip behind


def _key_and_tuning(i: int) -> tuple[int, float]:
    """Key index and tuning (cents, -50 .. 50) of benchmark piece ``i``: a function of ``i`` alone."""
    return i % N_KEYS, float(np.round(np.random.default_rng(1000 + i).uniform(-50.0, 50.0), 1))


def _piece(i: int, seconds: float, segment_s: float) -> np.ndarray:
    """Stereo samples (n, 2) of benchmark piece ``i``: cadential segments in one key."""
    key, cents = _key_and_tuning(i)
    rng = np.random.default_rng(2000 + i)
    parts, total = [], 0.0
    while total < seconds - 1e-9:
        length = min(segment_s, seconds - total)
        # synthesized at half the rate (5 times cheaper; the tones stop below 5 kHz anyway)
        parts.append(synth.chord_progression(key, duration_s=length, sr=SR // 2, seed=int(rng.integers(1 << 30))))
        total += length
    # detuning changes the length by at most 3 %: trim or pad back to the nominal length
    n = int(seconds * SR)
    y = _detune(np.concatenate(parts), cents, sr=SR // 2)[:n]
    return _stereo(np.pad(y, (0, n - len(y))), rng)


def _write(path: Path, i: int, seconds: float, segment_s: float) -> None:
    _encode_mp3(path, _piece(i, seconds, segment_s))


def _make(folder: Path, indices, *, seconds_of, segment_s: float, stem: str) -> list[dict]:
    paths = {i: Path(folder) / f"{stem}_{i:04d}.mp3" for i in indices}
    missing = [i for i, path in paths.items() if not path.exists()]
    if missing:
        print(f"bench: writing {len(missing)} mp3 files to {folder} (cached for reruns)", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(_write, [paths[i] for i in missing], missing, [seconds_of(i) for i in missing],
                          [segment_s] * len(missing)))
    rows = []
    for i, path in paths.items():
        key, cents = _key_and_tuning(i)
        rows.append({"path": path, "key": KEY_NAMES[key], "tuning_cents": cents, "seconds": seconds_of(i)})
    return rows


def make_clips(folder: Path, n: int, *, seconds: float = 30.0) -> list[dict]:
    """``n`` clips of ``seconds`` (one cadential piece each), keys cycling through all 24."""
    return _make(folder, range(n), seconds_of=lambda i: seconds, segment_s=seconds, stem=f"clip{int(seconds)}s")


def make_songs(folder: Path, n: int) -> list[dict]:
    """``n`` whole songs of 3 to 5 minutes: 10 s cadential sections in one key and tuning."""
    return _make(folder, range(n), seconds_of=lambda i: 180.0 + 10.0 * ((i * 7) % 13), segment_s=10.0, stem="song")


def write_manifest(rows: list[dict], path: Path) -> Path:
    """A keylib manifest (``path``, ``track_id``) of ``rows``; no ``key`` column, so that
    ``annotate`` does not add an evaluation to the timed work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "track_id"])
        for row in rows:
            writer.writerow([str(Path(row["path"]).resolve()), Path(row["path"]).stem])
    return path
