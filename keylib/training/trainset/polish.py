"""The Polish Music Heritage scores (``../shared/data/polish-scores``): real compositions of
the 17th to early 20th century in Humdrum ``**kern`` with stated keys, CC BY 4.0 (The
Fryderyk Chopin Institute, https://polishscores.org; credited in the model card and the
README).

A score is kept when its first key token (``*D:`` D major, ``*f#:`` F# minor) is also its
last, so the label is the key the piece starts and ends in. Whole composers are kept apart:
:func:`composer_split` sends each named composer to training, validation or the held-out set;
anonymous pieces (a third of the archive, composers unknown) only ever train. Verovio turns
``**kern`` into MIDI (much faster than music21) with General MIDI programs from the score's
instrument names, so strings are played as strings; parts of transposing instruments
(clarinets, horns, trumpets), whose written pitch may not be their sounding pitch, are left out.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...keys import key_index, transpose_index
from .midi import DRUM_CHANNEL, Note, Piece

__all__ = ["CREDIT", "PolishScore", "POLISH_SOURCE", "composer_split", "opening_and_ending", "polish_scores",
           "polish_piece", "polish_root"]

POLISH_SOURCE = "polish-scores"
CREDIT = ("Polish Music Heritage in Open Access. Copyright 2019-2022 The Fryderyk Chopin Institute "
          "(https://nifc.pl). Website: https://polishscores.org. Digital scores: "
          "https://github.com/pl-wnifc/humdrum-polish-scores. License: https://creativecommons.org/licenses/by/4.0")
ANONYMOUS = "Anonim"
# Shares of the named composers (by a hash of the name) kept for validation and held out.
VALIDATION_COMPOSERS = 0.10
HELDOUT_COMPOSERS = 0.10
# Training renders a score's opening and its ending, joined (a shorter score whole): a kept
# score starts and ends in its stated key, but its middle modulates, most often to the dominant.
# A network that never heard these scores names the dominant for 4% of their first 30 s and
# 22% of the 30 s from 45 s (bench/positions.py), so crops of the middle would teach the key a fifth
# below what is heard. Render time is better spent on more scores than on the rest of a long
# one. Validation and held-out scores are rendered whole.
TRAIN_OPENING_S = 45.0
TRAIN_ENDING_S = 45.0
_KEY_TOKEN = re.compile(r"^\*([A-Ga-g])([#-]?):$")
_STRINGS = re.compile(r"\*I(violn|viola|viole|violb|cello|cbass)\b|\*I\"[^\t\n]*(violin|viola|violon|cello)", re.I)
# Part names of transposing instruments: their parts are dropped (written pitch != sounding).
_TRANSPOSING = re.compile(r"clar|corn|horn|trom[bp]|trumpet|tymp|timp", re.I)
# Verovio's programs for them (trumpet, French horn, clarinet), whatever the part's name.
_TRANSPOSING_PROGRAMS = (56, 60, 71)
# General MIDI programs kept for the held-out set (instruments.HELDOUT_PROGRAMS) replaced in
# training by the nearest instrument training may use.
_TRAIN_SUBSTITUTE = {1: 0, 5: 4, 19: 20, 22: 21, 26: 25, 46: 45, 52: 53, 61: 60, 69: 68, 73: 74, 81: 80, 89: 88}


@dataclass(frozen=True)
class PolishScore:
    """One kept score: its path, composer, key index and whether it has string parts."""

    path: str
    composer: str
    key: int
    strings: bool


def polish_root(folder: str | Path, *, cache: Path) -> Path:
    """The folder of ``.krn`` files: ``folder`` itself when it holds them, else its
    ``polish-scores.tar.xz`` unpacked once under ``cache``."""
    folder = Path(folder)
    if any(folder.rglob("*.krn")):
        return folder
    archive = folder / "polish-scores.tar.xz"
    if not archive.is_file():
        raise FileNotFoundError(f"{folder} holds neither .krn files nor polish-scores.tar.xz")
    target = cache / "polish-scores"
    done = target / ".unpacked"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        done.touch()
    return target


def _key_of(token: str) -> int:
    letter, accidental = token[0], token[1:]
    tonic = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[letter.upper()]
    tonic += {"#": 1, "-": -1, "": 0}[accidental]
    return key_index(tonic % 12, "major" if letter.isupper() else "minor")


def read_score_header(text: str) -> tuple[str, int | None, bool]:
    """(composer, key index or None, has strings) of a ``**kern`` file's text: the key is
    None unless the first and the last key token name the same key."""
    composer = ANONYMOUS
    keys: list[str] = []
    for line in text.splitlines():
        if line.startswith("!!!COM:"):
            composer = line.split(":", 1)[1].strip() or ANONYMOUS
        elif line.startswith("*") and not line.startswith("**"):
            for token in line.split("\t"):
                m = _KEY_TOKEN.match(token)
                if m:
                    keys.append(m.group(1) + m.group(2))
                    break
    key = _key_of(keys[0]) if keys and keys[0] == keys[-1] else None
    return composer, key, bool(_STRINGS.search(text))


def polish_scores(root: Path) -> list[PolishScore]:
    """The kept scores under ``root``, sorted by path."""
    out = []
    for path in sorted(Path(root).rglob("*.krn")):
        composer, key, strings = read_score_header(path.read_text(errors="replace"))
        if key is not None:
            out.append(PolishScore(str(path), composer, key, strings))
    return out


def composer_split(composer: str, *, seed: int = 7) -> str:
    """``train``, ``validation`` or ``heldout`` for a composer (anonymous: ``train``)."""
    if composer == ANONYMOUS:
        return "train"
    h = (zlib.crc32(f"{seed}|{composer}".encode()) % 10_000) / 10_000
    if h < HELDOUT_COMPOSERS:
        return "heldout"
    if h < HELDOUT_COMPOSERS + VALIDATION_COMPOSERS:
        return "validation"
    return "train"


def score_tracks(path: str | Path) -> list[tuple[str, int, list[tuple[float, float, int, int]]]]:
    """(part name, GM program, notes (start_s, end_s, pitch, velocity)) per MIDI track that
    Verovio makes of a ``**kern`` file; parts of transposing instruments left out."""
    import mido

    mid = mido.MidiFile(file=io.BytesIO(kern_to_midi(path)))
    out = []
    for track in mid.tracks:
        name = next((m.name for m in track if m.type == "track_name"), "")
        program = next((m.program for m in track if m.type == "program_change"), 0)
        if _TRANSPOSING.search(name) or program in _TRANSPOSING_PROGRAMS:
            continue
        notes = _track_notes(track, mid)
        if notes:
            out.append((name, int(program), notes))
    return out


def kern_to_midi(path: str | Path, *, timeout_s: float = 120.0) -> bytes:
    """Verovio's MIDI of a ``**kern`` file, made in a child process: Verovio crashes
    (SIGSEGV) on a few scores of the archive, which must cost that score, not the worker
    process that renders a training set (a lost worker stalls the whole pool)."""
    cmd = [sys.executable, "-c", _VEROVIO_CHILD, str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ValueError(f"verovio took over {timeout_s:.0f} s on {path}") from None
    if done.returncode != 0:
        why = f"signal {-done.returncode}" if done.returncode < 0 else done.stderr.decode(errors="replace")[-300:]
        raise ValueError(f"verovio cannot convert {path}: {why}")
    return base64.b64decode(done.stdout)


# kern_to_midi's child: the base64 MIDI of one file on stdout. It imports Verovio alone, not
# keylib (``-m`` this module would import the package, numpy and all, for every score).
_VEROVIO_CHILD = """
import sys
from pathlib import Path

