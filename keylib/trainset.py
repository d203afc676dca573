"""Training-set generator: labelled audio rendered from MIDI with FluidSynth.

Sources (each becomes a ``source`` value in the manifest):

- ``pop909``: real pop songs (piano arrangements with human key labels) from a POP909
  folder; one-key songs only, an excerpt of up to :data:`POP909_RENDER_S` seconds is
  rendered with random General MIDI instruments (and a drum part on the annotated beats)
  and cut into clips of 20-40 s. A block of song ids (>= ``pop909_holdout_from``) is
  held out (``split = heldout``) and rendered with instruments training never uses.
- ``procedural``: pieces generated here in every key: diatonic progressions ending in
  cadences, bass lines, melodies from the scale (minor with the raised leading tone on
  the dominant), drums, random instruments, tempi and lengths of 20-40 s.
- ``bach-chorales``: music21's Bach chorales whose final bass note is the tonic of the
  key signature's major or relative minor (that fixes the mode; modal chorales are skipped).
- ``folk-ryans`` (training) and ``folk-nottingham`` / ``folk-oneills`` (held out): ABC
  tunes whose ``K:`` field states the mode (bare letter or ``maj`` = major, ``m``/``min``
  = minor, modal tunes skipped) and whose last note is that tonic. Nottingham tunes carry
  chord symbols, which are played as an accompaniment.

Every clip is augmented at random (level, equalisation, noise, reverb, detuning by up to
40 cents) and written as mono FLAC; its chroma is computed with :func:`keylib.audio.decode`
and :func:`keylib.features.chroma` (the code inference uses) into ``chroma_cache.parquet``,
which has the columns of the extraction job's ``chroma/`` Parquet plus ``key``, ``source``,
``piece`` and ``split``. ``manifest.csv`` has ``path``, ``track_id``, ``key``, ``source``,
``piece``, ``instrument``, ``split``, so the extraction job can also turn it into Parquet.
"""

from __future__ import annotations

import csv
import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from .keys import KEY_NAMES, key_index, parse_key, tonic_mode, transpose_index

__all__ = [
    "SOUNDFONT",
    "TRAIN_PROGRAMS",
    "HELDOUT_PROGRAMS",
    "Note",
    "Piece",
    "write_midi",
    "render_midi",
    "augment",
    "procedural_piece",
    "pop909_songs",
    "plan_jobs",
    "make_training_set",
]

