"""The training-set generator renders audio in its labelled key (checked by a template method)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from keylib import audio, features, keys, templates, trainset


@pytest.fixture
def fluidsynth():
    """Rendering needs FluidSynth and the GM soundfont, which ``./submit.sh setup`` installs:
    a machine without them is set up wrongly, so the test fails (it never skips)."""
    missing = [name for name, present in (("fluidsynth", shutil.which("fluidsynth") is not None),
                                          (f"the soundfont {trainset.SOUNDFONT}", trainset.SOUNDFONT.is_file()))
               if not present]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run ./submit.sh setup "
                    "(apt-get install fluidsynth fluid-soundfont-gm)")


def test_procedural_piece_uses_the_scale_and_ends_on_the_tonic():
    rng = np.random.default_rng(3)
    for key in (0, 21, 13):
        piece = trainset.procedural_piece(key, rng, piece="t", programs_by_role=trainset.TRAIN_PROGRAMS)
        tonic, mode = keys.tonic_mode(key)
        pcs = {(n.pitch - tonic) % 12 for n in piece.notes if n.channel != trainset.DRUM_CHANNEL}
        allowed = {0, 2, 4, 5, 7, 9, 11} if mode == "major" else {0, 2, 3, 5, 7, 8, 10, 11}
        assert pcs <= allowed
        ending = {(n.pitch - tonic) % 12 for n in piece.notes
                  if n.channel != trainset.DRUM_CHANNEL and n.end >= piece.duration - 0.5}
        assert 0 in ending
        assert 15 <= piece.duration <= 45
        assert not set(piece.programs.values()) & set(trainset.HELDOUT_PROGRAMS)


def test_midi_round_trip(tmp_path):
    notes = [trainset.Note(0.0, 0.5, 60, 90, 0), trainset.Note(0.5, 1.25, 67, 90, 1)]
    trainset.write_midi(notes, {0: 0, 1: 40}, tmp_path / "a.mid")
    tracks = trainset.read_midi_tracks(tmp_path / "a.mid")
    got = sorted((round(s, 3), round(e, 3), p) for tr in tracks for s, e, p, _ in tr)
    assert got == [(0.0, 0.5, 60), (0.5, 1.25, 67)]


def test_abc_mode_parsing(tmp_path):
    text = "X:1\nT:a\nK:Em\nEFGA|B2E2|]\n\nX:2\nT:b\nK:Ador\nABcd|]\n\nX:3\nT:c\nK:Bb\nBcde|]\n"
    (tmp_path / "t.abc").write_text(text)
    got = [(tid, key) for tid, _, key in trainset.abc_tunes(tmp_path / "t.abc")]
    assert got == [("1", keys.parse_key("E minor")), ("3", keys.parse_key("Bb major"))]  # dorian skipped


def test_rendered_clips_are_in_their_labelled_key(tmp_path, fluidsynth):
    """Three procedural clips (random keys, instruments, augmentation) through the real job path."""
    jobs = [trainset.Job("procedural", f"t{i}", key, [(shift, 1000 + i)], "train", "procedural")
            for i, (key, shift) in enumerate([(0, 2), (21, 3), (7, 0)])]
    rows = [r for job in jobs for r in trainset.run_job(job, str(tmp_path))]
    assert len(rows) == 3
    for row in rows:
        path = tmp_path / row["path"]
        assert path.is_file() and 15 <= row["duration_s"] <= 45
        chroma = features.chroma(audio.decode(path.read_bytes(), ext=".flac").samples)
        assert np.allclose(chroma, row["chroma"])  # the cached chroma is the inference path's
        label = keys.parse_key(row["key"])
        scores = templates.template_scores(chroma)
        rank = int((scores > scores[label]).sum())
        assert rank <= 2, f"{row['key']}: template ranks it {rank + 1}, best {keys.key_name(int(scores.argmax()))}"
    trainset.write_chroma_cache(rows, tmp_path / "c.parquet", tmp_path)
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert set(df.columns) >= {"track_id", "uri", "chroma", "n_frames", "status", "feature_version", "key", "source"}
    assert (df.feature_version == features.FEATURE_VERSION).all()