import verovio

path = sys.argv[1]
verovio.enableLog(False)
tk = verovio.toolkit()
tk.setOptions({"breaks": "none"})
if not tk.loadData(Path(path).read_text(errors="replace")):
    raise SystemExit(f"verovio cannot read {path}")
print(tk.renderToMIDI())
"""


def _track_notes(track, mid) -> list[tuple[float, float, int, int]]:
    import mido

    # Verovio writes one tempo map in the first track; mido's merged iteration gives seconds.
    solo = mido.MidiFile(ticks_per_beat=mid.ticks_per_beat)
    tempo = [m for m in mid.tracks[0] if m.is_meta and m.type == "set_tempo"]
    solo.tracks.append(mido.MidiTrack(tempo))
    solo.tracks.append(track)
    now, on, notes = 0.0, {}, []
    for msg in solo:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            on[msg.note] = (now, msg.velocity)
        elif msg.type in ("note_on", "note_off") and msg.note in on:
            start, velocity = on.pop(msg.note)
            if now > start:
                notes.append((start, now, msg.note, velocity))
    return notes


def polish_piece(score: PolishScore, rng: np.random.Generator, *, transpose: int, programs_by_role: dict,
                 split: str, own_instruments: float = 0.6,
                 tracks: list[tuple[str, int, list[tuple[float, float, int, int]]]] | None = None) -> Piece:
    """A score, transposed, at a tempo scaled by 0.85-1.15 (in training its opening and
    ending, :func:`opening_and_ending`, else whole): with probability
    ``own_instruments`` each part keeps the score's instrument (held-out programs swapped
    for a near one in training), else every part gets a random program of its role (the
    lowest part the bass). ``tracks``: the score's :func:`score_tracks`, when already made
    (the variants of one score share them)."""
    tracks = score_tracks(score.path) if tracks is None else tracks
    if not tracks:
        return Piece([], transpose_index(score.key, transpose), POLISH_SOURCE, _piece_name(score), {}, split, 0.0)
    stretch = float(rng.uniform(0.85, 1.15))
    own = rng.random() < own_instruments
    lowest = int(np.argmin([np.median([n[2] for n in notes]) for _, _, notes in tracks]))
    channels = [c for c in range(16) if c != DRUM_CHANNEL]
    programs: dict[int, int] = {}
    notes: list[Note] = []
    for i, (_, program, part) in enumerate(tracks):
        if own:
            program = _TRAIN_SUBSTITUTE.get(program, program) if split != "heldout" else program
        else:
            program = int(rng.choice(programs_by_role["bass" if i == lowest else "harmony"]))
        # more parts than MIDI channels: parts with the same program share one
        channel = next((c for c, p in programs.items() if p == program), None)
        if channel is None:
            channel = channels[len(programs) % len(channels)]
            programs.setdefault(channel, program)
        notes += [Note(s * stretch, e * stretch, p + transpose, v, channel) for s, e, p, v in part]
    if split == "train":
        notes = opening_and_ending(notes, opening_s=TRAIN_OPENING_S, ending_s=TRAIN_ENDING_S)
    length = max(n.end for n in notes)
    return Piece(notes, transpose_index(score.key, transpose), POLISH_SOURCE, _piece_name(score), programs, split, length)


def opening_and_ending(notes: list[Note], *, opening_s: float, ending_s: float) -> list[Note]:
    """The notes of the first ``opening_s`` seconds followed by those of the last ``ending_s``
    seconds, moved to start where the opening stops; notes across a cut are cut. Music no
    longer than ``opening_s + ending_s`` is returned whole.

    Parameters
    ----------
    notes : list of Note
        Seconds from the start of the music.
    opening_s, ending_s : float > 0

    Returns
    -------
    list of Note
        At most ``opening_s + ending_s`` seconds long.
    """
    if opening_s <= 0 or ending_s <= 0:
        raise ValueError(f"opening_s and ending_s must be > 0, got {opening_s} and {ending_s}")
    length = max((n.end for n in notes), default=0.0)
    if length <= opening_s + ending_s:
        return list(notes)
    cut = length - ending_s  # where the ending starts; it moves to opening_s
    opening = [Note(n.start, min(n.end, opening_s), n.pitch, n.velocity, n.channel)
               for n in notes if n.start < opening_s]
    ending = [Note(max(n.start, cut) - cut + opening_s, n.end - cut + opening_s, n.pitch, n.velocity, n.channel)
              for n in notes if n.end > cut]
    return opening + ending


def _piece_name(score: PolishScore) -> str:
    return Path(score.path).stem
