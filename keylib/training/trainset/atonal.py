"""Clips without a key, the negatives of the tonality classifier: noise, drums alone,
speech (espeak-ng) and twelve-tone rows.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from .instruments import programs_for
from .midi import DRUM_CHANNEL, Note, write_midi
from .procedural import drum_part
from .render import PINK_FILTER, RENDER_SR, render_midi, soundfonts_for, trim_silence

ATONAL_KINDS = ("noise", "drums", "speech", "twelve-tone")
_WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars rise above quiet hills "
          "nightly batch jobs annotate every track in the catalogue and data engineers read the results "
          "tomorrow morning the weather turns cold with rain from the west and wind along the coast").split()


def atonal_clip(kind: str, rng: np.random.Generator, *, tmp: Path, split: str = "train") -> np.ndarray:
    """Audio without a key (mono float32 at :data:`RENDER_SR`, 8-60 s): ``noise`` (white,
    pink or brown, with a level envelope), ``drums`` (a kit alone), ``speech`` (espeak-ng)
    or ``twelve-tone`` (rows of all 12 pitch classes, as melody and as chords)."""
    from scipy import signal

    seconds = float(rng.uniform(8, 60))
    n = int(seconds * RENDER_SR)
    if kind == "noise":
        y = rng.standard_normal(n).astype(np.float32)
        colour = rng.choice(["white", "pink", "brown"])
        if colour == "pink":
            y = signal.lfilter(*PINK_FILTER, y)
        elif colour == "brown":
            y = signal.lfilter([1.0], [1.0, -0.995], y)
        env = np.interp(np.arange(n), np.linspace(0, n, 6), rng.uniform(0.2, 1.0, 6))
        return (y * env).astype(np.float32)
    if kind == "speech":
        if shutil.which("espeak-ng") is None:
            raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
        words = " ".join(rng.choice(_WORDS, int(seconds * 2.5)))
        wav = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-w", str(wav), "-s", str(int(rng.uniform(120, 200))), "-p", str(int(rng.uniform(20, 80))),
               "-v", str(rng.choice(["en", "en-us", "en+f3", "en+m3", "de", "fr"])), words]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        import soxr

        return soxr.resample(y.mean(axis=1), sr, RENDER_SR).astype(np.float32)
    beat = 60.0 / rng.uniform(70, 160)
    if kind == "drums":
        notes = drum_part(np.arange(0, seconds, beat), int(rng.choice([3, 4])), rng)
        extra = [Note(t, t + 0.1, int(rng.choice([45, 47, 48, 49, 50, 51, 57])), int(rng.integers(50, 110)), DRUM_CHANNEL)
                 for t in np.arange(0, seconds, beat / 2) if rng.random() < 0.25]
        notes += extra
        programs = {}
    elif kind == "twelve-tone":
        notes, t = [], 0.0
        while t < seconds:
            row = rng.permutation(12)
            if rng.random() < 0.5:  # melody
                for pc in row:
                    d = float(rng.choice([0.5, 1, 1, 2])) * beat
                    notes.append(Note(t, t + d * 0.9, int(48 + pc + 12 * rng.integers(0, 3)), int(rng.integers(60, 100)), 0))
                    t += d
            else:  # chords of 3-4 row notes
                for chunk in np.array_split(row, int(rng.choice([3, 4]))):
                    d = float(rng.choice([1, 2])) * beat
                    for pc in chunk:
                        notes.append(Note(t, t + d * 0.95, int(48 + pc + 12 * rng.integers(0, 2)), 70, 1))
                    t += d
        roles = programs_for(split)
        programs = {0: int(rng.choice(roles["melody"])), 1: int(rng.choice(roles["harmony"]))}
    else:
        raise ValueError(f"unknown atonal kind {kind!r}; expected one of {ATONAL_KINDS}")
    fonts = soundfonts_for(split)
    mid = write_midi(notes, programs, Path(tmp) / "a.mid")
    return trim_silence(render_midi(mid, Path(tmp) / "a.wav", soundfont=fonts[int(rng.integers(len(fonts)))]))
