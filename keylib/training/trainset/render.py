"""Rendering and augmentation: MIDI to audio with FluidSynth and General MIDI soundfonts,
then random level, equalisation, noise, reverb and detuning (up to 40 cents).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SOUNDFONT = Path(os.environ.get("KEYLIB_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
# General MIDI soundfonts that Debian ships (packages fluid-soundfont-gm, csound-soundfont,
# timgm6mb-soundfont, opl3-soundfont). Training renders with the first two; the held-out
# set only with the last two, so held-out music is played by sounds training never heard.
TRAIN_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/sf_GMbank.sf2")
HELDOUT_SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
RENDER_SR = 22050
# Pinkish noise: a filter (numerator, denominator) that shapes white noise to about 1/f.
PINK_FILTER = ([0.049922035, -0.095993537, 0.050612699, -0.004408786],
               [1, -2.494956002, 2.017265875, -0.522189400])


def soundfonts_for(split: str) -> tuple[str, ...]:
    """The soundfonts that clips of ``split`` may be rendered with."""
    return HELDOUT_SOUNDFONTS if split == "heldout" else TRAIN_SOUNDFONTS


def render_midi(midi_path: Path, wav_path: Path, *, sr: int = RENDER_SR, gain: float = 0.6,
                soundfont: str | Path | None = None) -> np.ndarray:
    """Render a MIDI file with FluidSynth (no reverb or chorus); mono float32 at ``sr``."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth is not installed (apt-get install fluidsynth fluid-soundfont-gm)")
    soundfont = Path(soundfont or SOUNDFONT)
    if not soundfont.is_file():
        raise RuntimeError(f"soundfont {soundfont} is missing (./submit.sh setup installs Debian's GM soundfonts)")
    cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(sr), "-g", str(gain),
           "-R", "0", "-C", "0", str(soundfont), str(midi_path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    y, file_sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return y.mean(axis=1)


def augment(y: np.ndarray, rng: np.random.Generator, *, sr: int = RENDER_SR, strength: float = 1.0) -> np.ndarray:
    """Random level, EQ, reverb, noise and detuning (each with some probability)."""
    from scipy import signal

    y = np.asarray(y, dtype=np.float32)
    if rng.random() < 0.3 * strength:  # detune up to 40 cents (resampling)
        import soxr

        cents = rng.uniform(-40, 40)
        y = soxr.resample(y, sr, sr / 2 ** (cents / 1200.0), quality="MQ").astype(np.float32)
    if rng.random() < 0.35 * strength:  # reverb: exponentially decaying noise
        rt60 = rng.uniform(0.3, 2.0)
        n = int(rt60 * sr)
        t = np.arange(n) / sr
        ir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)
        wet = signal.fftconvolve(y, ir)[: len(y)].astype(np.float32)
        wet /= float(np.max(np.abs(wet))) or 1.0
        mix = rng.uniform(0.15, 0.5)
        y = (1 - mix) * y / (float(np.max(np.abs(y))) or 1.0) + mix * wet
    if rng.random() < 0.3 * strength:
        sos = signal.butter(2, rng.uniform(1200, 6000), "lowpass", fs=sr, output="sos")
        y = signal.sosfilt(sos, y).astype(np.float32)
    if rng.random() < 0.3 * strength:
        sos = signal.butter(2, rng.uniform(60, 400), "highpass", fs=sr, output="sos")
        y = signal.sosfilt(sos, y).astype(np.float32)
    if rng.random() < 0.2 * strength:  # peaking-ish boost/cut: add a band-passed copy
        lo = rng.uniform(150, 2000)
        sos = signal.butter(2, [lo, lo * 2], "bandpass", fs=sr, output="sos")
        y = (y + rng.uniform(-0.6, 1.5) * signal.sosfilt(sos, y)).astype(np.float32)
    peak = float(np.max(np.abs(y))) or 1.0
    y = y / peak
    if rng.random() < 0.4 * strength:
        snr_db = rng.uniform(12, 40)
        noise = rng.standard_normal(len(y)).astype(np.float32)
        if rng.random() < 0.5:  # pinkish
            noise = signal.lfilter(*PINK_FILTER, noise).astype(np.float32)
        rms = float(np.sqrt(np.mean(y ** 2))) or 1e-3
        noise *= rms / (float(np.sqrt(np.mean(noise ** 2))) or 1.0) / 10 ** (snr_db / 20)
        y = y + noise
    level = 10 ** (rng.uniform(-18, -1) / 20)
    y = y / (float(np.max(np.abs(y))) or 1.0) * level
    return y.astype(np.float32)


def trim_silence(y: np.ndarray) -> np.ndarray:
    """The render without its leading and trailing digital silence."""
    nz = np.flatnonzero(np.abs(y) > 1e-4)
    return y[nz[0]: nz[-1] + 1] if nz.size else y[:0]
