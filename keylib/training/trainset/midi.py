"""MIDI I/O: the notes of a clip (:class:`Note`, :class:`Piece`) to and from MIDI files.

Times are in seconds throughout; :func:`write_midi` writes them at 120 bpm and
:func:`read_midi_tracks` and :func:`read_midi_notes` read any tempo map back into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

DRUM_CHANNEL = 9


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
    """Notes per track of a MIDI file, drums left out: lists of (start_s, end_s, pitch, velocity)."""
    import mido

    out: dict[int, list[tuple[float, float, int, int]]] = {}
    for track, note in _timed_notes(mido.MidiFile(str(path))):
        if note.channel != DRUM_CHANNEL:
            out.setdefault(track, []).append((note.start, note.end, note.pitch, note.velocity))
    return [out[track] for track in sorted(out)]


def read_midi_notes(path: Path) -> tuple[list[Note], dict[int, int]]:
    """Every note of a MIDI file, drums included, and each channel's General MIDI program
    (its first program change; 0 where it has none)."""
    import mido

    mid = mido.MidiFile(str(path))
    programs: dict[int, int] = {}
    for track in mid.tracks:
        for msg in track:
            if msg.type == "program_change":
                programs.setdefault(msg.channel, msg.program)
    notes = sorted((note for _, note in _timed_notes(mid)), key=lambda n: (n.start, n.channel, n.pitch))
    for note in notes:
        programs.setdefault(note.channel, 0)
    return notes, programs


def _timed_notes(mid) -> Iterator[tuple[int, Note]]:
    """(track index, note) for every note of a parsed MIDI file (:class:`mido.MidiFile`), its
    times read through the tempo map."""
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

    for index, track in enumerate(mid.tracks):
        on: dict[tuple[int, int], tuple[int, int]] = {}
        for tick, msg in _abs(track):
            if msg.type == "note_on" and msg.velocity > 0:
                on[(msg.channel, msg.note)] = (tick, msg.velocity)
            elif msg.type in ("note_off", "note_on"):
                started = on.pop((msg.channel, msg.note), None)
                if started is not None:
                    yield index, Note(to_s(started[0]), to_s(tick), msg.note, started[1], msg.channel)


def _abs(track) -> Iterator[tuple[int, object]]:
    t = 0
    for msg in track:
        t += msg.time
        yield t, msg
