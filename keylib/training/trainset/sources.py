"""Corpus readers: POP909 songs, music21 scores (Bach chorales, string quartets) and ABC
folk tunes, each turned into labelled :class:`~keylib.training.trainset.midi.Note` lists.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np

from ...keys import key_index, parse_key, transpose_index
from .midi import Note, Piece, read_midi_tracks
from .procedural import drum_part

POP909_RENDER_S = 64.0


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
            notes += drum_part(beats, 4, rng)
        except Exception:
            pass
    return Piece(notes, transpose_index(key, transpose), "pop909", song, programs, split, length)


def corpus_dir() -> Path:
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


# Read by hand, not with music21's ABCMetadata: that one agrees on all 3070 tunes of the corpora
# used here, but reads "K:none" and a bare "K:" as C major and names ion/aeo as modes.
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
