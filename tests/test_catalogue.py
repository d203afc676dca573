"""Catalogue listing, incremental selection and configuration (no Spark needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from keylib import synth
from keylib.catalogue import list_tracks
from keylib.config import load_config
from keylib.errors import ConfigError, InputError
from keylib.incremental import select_tracks


def _clip(path):
    return synth.write_audio(path, synth.tone(60, 0.5, sr=8000), sr=8000)


def test_folder_lists_audio_recursively_and_ignores_other_files(tmp_path):
    for name in ("a.mp3", "sub/b.wav", "sub/deeper/c.flac", "d.ogg"):
        _clip(tmp_path / name)
    (tmp_path / "cover.jpg").write_bytes(b"jpeg")
    (tmp_path / "notes.txt").write_text("x")
    frame = list_tracks(str(tmp_path))
    assert sorted(frame["track_id"]) == ["a.mp3", "d.ogg", "sub/b.wav", "sub/deeper/c.flac"]
    assert frame["fingerprint"].str.match(r"^\d+:\d+$").all()
    assert (frame["size_bytes"] > 0).all()


def test_manifest_relative_paths_truth_and_missing_files(tmp_path):
    _clip(tmp_path / "audio" / "x.wav")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({
        "path": ["audio/x.wav", str(tmp_path / "audio" / "x.wav"), "audio/gone.mp3"],
        "track_id": ["rel", "abs", ""],
        "key": ["Bb:min", "", "c#m"],
        "source": ["pop", "pop", "folk"],
    }).to_csv(manifest, index=False)
    frame = list_tracks(str(manifest)).set_index("track_id")
    assert frame.loc["rel", "uri"] == str(tmp_path / "audio" / "x.wav")
    assert frame.loc["rel", "fingerprint"] == frame.loc["abs", "fingerprint"]
    assert frame.loc["audio/gone.mp3", "fingerprint"] == "missing"  # track_id defaults to the path
    assert frame.loc["rel", "truth_key"] == "Bb:min" and pd.isna(frame.loc["abs", "truth_key"])


@pytest.mark.parametrize(
    "content, message",
    [("file,key\na.mp3,C major\n", "no 'path' column"), ("path,track_id\na.mp3,t\nb.mp3,t\n", "repeats track_id")],
)
def test_malformed_manifest_is_an_input_error(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    with pytest.raises(InputError, match=message):
        list_tracks(str(manifest))


def test_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list_tracks(str(tmp_path / "nope"))


def _listing(fingerprints):
    return pd.DataFrame({"track_id": list(fingerprints), "fingerprint": list(fingerprints.values())})


def test_select_tracks_new_changed_retry_version_force():
    listing = _listing({"same": "1:1", "changed": "2:9", "new": "3:3", "retry": "4:4", "oldver": "5:5"})
    previous = pd.DataFrame({
        "track_id": ["same", "changed", "retry", "oldver", "deleted"],
        "fingerprint": ["1:1", "2:2", "4:4", "5:5", "6:6"],
        "status": ["ok", "ok", "read_error", "decode_error", "ok"],
        "feature_version": ["v2", "v2", "v2", "v1", "v2"],
    })
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v2"})
    assert sorted(todo["track_id"]) == ["changed", "new", "oldver", "retry"]
    assert list(skipped["track_id"]) == ["same"]
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v2"}, force=True)
    assert len(todo) == 5 and skipped.empty


def test_shipped_conf_files_load_and_local_spells_out_the_defaults():
    from pathlib import Path

    from keylib.config import DEFAULTS

    conf = Path(__file__).resolve().parent.parent / "conf"
    assert load_config(conf / "local.toml") == DEFAULTS
    assert load_config(conf / "nightly.toml")["nightly"]["max_failed_share"] == 0.02
    assert load_config(conf / "cluster.toml")["spark"]["conf"]["spark.task.maxFailures"] == "4"


def test_config_defaults_and_validation(tmp_path):
    config = load_config(None)
    assert config["spark"]["master"] == "local[2]" and config["audio"]["max_duration_s"] == 600.0
    for text, message in [
        ("[audio]\nmax_duration_s = -1\n", "must be positive"),
        ("[audio]\nmax_duration = 5\n", "unknown setting 'audio.max_duration'"),
        ("[spark]\narrow_batch_rows = 'many'\n", "must be int"),
        ("[nightly]\nmax_failed_share = 2.0\n", "within 0..1"),
        ("not toml [", "not valid TOML"),
    ]:
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
