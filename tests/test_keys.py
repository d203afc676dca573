"""The 24 keys: spellings, lenient parsing, Camelot and Open Key against published tables."""

import pytest

from keylib.keys import (
    KEY_NAMES, KeyParseError, camelot, key_index, key_name, open_key, parse_key, tonic_mode,
    transpose_index, try_parse_key,
)

# Published Camelot wheel and Open Key tables, written out by hand (not computed).
CAMELOT = {
    "C major": "8B", "Db major": "3B", "D major": "10B", "Eb major": "5B", "E major": "12B",
    "F major": "7B", "F# major": "2B", "G major": "9B", "Ab major": "4B", "A major": "11B",
    "Bb major": "6B", "B major": "1B",
    "C minor": "5A", "C# minor": "12A", "D minor": "7A", "Eb minor": "2A", "E minor": "9A",
    "F minor": "4A", "F# minor": "11A", "G minor": "6A", "G# minor": "1A", "A minor": "8A",
    "Bb minor": "3A", "B minor": "10A",
}
OPEN_KEY = {
    "C major": "1d", "G major": "2d", "D major": "3d", "A major": "4d", "E major": "5d",
    "B major": "6d", "F# major": "7d", "Db major": "8d", "Ab major": "9d", "Eb major": "10d",
    "Bb major": "11d", "F major": "12d",
    "A minor": "1m", "E minor": "2m", "B minor": "3m", "F# minor": "4m", "C# minor": "5m",
    "G# minor": "6m", "Eb minor": "7m", "Bb minor": "8m", "F minor": "9m", "C minor": "10m",
    "G minor": "11m", "D minor": "12m",
}


def test_tables_cover_all_24_keys_once():
    assert set(CAMELOT) == set(KEY_NAMES) == set(OPEN_KEY)
    assert len(set(CAMELOT.values())) == 24 and len(set(OPEN_KEY.values())) == 24


@pytest.mark.parametrize("name", KEY_NAMES)
def test_camelot_and_open_key(name):
    index = KEY_NAMES.index(name)
    assert camelot(index) == CAMELOT[name]
    assert open_key(index) == OPEN_KEY[name]


def test_index_order_and_names():
    assert KEY_NAMES[0] == "C major" and KEY_NAMES[11] == "B major"
    assert KEY_NAMES[12] == "C minor" and KEY_NAMES[13] == "C# minor" and KEY_NAMES[23] == "B minor"
    for index in range(24):
        tonic, mode = tonic_mode(index)
        assert key_index(tonic, mode) == index
        assert key_name(index) == KEY_NAMES[index]
        assert parse_key(KEY_NAMES[index]) == index
    assert transpose_index(parse_key("A minor"), 3) == parse_key("C minor")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("C# minor", "C# minor"), ("Db major", "Db major"), ("Bb:min", "Bb minor"), ("c#m", "C# minor"),
        ("A minor aeolian", "A minor"), ("Gb:maj", "F# major"), ("F", "F major"), ("Am", "A minor"),
        ("  e minor ", "E minor"), ("A#:minor", "Bb minor"), ("Cb major", "B major"), ("E# minor", "F minor"),
    ],
)
def test_parse_key_lenient(label, expected):
    assert KEY_NAMES[parse_key(label)] == expected


@pytest.mark.parametrize("label", ["X", "-", "None", "D dorian", "", "H major", "C blues", "G mixolydian"])
def test_parse_key_rejects_non_keys(label):
    with pytest.raises(KeyParseError):
        parse_key(label)
    assert try_parse_key(label) is None


def test_try_parse_key_missing_values():
    assert try_parse_key(None) is None
    assert try_parse_key(float("nan")) is None
    assert try_parse_key("G major") == 7


def test_bad_indices_raise():
    for bad in (-1, 24):
        with pytest.raises(KeyParseError):
            tonic_mode(bad)
        with pytest.raises(KeyParseError):
            key_name(bad)
