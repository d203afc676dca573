"""Audio synthesis for the sample catalogue, tests and benchmarks.

Additive synthesis of short tonal pieces (a I-IV-V-I style progression with bass and
melody from the scale) in any of the 24 keys, plus the bad inputs a catalogue meets in
practice, and the material of the model-acceptance tests (:func:`cadences`,
:func:`write_c_major_cadence`, :func:`make_flawed_manifest`; bench/acceptance.py measures
on the same). No FluidSynth needed: this runs anywhere numpy does. The training-set generator
(:mod:`keylib.training.trainset`) renders real MIDI with FluidSynth, TiMidity++ or its
own wavetable engine instead.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from .keys import KEY_NAMES, N_KEYS, tonic_mode

__all__ = ["tone", "chord_progression", "write_audio", "write_long_audio", "make_sample_catalogue",
           "SHORT_CLIP_S", "cadences", "write_c_major_cadence", "make_flawed_manifest"]

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_HARMONIC_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)
# Scale degrees (0-based) of the chord roots: I IV V I / i iv V i with a vi/VI detour.
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4, 0), (0, 4, 5, 3, 4, 0))


def tone(midi: float, duration_s: float, *, sr: int, harmonics: int = 6, level: float = 0.2) -> np.ndarray:
    """A decaying harmonic tone of pitch ``midi`` (69 = A4), shape (n,), float32."""
    t = np.arange(int(duration_s * sr), dtype=np.float32) / sr
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)
    wave = np.zeros_like(t)
    for h in range(1, harmonics + 1):
        if f0 * h < sr / 2:
            wave += np.sin(2 * np.pi * f0 * h * t) / h
    envelope = np.exp(-2.5 * t) * np.minimum(1.0, t / 0.01)
    return (level * wave * envelope).astype(np.float32)


def _triad(scale: tuple[int, ...], degree: int) -> list[int]:
    return [scale[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4)]


def chord_progression(key_index: int, *, duration_s: float = 8.0, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """A short cadential piece in key ``key_index`` (0..23), mono float32 at ``sr``.

    Chords in the middle register, a bass on the roots and a melody from the scale
    (harmonic minor, so minor keys have their raised leading tone).
    """
    rng = np.random.default_rng(seed)
    tonic, mode = tonic_mode(key_index)
    scale = _MAJOR_SCALE if mode == "major" else _HARMONIC_MINOR_SCALE
    degrees = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]
    n = int(duration_s * sr)
    out = np.zeros(n, dtype=np.float32)
    chord_len = duration_s / len(degrees)
    base = 48 + tonic  # C3 + tonic
    for i, degree in enumerate(degrees):
        start = int(i * chord_len * sr)
        for note in _triad(scale, degree):
            _mix(out, tone(base + 12 + note, chord_len, sr=sr, level=0.12), start)
        _mix(out, tone(base - 12 + scale[degree], chord_len, sr=sr, level=0.2), start)
        for j in range(4):  # four melody notes per chord, from the scale
            step = int(rng.integers(7))
            note = base + 24 + scale[step]
            _mix(out, tone(note, chord_len / 4, sr=sr, level=0.08), start + int(j * chord_len / 4 * sr))
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.8 * out / peak).astype(np.float32)


def _mix(out: np.ndarray, sound: np.ndarray, start: int) -> None:
    end = min(len(out), start + len(sound))
    if end > start:
        out[start:end] += sound[: end - start]


def write_audio(path: Path, samples: np.ndarray, *, sr: int) -> Path:
    """Write ``samples`` to ``path``; the suffix picks the format (.wav, .mp3, .flac, .ogg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr)
    return path


