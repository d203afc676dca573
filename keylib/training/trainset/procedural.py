"""The procedural composer: pieces in every key (diatonic progressions ending in cadences,
bass lines, melodies from the scale, with the raised leading tone on the minor dominant),
random instruments, tempi and lengths, and a drum part.
"""

from __future__ import annotations

import numpy as np

from ...keys import tonic_mode
from .midi import DRUM_CHANNEL, Note, Piece

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_NAT_MINOR = (0, 2, 3, 5, 7, 8, 10)


def _scale_pc(tonic: int, mode: str, leading: bool = False) -> list[int]:
    sc = list(_MAJOR if mode == "major" else _NAT_MINOR)
    if mode == "minor" and leading:
        sc[6] = 11
    return [(tonic + s) % 12 for s in sc]


def _triad(tonic: int, mode: str, degree: int) -> list[int]:
    """Pitch classes of the triad on ``degree`` (0-based); minor V and vii get the leading tone."""
    sc = list(_MAJOR if mode == "major" else _NAT_MINOR)
    if mode == "minor" and degree in (4, 6):
        sc[6] = 11
    return [(tonic + sc[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


_NEXT = {  # functional harmony: degree -> plausible next degrees
    0: [3, 4, 5, 1, 3, 4],
    1: [4, 4, 6],
    2: [5, 3],
    3: [4, 0, 1, 4],
    4: [0, 0, 5, 3],
    5: [1, 3, 4],
    6: [0],
}


def procedural_piece(key: int, rng: np.random.Generator, *, piece: str, programs_by_role: dict,
                     split: str = "train", whole: bool = False, duration_s: float | None = None) -> Piece:
    """A piece in ``key``: progression with cadences, bass, melody, optional drums.

    20-40 s long, or with ``whole`` 20 s to 5 min (log-uniform), the lengths of whole
    tracks, or ``duration_s`` when given.
    """
    tonic, mode = tonic_mode(key)
    bpm = rng.uniform(70, 150)
    beat = 60.0 / bpm
    beats_per_bar = int(rng.choice([3, 4, 4, 4]))
    duration = float(np.exp(rng.uniform(np.log(20), np.log(300)))) if whole else rng.uniform(20, 40)
    duration = float(duration_s) if duration_s is not None else duration
    bar = beat * beats_per_bar
    n_bars = max(4, int(duration / bar))
    chords_per_bar = int(rng.choice([1, 1, 2]))
    n_chords = n_bars * chords_per_bar
    seq = _progression(n_chords, mode, rng)
    chord_len = bar / chords_per_bar
    notes: list[Note] = []
    register = int(rng.integers(52, 62))
    harmony_style = rng.choice(["block", "arp", "pulse"])
    use_bass = rng.random() < 0.85
    use_melody = rng.random() < 0.8
    use_harmony = (not use_melody) or rng.random() < 0.9
    use_drums = rng.random() < 0.5
    mel_pitch = tonic + 12 * ((register + 12) // 12)
    for i, deg in enumerate(seq):
        t0 = i * chord_len
        pcs = _triad(tonic, mode, deg)
        if deg == 4 and rng.random() < 0.4:  # dominant seventh
            pcs = pcs + [(pcs[0] + 10) % 12]
        chord = sorted(register + ((pc - register) % 12) for pc in pcs)
        if use_harmony:
            notes += _harmony(chord, t0, chord_len, beat, harmony_style, rng)
        if use_bass:
            notes += _bass(pcs, t0, chord_len, beat, rng)
        if use_melody:
            melody, mel_pitch = _melody(_scale_pc(tonic, mode, leading=deg in (4, 6)), pcs, t0, chord_len, beat,
                                        mel_pitch, rng)
            notes += melody
    end = n_chords * chord_len
    # final tonic chord held
    if use_drums:
        notes += drum_part(np.arange(0, end, beat), beats_per_bar, rng)
    programs = {ch: int(rng.choice(programs_by_role[role])) for ch, role in ((0, "harmony"), (1, "bass"), (2, "melody"))}
    return Piece(notes, key, "procedural", piece, programs, split, end)


def _progression(n_chords: int, mode: str, rng: np.random.Generator) -> list[int]:
    """Scale degrees (0-based) of ``n_chords`` chords from the tonic, with cadences."""
    seq = [0]
    while len(seq) < n_chords:
        remaining = n_chords - len(seq)
        if remaining == 2 or (remaining > 2 and len(seq) % 8 == 6 and rng.random() < 0.6):
            seq += [4, 0]  # authentic cadence
        elif remaining == 3 and rng.random() < 0.5:
            seq += [3, 4, 0]
        else:
            seq.append(int(rng.choice(_NEXT[seq[-1]])))
    seq = seq[:n_chords]
    if mode == "minor" and rng.random() < 0.3:
        # occasionally a Picardy-free plagal ending
        seq[-2] = 3
    return seq


def _harmony(chord: list[int], t0: float, chord_len: float, beat: float, style: str,
             rng: np.random.Generator) -> list[Note]:
    """One chord on channel 0: held (``block``), arpeggiated (``arp``) or struck each beat (``pulse``)."""
    notes = []
    sub = beat / 2
    vel = int(rng.integers(55, 90))
    if style == "block":
        for p in chord:
            notes.append(Note(t0, t0 + chord_len * 0.95, p, vel, 0))
    elif style == "arp":
        k = 0
        t = t0
        while t < t0 + chord_len - 1e-6:
            notes.append(Note(t, min(t0 + chord_len, t + sub * 1.5), chord[k % len(chord)] + 12 * (k // len(chord) % 2), vel, 0))
            k += 1
            t += sub
    else:
        t = t0
        while t < t0 + chord_len - 1e-6:
            for p in chord:
                notes.append(Note(t, t + beat * 0.8, p, vel, 0))
            t += beat
    return notes


def _bass(pcs: list[int], t0: float, chord_len: float, beat: float, rng: np.random.Generator) -> list[Note]:
    """The chord's bass on channel 1: its root held, or root and fifth alternating each beat."""
    notes = []
    root = 36 + (pcs[0] - 36) % 12
    vel = int(rng.integers(70, 100))
    if rng.random() < 0.5:
        notes.append(Note(t0, t0 + chord_len * 0.95, root, vel, 1))
    else:
        t, k = t0, 0
        while t < t0 + chord_len - 1e-6:
            p = root if k % 2 == 0 else 36 + (pcs[2] - 36) % 12
            notes.append(Note(t, t + beat * 0.9, p, vel, 1))
            t += beat
            k += 1
    return notes


def _melody(scale: list[int], pcs: list[int], t0: float, chord_len: float, beat: float, mel_pitch: int,
            rng: np.random.Generator) -> tuple[list[Note], int]:
    """The melody over one chord on channel 2 (chord tones on the beat, mostly; scale steps
    between), from ``mel_pitch``; returns the notes and the pitch it ends on."""
    notes = []
    sub = beat / 2
    t = t0
    while t < t0 + chord_len - 1e-6:
        d = float(rng.choice([sub, beat, beat, 2 * beat]))
        d = min(d, t0 + chord_len - t)
        on_beat = abs(((t - t0) / beat) - round((t - t0) / beat)) < 1e-6
        if on_beat and rng.random() < 0.7:
            cands = [p for p in range(mel_pitch - 7, mel_pitch + 8) if p % 12 in pcs]
        else:
            cands = [p for p in range(mel_pitch - 4, mel_pitch + 5) if p % 12 in scale]
        cands = [p for p in cands if 60 <= p <= 88]
        if not cands:  # out of range: jump an octave towards the middle
            mel_pitch += 12 if mel_pitch < 60 else -12
        else:
            mel_pitch = int(rng.choice(cands))
            notes.append(Note(t, t + d * 0.9, mel_pitch, int(rng.integers(70, 110)), 2))
        t += d
    return notes, mel_pitch


def drum_part(beats: np.ndarray, per_bar: int, rng: np.random.Generator) -> list[Note]:
    notes = []
    vel = int(rng.integers(50, 100))
    for i, b in enumerate(beats):
        pos = i % per_bar
        if pos == 0 or (per_bar == 4 and pos == 2):
            notes.append(Note(b, b + 0.1, 36, vel, DRUM_CHANNEL))
        if pos % 2 == 1:
            notes.append(Note(b, b + 0.1, 38, vel, DRUM_CHANNEL))
        notes.append(Note(b, b + 0.05, 42, vel - 15, DRUM_CHANNEL))
        if i + 1 < len(beats):
            h = (b + beats[i + 1]) / 2
            notes.append(Note(h, h + 0.05, 42, vel - 25, DRUM_CHANNEL))
    return notes
