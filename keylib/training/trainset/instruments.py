"""General MIDI programs per role (harmony, melody, bass) for training and held-out clips.

Held-out instruments are never used for training clips, so held-out music is played by
instruments training never heard.
"""

from __future__ import annotations

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


def programs_for(split: str) -> dict:
    """The programs by role that clips of ``split`` may use."""
    return HELDOUT_BY_ROLE if split == "heldout" else TRAIN_PROGRAMS