def write_long_audio(path: Path, *, duration_s: float, sr: int, channels: int = 2, subtype: str = "PCM_24",
                     key_index: int | None = None, seed: int = 0) -> Path:
    """Write a long file block by block, never holding it whole: hi-res masters and
    multichannel files for the bounded-memory tests and benchmarks.

    Parameters
    ----------
    path : Path
        ``.flac`` or ``.wav`` (the suffix picks the format).
    duration_s, sr, channels, subtype
        Length, rate, channel count and sample format (``"PCM_24"``, ``"PCM_16"``).
    key_index : int, optional
        ``None`` writes silence (FLAC packs 10 minutes of 7.1 silence into under a
        megabyte); a key (0..23) repeats a 10 s :func:`chord_progression` in that key,
        each channel a little louder than the last.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    block_s = 10.0
    piece = (np.zeros(int(block_s * sr), dtype=np.float32) if key_index is None
             else chord_progression(key_index, duration_s=block_s, sr=sr, seed=seed))
    gains = np.linspace(0.7, 1.0, channels, dtype=np.float32)
    block = piece[:, None] * gains[None, :]
    remaining = int(duration_s * sr)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype=subtype) as f:
        while remaining > 0:
            n = min(remaining, len(block))
            f.write(block[:n])
            remaining -= n
    return path


def make_sample_catalogue(
    folder: Path, *, duration_s: float = 8.0, sr: int = 22050, formats: tuple[str, ...] = (".mp3", ".wav")
) -> Path:
    """Write one clip per key and format under ``folder`` plus ``manifest.csv``.

    The manifest has ``path`` (relative to the folder), ``track_id``, ``key`` and
    ``source`` columns. Existing files are kept, so a second call costs nothing.

    Returns
    -------
    Path
        The manifest's path.
    """
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    rows = []
    for index in range(N_KEYS):
        name = KEY_NAMES[index].replace(" ", "_").replace("#", "s")
        samples = None
        for ext in formats:
            rel = f"{ext.lstrip('.')}/{index:02d}_{name}{ext}"
            if not (folder / rel).exists():
                if samples is None:
                    samples = chord_progression(index, duration_s=duration_s, sr=sr, seed=index)
                write_audio(folder / rel, samples, sr=sr)
            rows.append({"path": rel, "track_id": f"sample-{ext.lstrip('.')}-{index:02d}",
                         "key": KEY_NAMES[index], "source": f"synth-{ext.lstrip('.')}"})
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "track_id", "key", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


# The model-acceptance material: what the ``acceptance`` tests play and bench/acceptance.py
# measures (its figures go into the model card, where the tests read their thresholds).

# Clip length of the test suite's sample catalogue (tests/conftest.py) and of the annotate
# acceptance figure (:func:`make_flawed_manifest`).
SHORT_CLIP_S = 4.0


def cadences(*, sr: int) -> list[np.ndarray]:
    """One 12-s :func:`chord_progression` per key (seeds 300..323), in key index order:
    the acceptance cadences (tests/test_model.py, bench/acceptance.py)."""
    return [chord_progression(k, duration_s=12.0, sr=sr, seed=300 + k) for k in range(N_KEYS)]


def write_c_major_cadence(folder: Path) -> Path:
    """``folder/c_major.mp3``: a 30-s C major :func:`chord_progression` (seed 3) at 22,050 Hz,
    the file ``keylib analyze`` must name C major (tests/test_cli.py, bench/acceptance.py)."""
    return write_audio(Path(folder) / "c_major.mp3", chord_progression(0, duration_s=30.0, sr=22050, seed=3),
                       sr=22050)


def make_flawed_manifest(folder: Path, *, sample_manifest: Path | None = None) -> Path:
    """``folder/manifest.csv``: the sample catalogue with absolute paths, the label of
    ``sample-wav-05`` made unusable (``X``) and a corrupt mp3 (``broken-1``, source
    ``broken``) added: what the annotate acceptance test runs (tests/test_annotate.py) and
    bench/acceptance.py scores.

    ``sample_manifest`` is a :func:`make_sample_catalogue` manifest of
    :data:`SHORT_CLIP_S` clips; ``None`` writes one under ``folder/sample``.
    """
    folder = Path(folder)
    if sample_manifest is None:
        sample_manifest = make_sample_catalogue(folder / "sample", duration_s=SHORT_CLIP_S)
    with Path(sample_manifest).open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["path"] = str((Path(sample_manifest).parent / row["path"]).resolve())
        if row["track_id"] == "sample-wav-05":
            row["key"] = "X"
    corrupt = folder / "corrupt.mp3"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"ID3 this is not audio at all" * 50)
    rows.append({"path": str(corrupt), "track_id": "broken-1", "key": "A minor", "source": "broken"})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "track_id", "key", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


if __name__ == "__main__":  # ./submit.sh demo: python -m keylib.synth FOLDER
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m keylib.synth FOLDER", file=sys.stderr)
        sys.exit(2)
    print(make_sample_catalogue(Path(sys.argv[1])))
