"""The training-set generator renders audio in its labelled key (checked by a template method)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from keylib import audio, features, keys, templates
from keylib.training import trainset
from keylib.tensors import pitch_classes


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
        scores = templates.template_scores(pitch_classes(chroma))
        rank = int((scores > scores[label]).sum())
        assert rank <= 2, f"{row['key']}: template ranks it {rank + 1}, best {keys.key_name(int(scores.argmax()))}"
    trainset.write_chroma_cache(rows, tmp_path / "c.parquet", tmp_path)
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert set(df.columns) >= {"track_id", "uri", "chroma", "n_frames", "status", "feature_version", "key", "source"}
    assert (df.feature_version == features.FEATURE_VERSION).all()


def test_refresh_chroma_recomputes_the_cache_from_the_audio(tmp_path, other_feature_version):
    """After a FEATURE_VERSION change: `make-training-set --refresh-chroma` refolds the folder's
    audio with this keylib's features (`--feature-version`: another version's); a listed file
    that is gone is a readable error, exit 3."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    import soundfile as sf

    from keylib import synth
    from keylib.outcome import EXIT_INPUT

    sr = features.SAMPLE_RATE
    rows = []
    for i, key in enumerate((0, 21)):
        rel = f"audio/train/procedural/p{i}.flac"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(tmp_path / rel), synth.chord_progression(key, duration_s=12.0, sr=sr, seed=i), sr)
        rows.append({"path": rel, "track_id": f"p{i}", "key": keys.KEY_NAMES[key], "source": "procedural",
                     "piece": f"p{i}", "instrument": "0", "split": "train", "duration_s": 12.0, "cut": "whole",
                     "soundfont": "", "chroma": np.zeros((12, 3), np.float32)})  # stale: another version's
    trainset.write_chroma_cache(rows, tmp_path / "chroma_cache.parquet", tmp_path)
    with (tmp_path / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "chroma"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    job = [sys.executable, str(Path(__file__).resolve().parent.parent / "jobs" / "make_training_set.py"),
           "--output", str(tmp_path), "--refresh-chroma", "--workers", "1"]
    done = subprocess.run(job, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    df = pd.read_parquet(tmp_path / "chroma_cache.parquet")
    assert list(df.track_id) == ["p0", "p1"] and list(df.key) == ["C major", "A minor"]
    for row, flat, n in zip(rows, df.chroma, df.n_frames):
        expected = features.chroma(audio.decode((tmp_path / row["path"]).read_bytes(), ext=".flac").samples)
        assert n == expected.shape[1] and np.array_equal(np.asarray(flat).reshape(-1, n), expected)
    assert (df.feature_version == features.FEATURE_VERSION).all()

    other = other_feature_version  # another version to train on, refolded from the same audio
    done = subprocess.run(job + ["--feature-version", other], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and other in done.stdout, done.stderr
    df = pd.read_parquet(tmp_path / "chroma_cache.parquet")
    assert (df.feature_version == other).all()
    for row, flat, n in zip(rows, df.chroma, df.n_frames):
        expected = features.chroma(audio.decode((tmp_path / row["path"]).read_bytes(), ext=".flac").samples,
                                   feature_version=other)
        assert np.array_equal(np.asarray(flat).reshape(features.n_rows(other), n), expected)
    done = subprocess.run(job[:-3] + ["--feature-version", other], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--refresh-chroma" in done.stderr

    (tmp_path / rows[1]["path"]).unlink()
    done = subprocess.run(job, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_INPUT and "p1.flac" in done.stderr and "Traceback" not in done.stderr
    assert pd.read_parquet(tmp_path / "chroma_cache.parquet").shape[0] == 2  # the cache is left whole
