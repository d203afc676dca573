"""The 24 keys: indices, spellings, lenient parsing, Camelot and Open Key codes.

Index order (used for the ``probs`` column and every model output)::

    0..11   C major, Db major, D major, ..., B major   (tonic = index)
    12..23  C minor, C# minor, D minor, ..., B minor   (tonic = index - 12)

Spellings follow mir_eval's ``"<tonic> <mode>"`` form with the conventional accidental of
each key (``"Bb major"``, ``"C# minor"``); :func:`parse_key` accepts any enharmonic.
"""

from __future__ import annotations

import re

from .errors import KeylibError

__all__ = [
    "N_KEYS",
    "MODES",
    "KEY_NAMES",
    "KeyParseError",
    "key_index",
    "key_name",
    "tonic_mode",
    "parse_key",
    "try_parse_key",
    "transpose_index",
    "camelot",
    "open_key",
]

N_KEYS = 24
MODES = ("major", "minor")

_MAJOR_SPELLING = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_MINOR_SPELLING = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]

KEY_NAMES: tuple[str, ...] = tuple(
    [f"{t} major" for t in _MAJOR_SPELLING] + [f"{t} minor" for t in _MINOR_SPELLING]
)

_LETTER = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_MAJOR_WORDS = {"major", "maj", "ionian", "dur", "M"}
_MINOR_WORDS = {"minor", "min", "aeolian", "moll", "m"}
# Explicitly modal labels are not one of the 24 keys: excluded from scoring, not guessed.
_MODAL_WORDS = {"dorian", "phrygian", "lydian", "mixolydian", "locrian", "modal"}

_KEY_RE = re.compile(
    r"^\s*(?P<letter>[A-Ga-g])(?P<acc>(?:#|b|♯|♭|s|is|es|-sharp|-flat|\s*sharp|\s*flat)?)"
    r"\s*[:_\-\s]?\s*(?P<mode>[A-Za-z]*)\s*(?P<extra>[A-Za-z]*)\s*$"
)


class KeyParseError(KeylibError, ValueError):
    """A key label is not one of the 24 major/minor keys."""


def key_index(tonic: int, mode: str) -> int:
    """Index 0..23 of ``tonic`` (0..11, C = 0) in ``mode`` ("major" or "minor")."""
    if mode not in MODES:
        raise KeyParseError(f"mode must be 'major' or 'minor', got {mode!r}")
    return int(tonic) % 12 + (12 if mode == "minor" else 0)


def tonic_mode(index: int) -> tuple[int, str]:
    """``(tonic, mode)`` of key ``index`` (0..23)."""
    if not 0 <= int(index) < N_KEYS:
        raise KeyParseError(f"key index must be in 0..23, got {index}")
    return int(index) % 12, MODES[int(index) // 12]


def key_name(index: int) -> str:
    """mir_eval spelling of key ``index``, e.g. ``key_name(13) == "C# minor"``."""
    tonic_mode(index)
    return KEY_NAMES[int(index)]


def transpose_index(index: int, semitones: int) -> int:
    """Key ``index`` moved up by ``semitones`` (mode unchanged)."""
    tonic, mode = tonic_mode(index)
    return key_index(tonic + semitones, mode)


def parse_key(label: str) -> int:
    """Parse a key label leniently into its index 0..23.

    Accepts ``"C# minor"``, ``"Db major"``, ``"Bb:min"``, ``"c#m"``, ``"A minor aeolian"``,
    ``"Gb:maj"``, ``"F"`` (a bare letter is major), ``"am"``/``"Am"`` (minor).

    Raises
    ------
    KeyParseError
        for anything that is not a major or minor key: ``"X"``, ``"-"``, ``"None"``,
        ``"D dorian"``, an empty string.
    """
    if not isinstance(label, str):
        raise KeyParseError(f"key label must be a string, got {type(label).__name__}")
    match = _KEY_RE.match(label.replace("\u266f", "#").replace("\u266d", "b"))
    if match is None:
        raise KeyParseError(f"not a key label: {label!r}")
    tonic = _LETTER[match["letter"].lower()]
    acc = match["acc"].strip().lower().lstrip("-")
    if acc in {"#", "s", "is", "sharp"}:
        tonic += 1
    elif acc in {"b", "es", "flat"}:
        tonic -= 1
    words = [w for w in (match["mode"], match["extra"]) if w]
    if any(w.lower() in _MODAL_WORDS for w in words):
        raise KeyParseError(f"modal label is not a major/minor key: {label!r}")
    if not words:
        # Lower-case bare letter is minor in some conventions ("a" = A minor), upper major.
        mode = "minor" if match["letter"].islower() and not acc else "major"
    else:
        first = words[0]
        if first in _MINOR_WORDS or first.lower() in {w.lower() for w in _MINOR_WORDS - {"m"}}:
            mode = "minor"
        elif first in _MAJOR_WORDS or first.lower() in {w.lower() for w in _MAJOR_WORDS - {"M"}}:
            mode = "major"
        else:
            raise KeyParseError(f"unknown mode in key label: {label!r}")
        if len(words) > 1 and words[1].lower() not in {"major", "minor", "aeolian", "ionian"}:
            raise KeyParseError(f"unexpected text in key label: {label!r}")
    return key_index(tonic, mode)


def try_parse_key(label) -> int | None:
    """:func:`parse_key`, or ``None`` for a missing or unparseable label."""
    if label is None or (isinstance(label, float) and label != label):
        return None
    try:
        return parse_key(str(label))
    except KeyParseError:
        return None


def _circle_position(index: int) -> int:
    """Position 0..11 on the circle of fifths of the key's relative major, C = 0."""
    tonic, mode = tonic_mode(index)
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    return (7 * major_tonic) % 12


def camelot(index: int) -> str:
    """Camelot wheel code: ``8B`` = C major, ``8A`` = A minor, ``9B`` = G major."""
    number = (_circle_position(index) + 7) % 12 + 1
    return f"{number}{'B' if index < 12 else 'A'}"


def open_key(index: int) -> str:
    """Open Key notation: ``1d`` = C major, ``1m`` = A minor, ``2d`` = G major."""
    number = _circle_position(index) + 1
    return f"{number}{'d' if index < 12 else 'm'}"