SOUNDFONT = Path(os.environ.get("KEYLIB_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
# General MIDI soundfonts that Debian ships (packages fluid-soundfont-gm, csound-soundfont,
# timgm6mb-soundfont, opl3-soundfont). Training renders with the first two; the held-out
# set only with the last two, so held-out music is played by sounds training never heard.
TRAIN_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/sf_GMbank.sf2")
HELDOUT_SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
RENDER_SR = 22050
POP909_RENDER_S = 64.0
# Held-out whole songs also get this excerpt (start, length in s), cut from the same render,
# so that excerpt and whole-song scores compare the same music.
HELDOUT_EXCERPT_S = (15.0, 30.0)
DRUM_CHANNEL = 9

# General MIDI programs. Held-out instruments are never used for training clips.
HELDOUT_PROGRAMS = (1, 5, 19, 22, 26, 46, 52, 61, 69, 73, 81, 89)
_HARMONY = [p for p in list(range(0, 8)) + list(range(16, 32)) + [40, 41, 42, 44, 45, 46, 48, 49, 50, 51, 52]
            + list(range(56, 64)) + list(range(64, 72)) + [88, 89, 90, 91, 94, 95] + [11, 12, 8, 10, 13]]
_MELODY = [p for p in list(range(0, 8)) + [8, 11, 13, 16, 17, 19, 21, 22, 24, 25, 26, 27, 29, 30, 40, 41, 56, 57,
                                           60, 61, 64, 65, 66, 68, 69, 70, 71, 72, 73, 74, 75, 78, 79, 80, 81, 82,
                                           85, 87, 104, 105]]
_BASS = [32, 33, 34, 35, 36, 37, 38, 39, 42, 43, 58, 0]
TRAIN_PROGRAMS = {
    "harmony": tuple(p for p in _HARMONY if p not in HELDOUT_PROGRAMS),
    "melody": tuple(p for p in _MELODY if p not in HELDOUT_PROGRAMS),
    "bass": tuple(p for p in _BASS if p not in HELDOUT_PROGRAMS and p != 33),
}
HELDOUT_BY_ROLE = {
    "harmony": (1, 5, 19, 26, 46, 52, 61, 89),
    "melody": (22, 69, 73, 81, 1, 26),
    "bass": (33,),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_NAT_MINOR = (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    end: float
    pitch: int
    velocity: int
    channel: int


@dataclass
class Piece:
    """Notes of one clip to render, with its label and description."""

    notes: list[Note]
    key: int
    source: str
    piece: str
    programs: dict[int, int] = field(default_factory=dict)  # channel -> GM program
    split: str = "train"
    duration: float = 0.0
    soundfont: str = ""  # path; "" = SOUNDFONT


# --------------------------------------------------------------------------- MIDI I/O

def write_midi(notes: Iterable[Note], programs: dict[int, int], path: Path) -> Path:
    """Write ``notes`` (times in seconds) to a type-1 MIDI file at 120 bpm, 480 ticks/beat."""
    import mido

    tpb = 480
    per_s = tpb * 2  # 120 bpm
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    mid.tracks.append(meta)
    by_channel: dict[int, list[Note]] = {}
    for n in notes:
        by_channel.setdefault(n.channel, []).append(n)
    for ch, chnotes in sorted(by_channel.items()):
        track = mido.MidiTrack()
        events = []
        if ch != DRUM_CHANNEL:
            track.append(mido.Message("program_change", channel=ch, program=int(programs.get(ch, 0)), time=0))
        for n in chnotes:
            if not 0 <= n.pitch <= 127:
                continue
            a = int(round(n.start * per_s))
            b = max(a + 1, int(round(n.end * per_s)))
            events.append((a, 1, n.pitch, n.velocity))
            events.append((b, 0, n.pitch, 0))
        events.sort(key=lambda e: (e[0], e[1]))
        now = 0
        for tick, on, pitch, vel in events:
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, channel=ch, note=pitch, velocity=vel, time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return Path(path)


def read_midi_tracks(path: Path) -> list[list[tuple[float, float, int, int]]]:
    """Notes per track of a MIDI file: lists of (start_s, end_s, pitch, velocity)."""
    import mido

    mid = mido.MidiFile(str(path))
    tempos = sorted((t, msg.tempo) for track in mid.tracks for t, msg in _abs(track) if msg.type == "set_tempo")
    if not tempos or tempos[0][0] != 0:
        tempos.insert(0, (0, 500000))
    # cumulative seconds at each tempo change
    marks = []
    secs = 0.0
    for i, (tick, tempo) in enumerate(tempos):
        if i:
            prev_tick, prev_tempo = tempos[i - 1]
            secs += (tick - prev_tick) * prev_tempo / 1e6 / mid.ticks_per_beat
        marks.append((tick, secs, tempo))

    def to_s(tick: int) -> float:
        j = 0
        while j + 1 < len(marks) and marks[j + 1][0] <= tick:
            j += 1
        t0, s0, tempo = marks[j]
        return s0 + (tick - t0) * tempo / 1e6 / mid.ticks_per_beat

    out = []
    for track in mid.tracks:
        on: dict[tuple[int, int], tuple[int, int]] = {}
        notes = []
        for tick, msg in _abs(track):
            if msg.type == "note_on" and msg.velocity > 0:
                on[(msg.channel, msg.note)] = (tick, msg.velocity)
            elif msg.type in ("note_off", "note_on"):
                started = on.pop((msg.channel, msg.note), None)
                if started is not None and getattr(msg, "channel", 0) != DRUM_CHANNEL:
                    notes.append((to_s(started[0]), to_s(tick), msg.note, started[1]))
        if notes:
            out.append(notes)
    return out


def _abs(track) -> Iterator[tuple[int, object]]:
    t = 0
    for msg in track:
        t += msg.time
        yield t, msg


# --------------------------------------------------------------------------- rendering

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
            noise = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                                   [1, -2.494956002, 2.017265875, -0.522189400], noise).astype(np.float32)
        rms = float(np.sqrt(np.mean(y ** 2))) or 1e-3
        noise *= rms / (float(np.sqrt(np.mean(noise ** 2))) or 1.0) / 10 ** (snr_db / 20)
        y = y + noise
    level = 10 ** (rng.uniform(-18, -1) / 20)
    y = y / (float(np.max(np.abs(y))) or 1.0) * level
    return y.astype(np.float32)


# --------------------------------------------------------------------------- procedural

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
                     split: str = "train", whole: bool = False) -> Piece:
    """A piece in ``key``: progression with cadences, bass, melody, optional drums.

    20-40 s long, or with ``whole`` 20 s to 5 min (log-uniform), the lengths of whole tracks.
    """
    tonic, mode = tonic_mode(key)
    bpm = rng.uniform(70, 150)
    beat = 60.0 / bpm
    beats_per_bar = int(rng.choice([3, 4, 4, 4]))
    duration = float(np.exp(rng.uniform(np.log(20), np.log(300)))) if whole else rng.uniform(20, 40)
    bar = beat * beats_per_bar
    n_bars = max(4, int(duration / bar))
    chords_per_bar = int(rng.choice([1, 1, 2]))
    n_chords = n_bars * chords_per_bar
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
    chord_len = bar / chords_per_bar
    notes: list[Note] = []
    register = int(rng.integers(52, 62))
    harmony_style = rng.choice(["block", "arp", "pulse"])
    use_bass = rng.random() < 0.85
    use_melody = rng.random() < 0.8
    use_harmony = (not use_melody) or rng.random() < 0.9
    use_drums = rng.random() < 0.5
    sub = beat / 2
    mel_pitch = tonic + 12 * ((register + 12) // 12)
    for i, deg in enumerate(seq):
        t0 = i * chord_len
        pcs = _triad(tonic, mode, deg)
        if deg == 4 and rng.random() < 0.4:  # dominant seventh
            pcs = pcs + [(pcs[0] + 10) % 12]
        chord = sorted(register + ((pc - register) % 12) for pc in pcs)
        if use_harmony:
            vel = int(rng.integers(55, 90))
            if harmony_style == "block":
                for p in chord:
                    notes.append(Note(t0, t0 + chord_len * 0.95, p, vel, 0))
            elif harmony_style == "arp":
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
        if use_bass:
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
        if use_melody:
            scale = _scale_pc(tonic, mode, leading=deg in (4, 6))
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
    end = n_chords * chord_len
    # final tonic chord held
    if use_drums:
        notes += _drums(np.arange(0, end, beat), beats_per_bar, rng)
    programs = {ch: int(rng.choice(programs_by_role[role])) for ch, role in ((0, "harmony"), (1, "bass"), (2, "melody"))}
    return Piece(notes, key, "procedural", piece, programs, split, end)


def _drums(beats: np.ndarray, per_bar: int, rng: np.random.Generator) -> list[Note]:
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


# --------------------------------------------------------------------------- POP909

def pop909_songs(root: Path) -> list[tuple[str, int]]:
    """(song id, key index) of the one-key songs under a POP909 folder."""
    out = []
    for path in sorted(glob.glob(str(Path(root) / "*" / "key_audio.txt"))):
        labels = [line.split()[-1] for line in open(path) if line.strip()]
        if labels and len(set(labels)) == 1:
            try:
                out.append((Path(path).parent.name, parse_key(labels[0])))
            except Exception:
                continue
    return out


def pop909_piece(root: Path, song: str, key: int, rng: np.random.Generator, *, transpose: int,
                 programs_by_role: dict, split: str, whole: bool = False) -> Piece:
    """A POP909 song, transposed, with random instruments: an excerpt of up to
    :data:`POP909_RENDER_S` s, or with ``whole`` the song from start to end."""
    tracks = read_midi_tracks(Path(root) / song / f"{song}.mid")
    end = max(n[1] for tr in tracks for n in tr)
    length = end if whole else min(POP909_RENDER_S, end)
    start = float(rng.uniform(0, max(0.0, end - length)))
    notes: list[Note] = []
    roles = ["melody", "melody", "harmony"]  # MELODY, BRIDGE, PIANO
    programs = {}
    for ch, tr in enumerate(tracks[:3]):
        role = roles[ch] if len(tracks) >= 3 else "harmony"
        if ch < 2 and rng.random() < 0.15:  # sometimes leave a melody out
            continue
        programs[ch] = int(rng.choice(programs_by_role[role]))
        for s, e, p, v in tr:
            if e <= start or s >= start + length:
                continue
            notes.append(Note(max(s, start) - start, min(e, start + length) - start, p + transpose, v, ch))
    if rng.random() < 0.5:
        beats_path = Path(root) / song / "beat_midi.txt"
        try:
            beats = np.loadtxt(beats_path)[:, 0]
            beats = beats[(beats >= start) & (beats < start + length)] - start
            notes += _drums(beats, 4, rng)
        except Exception:
            pass
    return Piece(notes, transpose_index(key, transpose), "pop909", song, programs, split, length)


# --------------------------------------------------------------------------- music21

def _corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def chorale_key(score) -> int | None:
    """Key of a chorale from its key signature and final bass note, None when modal."""
    from music21 import key as m21key

    sigs = score.recurse().getElementsByClass(m21key.KeySignature)
    if not sigs:
        return None
    major_tonic = (7 * sigs[0].sharps) % 12
    last = None
    for n in score.parts[-1].recurse().notes:
        last = n
    if last is None:
        return None
    bass = min(p.midi for p in last.pitches) % 12
    if bass == major_tonic:
        return key_index(major_tonic, "major")
    if bass == (major_tonic + 9) % 12:
        return key_index(bass, "minor")
    return None


def score_notes(score, *, bpm: float, melody_channel_for_single: int = 2) -> list[Note]:
    """Notes of a music21 score (parts -> channels 0..), chord symbols on channel 0."""
    from music21 import harmony

    sec = 60.0 / bpm
    notes: list[Note] = []
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    single = len(parts) == 1
    for ch, part in enumerate(parts[:4]):
        flat = part.flatten()
        chan = melody_channel_for_single if single else ch
        symbols = []
        for el in flat.notes:
            if isinstance(el, harmony.ChordSymbol):
                symbols.append(el)
                continue
            s = float(el.offset) * sec
            e = s + max(float(el.quarterLength), 0.25) * sec
            for p in el.pitches:
                notes.append(Note(s, e, int(p.midi), 80, chan))
        for i, cs in enumerate(symbols):
            s = float(cs.offset) * sec
            nxt = float(symbols[i + 1].offset) * sec if i + 1 < len(symbols) else float(flat.highestTime) * sec
            if nxt <= s:
                continue
            try:
                pcs = sorted({p.pitchClass for p in cs.pitches})
            except Exception:
                continue
            root = cs.root().pitchClass if cs.root() is not None else pcs[0]
            for pc in pcs:
                notes.append(Note(s, nxt, 55 + (pc - 55) % 12, 60, 0))
            notes.append(Note(s, nxt, 36 + (root - 36) % 12, 70, 1))
    return notes


_ABC_KEY = re.compile(r"^K:[ \t]*([A-Ga-g])[ \t]*([#b]?)[ \t]*([A-Za-z]*)", re.M)


def abc_tunes(path: Path) -> list[tuple[str, str, int]]:
    """(tune id, ABC text, key index) of the tunes in an ABC file whose K: field states the mode."""
    text = Path(path).read_text(errors="replace")
    blocks = re.split(r"(?m)^(?=X:)", text)
    header = blocks[0] if blocks and not blocks[0].startswith("X:") else ""
    out = []
    for block in blocks:
        if not block.startswith("X:"):
            continue
        m = _ABC_KEY.search(block)
        if not m:
            continue
        letter, acc, mode = m.group(1).upper(), m.group(2), m.group(3).lower()
        if mode in ("", "maj", "major", "ion", "ionian"):
            mode_name = "major"
        elif mode in ("m", "min", "minor", "aeo", "aeolian"):
            mode_name = "minor"
        else:
            continue
        tonic = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[letter] + (1 if acc == "#" else -1 if acc == "b" else 0)
        tid = block.split("\n", 1)[0][2:].strip()
        out.append((tid, header + block, key_index(tonic, mode_name)))
    return out


# --------------------------------------------------------------------------- no key

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
            y = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                               [1, -2.494956002, 2.017265875, -0.522189400], y)
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
        notes = _drums(np.arange(0, seconds, beat), int(rng.choice([3, 4])), rng)
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
        roles = _programs(split)
        programs = {0: int(rng.choice(roles["melody"])), 1: int(rng.choice(roles["harmony"]))}
    else:
        raise ValueError(f"unknown atonal kind {kind!r}; expected one of {ATONAL_KINDS}")
    fonts = _soundfonts(split)
    mid = write_midi(notes, programs, Path(tmp) / "a.mid")
    return _trim(render_midi(mid, Path(tmp) / "a.wav", soundfont=fonts[int(rng.integers(len(fonts)))]))


# --------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One unit of work for a worker: a piece and its variants (transposition, seed)."""

    kind: str  # procedural | pop909 | chorale | abc
    ref: str  # song id, corpus path, abc path::tune id
    key: int | None
    variants: list[tuple[int, int]]  # (transpose, seed)
    split: str
    source: str
    extra: str = ""  # abc text
    whole: bool = False  # render the whole piece (no 20-40 s cut)


def _programs(split: str) -> dict:
    return HELDOUT_BY_ROLE if split == "heldout" else TRAIN_PROGRAMS


def _soundfonts(split: str) -> tuple[str, ...]:
    return HELDOUT_SOUNDFONTS if split == "heldout" else TRAIN_SOUNDFONTS


def _build_pieces(job: Job) -> list[Piece]:
    pieces = []
    if job.kind == "procedural":
        for transpose, seed in job.variants:
            rng = np.random.default_rng(seed)
            key = transpose_index(job.key, transpose)
            pieces.append(procedural_piece(key, rng, piece=f"{job.ref}", programs_by_role=_programs(job.split),
                                           split=job.split, whole=job.whole))
        return _with_soundfonts(pieces, job)
    if job.kind == "pop909":
        root, song = job.ref.rsplit("::", 1)
        for transpose, seed in job.variants:
            rng = np.random.default_rng(seed)
            pieces.append(pop909_piece(Path(root), song, job.key, rng, transpose=transpose,
                                       programs_by_role=_programs(job.split), split=job.split, whole=job.whole))
        return _with_soundfonts(pieces, job)
    # music21 scores
    from music21 import converter, corpus

    if job.kind in ("chorale", "score"):
        score = corpus.parse(job.ref)
        key = chorale_key(score)
        if key is None:
            return []
    else:
        score = converter.parse(job.extra, format="abc")
        key = job.key
        # trust the K: field only when the tune ends on its tonic
        last = None
        for n in score.recurse().notes:
            if not n.isChord or not hasattr(n, "figure"):
                last = n
        if last is None or min(p.pitchClass for p in last.pitches) != key % 12:
            return []
    for transpose, seed in job.variants:
        rng = np.random.default_rng(seed)
        bpm = rng.uniform(60, 100) if job.kind in ("chorale", "score") else rng.uniform(80, 140)
        base = score_notes(score, bpm=bpm)
        if not base:
            return []
        end = max(n.end for n in base)
        length = end if job.whole else min(end, rng.uniform(20, 40))
        start = rng.uniform(0, max(0.0, end - length)) if rng.random() < 0.5 else 0.0
        notes = [Note(max(n.start, start) - start, min(n.end, start + length) - start, n.pitch + transpose, n.velocity, n.channel)
                 for n in base if n.end > start and n.start < start + length]
        roles = _programs(job.split)
        if job.kind in ("chorale", "score"):
            # one instrument for all voices, or one per voice
            if rng.random() < 0.5:
                p = int(rng.choice(roles["harmony"]))
                programs = {ch: p for ch in range(4)}
            else:
                programs = {ch: int(rng.choice(roles["harmony" if ch < 3 else "bass"])) for ch in range(4)}
        else:
            programs = {0: int(rng.choice(roles["harmony"])), 1: int(rng.choice(roles["bass"])), 2: int(rng.choice(roles["melody"]))}
        pieces.append(Piece(notes, transpose_index(key, transpose), job.source, _piece_name(job.ref),
                            programs, job.split, length))
    return _with_soundfonts(pieces, job)


def _piece_name(ref: str) -> str:
    """A piece's name from its reference: the corpus path without its top folder, or the tune."""
    if "::" in ref:  # file::tune id
        return Path(ref).name
    parts = Path(ref).with_suffix("").parts  # composer/work/movement: movement names repeat
    return "/".join(parts[1:]) if len(parts) > 1 else parts[0]


def _with_soundfonts(pieces: list[Piece], job: Job) -> list[Piece]:
    """Give each piece a soundfont of its split, drawn from the variant's seed."""
    for piece, (_, seed) in zip(pieces, job.variants):
        fonts = _soundfonts(job.split)
        piece.soundfont = fonts[int(np.random.default_rng(seed + 17).integers(len(fonts)))]
    return pieces


def track_id_of(piece: Piece, i: int) -> str:
    tag = zlib.crc32(f"{piece.piece}|{piece.key}|{i}|{sorted(piece.programs.items())}|{piece.soundfont}".encode()) & 0xFFFFFFFF
    return f"{piece.source}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', piece.piece)}-{KEY_NAMES[piece.key].replace(' ', '').replace('#', 's')}-{tag:08x}"


def run_job(job: Job, out_dir: str, with_chroma: bool = True, augment_strength: float = 1.0) -> list[dict]:
    """Render the pieces of ``job``; returns manifest rows (plus ``chroma`` when asked)."""
    from . import audio, features

    out = Path(out_dir)
    if job.kind == "atonal":
        return _run_atonal(job, out, with_chroma=with_chroma)
    rows = []
    try:
        pieces = _build_pieces(job)
    except Exception as exc:  # a score music21 cannot read is skipped, not fatal
        return [{"error": f"{job.ref}: {type(exc).__name__}: {exc}"}]
    with tempfile.TemporaryDirectory(prefix="keylib-render-") as tmp:
        for i, piece in enumerate(pieces):
            seed = job.variants[min(i, len(job.variants) - 1)][1]
            rng = np.random.default_rng(seed + 7919)
            if not [n for n in piece.notes if n.channel != DRUM_CHANNEL]:
                continue
            mid = write_midi(piece.notes, piece.programs, Path(tmp) / "x.mid")
            y = render_midi(mid, Path(tmp) / "x.wav", soundfont=piece.soundfont or None)
            clips = _whole(y, piece) if job.whole else _cut(y, piece, rng)
            for j, (cut, clip) in enumerate(clips):
                if float(np.max(np.abs(clip), initial=0.0)) < 1e-4:
                    continue
                if cut == "whole" and j == 0 and len(clips) > 1:
                    # the held-out excerpt is cut from this very render after augmentation
                    clip = augment(clip, rng, strength=augment_strength)
                    a, n = (int(x * RENDER_SR) for x in HELDOUT_EXCERPT_S)
                    clips[1] = ("excerpt", clip[a:a + n])
                elif cut != "excerpt":
                    clip = augment(clip, rng, strength=augment_strength)
                tid = track_id_of(piece, i * 10 + j) + ("-x30" if cut == "excerpt" else "")
                rel = f"audio/{piece.split}/{piece.source}/{tid}.flac"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(out / rel), clip, RENDER_SR, format="FLAC", subtype="PCM_16")
                row = {
                    "path": rel, "track_id": tid, "key": KEY_NAMES[piece.key], "source": piece.source,
                    "piece": piece.piece, "instrument": ";".join(str(p) for _, p in sorted(piece.programs.items())),
                    "split": piece.split, "duration_s": round(len(clip) / RENDER_SR, 2),
                    "cut": cut, "soundfont": Path(piece.soundfont or SOUNDFONT).stem,
                }
                if with_chroma:
                    dec = audio.decode((out / rel).read_bytes(), ext=".flac")
                    row["chroma"] = features.chroma(dec.samples)
                rows.append(row)
    return rows


def _run_atonal(job: Job, out: Path, *, with_chroma: bool) -> list[dict]:
    """Clips without a key (``key`` empty, ``split`` = ``atonal``): the negatives of the
    tonality classifier."""
    from . import audio, features

    rows = []
    with tempfile.TemporaryDirectory(prefix="keylib-render-") as tmp:
        for i, (_, seed) in enumerate(job.variants):
            rng = np.random.default_rng(seed)
            try:
                y = atonal_clip(job.ref, rng, tmp=Path(tmp), split=job.split)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                return [{"error": f"atonal {job.ref}: {exc}"}]
            if float(np.max(np.abs(y), initial=0.0)) < 1e-4:
                continue
            y = augment(y, rng, strength=0.5)
            tid = f"atonal-{job.ref}-{seed:08x}"[:48]
            rel = f"audio/atonal/{job.ref}/{tid}.flac"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out / rel), y, RENDER_SR, format="FLAC", subtype="PCM_16")
            row = {"path": rel, "track_id": tid, "key": "", "source": f"atonal-{job.ref}", "piece": tid,
                   "instrument": "", "split": "atonal", "duration_s": round(len(y) / RENDER_SR, 2),
                   "cut": "whole", "soundfont": ""}
            if with_chroma:
                row["chroma"] = features.chroma(audio.decode((out / rel).read_bytes(), ext=".flac").samples)
            rows.append(row)
    return rows


