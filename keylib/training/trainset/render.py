"""Rendering and augmentation: MIDI to audio with FluidSynth and General MIDI soundfonts
(or TiMidity++, or keylib's own engine, :mod:`.wavetable`), then random level,
equalisation, noise, reverb and detuning (up to 40 cents).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from . import wavetable

SOUNDFONT = Path(os.environ.get("KEYLIB_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
# General MIDI soundfonts that Debian ships (packages fluid-soundfont-gm, csound-soundfont,
# timgm6mb-soundfont, opl3-soundfont). Training renders with the first two; the held-out
# set only with the last two, so held-out music is played by sounds training never heard.
# ``--soundfonts`` may also name keylib's own engine (:data:`.wavetable.ENGINE`, "wavetable").
TRAIN_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/sf_GMbank.sf2")
HELDOUT_SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
# The validation render (how candidates are chosen) uses another engine and sounds that
# neither training nor the held-out set uses: TiMidity++ with the freepats patches (a
# ``.cfg`` in place of a soundfont selects TiMidity++; Debian packages timidity, freepats).
VALIDATION_SOUNDFONTS = ("/etc/timidity/freepats.cfg",)
# The General MIDI programs freepats has (its freepats.cfg "bank 0"): others are silent in
# TiMidity++, so a clip for it plays the nearest of these in the same GM family.
FREEPATS_PROGRAMS = (0, 1, 2, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 19, 21, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33,
                     34, 35, 36, 37, 38, 40, 42, 44, 45, 46, 47, 48, 53, 56, 57, 58, 59, 60, 61, 64, 65, 66, 67,
                     68, 69, 70, 71, 72, 73, 74, 75, 76, 79, 80, 84, 88, 94, 95, 98, 101, 102, 104, 114, 115,
                     120, 122, 125)
RENDER_SR = 22050
# Pinkish noise: a filter (numerator, denominator) that shapes white noise to about 1/f.
PINK_FILTER = ([0.049922035, -0.095993537, 0.050612699, -0.004408786],
               [1, -2.494956002, 2.017265875, -0.522189400])


def soundfonts_for(split: str) -> tuple[str, ...]:
    """The soundfonts that clips of ``split`` may be rendered with."""
    return {"heldout": HELDOUT_SOUNDFONTS, "validation": VALIDATION_SOUNDFONTS}.get(split, TRAIN_SOUNDFONTS)


def is_timidity(soundfont: str | Path) -> bool:
    """Whether ``soundfont`` names a TiMidity++ configuration (rendered by TiMidity++)."""
    return str(soundfont).endswith(".cfg")


def playable_programs(programs: dict[int, int], soundfont: str | Path) -> dict[int, int]:
    """``programs`` with each one the sound source lacks replaced by the nearest it has in the
    same General MIDI family (else the nearest of all): only freepats lacks some."""
    if not is_timidity(soundfont):
        return programs
    have = np.array(FREEPATS_PROGRAMS)
    out = {}
    for channel, program in programs.items():
        family = have[have // 8 == program // 8]
        pool = family if family.size else have
        out[channel] = int(pool[np.argmin(np.abs(pool - program))])
    return out


def render_midi(midi_path: Path, wav_path: Path, *, sr: int = RENDER_SR, gain: float = 0.6,
                soundfont: str | Path | None = None) -> np.ndarray:
    """Render a MIDI file with FluidSynth (no reverb or chorus), with TiMidity++ when
    ``soundfont`` is a ``.cfg``, or with keylib's engine when it is ``"wavetable"``; mono
    float32 at ``sr``."""
    if wavetable.is_wavetable(soundfont):
        return wavetable.render(midi_path, sr=sr)
    if soundfont is not None and is_timidity(soundfont):
        return _render_timidity(midi_path, wav_path, sr=sr, config=Path(soundfont))
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth is not installed (apt-get install fluidsynth fluid-soundfont-gm)")
    soundfont = Path(soundfont or SOUNDFONT)
    if not soundfont.is_file():
        raise RuntimeError(f"soundfont {soundfont} is missing (./submit.sh setup installs Debian's GM soundfonts)")
    cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(sr), "-g", str(gain),
           "-R", "0", "-C", "0", str(soundfont), str(midi_path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    y, file_sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return _mono(y)


def _render_timidity(midi_path: Path, wav_path: Path, *, sr: int, config: Path) -> np.ndarray:
    if shutil.which("timidity") is None or not config.is_file():
        raise RuntimeError(f"TiMidity++ or {config} is missing (apt-get install timidity freepats)")
    cmd = ["timidity", "-c", str(config), "-Ow", "--output-mono", "-s", str(sr), "-o", str(wav_path), str(midi_path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    y, _ = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return _mono(y)


def _mono(y: np.ndarray) -> np.ndarray:
    """``y.mean(axis=1)`` of (n, channels) float32, the same numbers: for one or two channels
    without numpy's strided reduction over rows (a sum of two then a halving, as mean does)."""
    if y.shape[1] == 1:
        return y[:, 0].copy()
    if y.shape[1] == 2:
        return (y[:, 0] + y[:, 1]) / np.float32(2)
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
