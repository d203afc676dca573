"""``keylib analyze`` with the shipped model names the exact key of clear cadences."""

from __future__ import annotations

import json

import pytest

from keylib import synth
from keylib.cli import main
from keylib.keys import KEY_NAMES, camelot

# 30-s additive-synthesis cadences, as mp3 (the everyday format); seeds as in tests/test_cli.py.
CASES = [(KEY_NAMES.index("C major"), 3), (KEY_NAMES.index("A minor"), 4), (KEY_NAMES.index("F# major"), 5),
         (KEY_NAMES.index("Eb minor"), 6)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact")
    paths = []
    for key, seed in CASES:
        path = folder / f"{KEY_NAMES[key].replace(' ', '_').replace('#', 's')}.mp3"
        synth.write_audio(path, synth.chord_progression(key, duration_s=30.0, sr=22050, seed=seed), sr=22050)
        paths.append(path)
    return paths


@pytest.mark.acceptance
def test_analyze_names_the_exact_key(files, capsys):
    assert main(["analyze", "--json", *map(str, files)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["file"] for row in rows] == [str(p) for p in files]
    for (key, _), row in zip(CASES, rows):
        assert row["status"] == "ok" and row["key"] == KEY_NAMES[key], row
        assert row["camelot"] == camelot(key)