def _trim(y: np.ndarray) -> np.ndarray:
    """The render without its leading and trailing digital silence."""
    nz = np.flatnonzero(np.abs(y) > 1e-4)
    return y[nz[0]: nz[-1] + 1] if nz.size else y[:0]


def _cut(y: np.ndarray, piece: Piece, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Clips of 20-40 s from a render (pop909 renders give two)."""
    y = _trim(y)
    if y.size == 0:
        return []
    sr = RENDER_SR
    if len(y) > 45 * sr:
        n1 = int(rng.uniform(20, 32) * sr)
        rest = y[n1:]
        return [("excerpt", y[:n1]), ("excerpt", rest[: int(40 * sr)])]
    return [("excerpt", y)]


def _whole(y: np.ndarray, piece: Piece) -> list[tuple[str, np.ndarray]]:
    """The whole render; a held-out one long enough also gives its 30 s excerpt (filled in
    by :func:`run_job` after augmentation, so both are the same audio)."""
    y = _trim(y)
    if y.size == 0:
        return []
    start, length = HELDOUT_EXCERPT_S
    if piece.split == "heldout" and len(y) >= (start + length + 15) * RENDER_SR:
        return [("whole", y), ("excerpt", y[:0])]
    return [("whole", y)]


def plan_jobs(*, pop909: Path | None, n_procedural: int, n_chorales: int, n_folk: int, n_heldout_folk: int,
              transpositions: int, pop909_renders: int, pop909_holdout_from: int, seed: int,
              pop909_limit: int | None = None, pop909_offset: int = 0, pop909_heldout: bool = True,
              whole: bool = False, n_heldout_classical: int = 0, n_atonal: int = 0) -> list[Job]:
    """The work list: which pieces, which transpositions, which split.

    With ``whole`` every piece is rendered from start to end (songs of several minutes), as
    catalogues hold them; held-out whole songs also give their 30 s excerpt. Held-out
    classical music comes from music21's string quartets (Beethoven, Haydn, Mozart,
    Schumann), a source training never sees.
    """
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []

    def variants(n: int) -> list[tuple[int, int]]:
        shifts = rng.permutation(12)[:n] if n <= 12 else rng.integers(0, 12, n)
        return [(int(s), int(rng.integers(1 << 31))) for s in shifts]

    if pop909 is not None and Path(pop909).is_dir():
        songs = pop909_songs(Path(pop909))
        train = [s for s in songs if int(s[0]) < pop909_holdout_from][pop909_offset:]
        held = [s for s in songs if int(s[0]) >= pop909_holdout_from] if pop909_heldout else []
        if pop909_limit:
            train, held = train[:pop909_limit], held[: max(1, pop909_limit // 5)]
        for song, key in train + held:
            split = "heldout" if int(song) >= pop909_holdout_from else "train"
            jobs.append(Job("pop909", f"{pop909}::{song}", key, variants(pop909_renders), split, "pop909"))
    for i in range(n_procedural):
        jobs.append(Job("procedural", f"{i:05d}", int(rng.integers(24)), variants(1), "train", "procedural"))
    if n_heldout_classical:
        cdir = _corpus_dir()
        paths = sorted(str(p.relative_to(cdir)) for c in ("beethoven", "haydn", "mozart", "schumann_robert")
                       for p in (cdir / c).rglob("*.mxl"))
        for rel in [paths[i] for i in rng.permutation(len(paths))[:n_heldout_classical]]:
            jobs.append(Job("score", rel, None, variants(1), "heldout", "classical-quartets"))
    if n_chorales:
        from music21 import corpus

        paths = [str(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".krn", ".xml"))]
        rng.shuffle(paths)
        for p in paths[:n_chorales]:
            rel = "bach/" + Path(p).name
            jobs.append(Job("chorale", rel, None, variants(transpositions), "train", "bach-chorales"))
    cdir = _corpus_dir()
    if n_folk:
        files = sorted(glob.glob(str(cdir / "ryansMammoth" / "*.abc")))
        rng.shuffle(files)
        tunes = [(f, t) for f in files for t in abc_tunes(Path(f))[:1]]
        for f, (tid, text, key) in tunes[:n_folk]:
            jobs.append(Job("abc", f"{f}::{tid}", key, variants(max(1, transpositions // 2)), "train", "folk-ryans", text))
    if n_heldout_folk:
        held = []
        for f in sorted(glob.glob(str(cdir / "nottingham-dataset" / "*.abc"))):
            held += [("folk-nottingham", f, t) for t in abc_tunes(Path(f))]
        oneills = sorted(glob.glob(str(cdir / "oneills1850" / "*.abc")))[:3]
        for f in oneills:
            held += [("folk-oneills", f, t) for t in abc_tunes(Path(f))]
        order = rng.permutation(len(held))
        for i in order[:n_heldout_folk]:
            src, f, (tid, text, key) = held[i]
            jobs.append(Job("abc", f"{f}::{tid}", key, variants(1), "heldout", src, text))
    for i in range(n_atonal):
        kind = ATONAL_KINDS[i % len(ATONAL_KINDS)]
        jobs.append(Job("atonal", kind, None, variants(1), "atonal", f"atonal-{kind}"))
    for job in jobs:
        job.whole = whole
    return jobs


def make_training_set(out_dir: Path, *, workers: int = 2, with_chroma: bool = True, progress: bool = True,
                      **plan) -> Path:
    """Render the planned jobs in a local process pool; write manifest.csv (+ chroma_cache.parquet).

    Returns the manifest's path.
    """
    import multiprocessing as mp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(**plan)
    # expensive jobs first so the pool's tail is short
    order = {"score": 0, "chorale": 1, "abc": 2, "pop909": 3, "procedural": 4, "atonal": 5}
    jobs.sort(key=lambda j: order[j.kind])
    rows: list[dict] = []
    errors: list[str] = []
    fn = functools.partial(run_job, out_dir=str(out_dir), with_chroma=with_chroma)
    ctx = mp.get_context("spawn" if os.environ.get("KEYLIB_SPAWN") else "fork")
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
        bar.start()
        task = bar.add_task("rendering", total=len(jobs))
    try:
        if workers <= 1:
            results = map(fn, jobs)
            pool = None
        else:
            pool = ctx.Pool(workers, maxtasksperchild=200)
            results = pool.imap_unordered(fn, jobs, chunksize=1)
        for res in results:
            for row in res:
                if "error" in row:
                    errors.append(row["error"])
                else:
                    rows.append(row)
            if bar is not None:
                bar.update(task, advance=1, description=f"rendering ({len(rows)} clips)")
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if bar is not None:
            bar.stop()
    rows.sort(key=lambda r: r["track_id"])
    manifest = out_dir / "manifest.csv"
    cols = ["path", "track_id", "key", "source", "piece", "instrument", "split", "duration_s", "cut", "soundfont"]
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if with_chroma and rows:
        write_chroma_cache(rows, out_dir / "chroma_cache.parquet", out_dir)
    if errors:
        (out_dir / "errors.txt").write_text("\n".join(errors) + "\n")
    return manifest


def write_chroma_cache(rows: list[dict], path: Path, root: Path) -> Path:
    """Chroma rows in the extraction job's column layout (+ key, source, piece, split)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .features import FEATURE_VERSION

    table = pa.table({
        "track_id": [r["track_id"] for r in rows],
        "uri": [str(Path(root) / r["path"]) for r in rows],
        "n_frames": [int(r["chroma"].shape[1]) for r in rows],
        "chroma": [r["chroma"].reshape(-1).astype(np.float32) for r in rows],
        "status": ["ok"] * len(rows),
        "feature_version": [FEATURE_VERSION] * len(rows),
        "key": [r["key"] for r in rows],
        "source": [r["source"] for r in rows],
        "piece": [r["piece"] for r in rows],
        "split": [r["split"] for r in rows],
        "instrument": [r["instrument"] for r in rows],
        "cut": [r.get("cut", "excerpt") for r in rows],
        "soundfont": [r.get("soundfont", "") for r in rows],
        "duration_s": [float(r["duration_s"]) for r in rows],
    })
    pq.write_table(table, str(path))
    return path
