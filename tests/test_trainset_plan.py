"""What the training-set generator plans for POP909 songs and Bach chorales (no rendering)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keylib import keys
from keylib.training import trainset

NOTHING_ELSE = {"n_procedural": 0, "n_chorales": 0, "n_folk": 0, "n_heldout_folk": 0}


@pytest.fixture(scope="module")
def pop909(tmp_path_factory) -> Path:
    """A small POP909 layout: SONG/key_audio.txt (start, end, label) and SONG/SONG.mid."""
    root = tmp_path_factory.mktemp("pop909")
    songs = {
        "001": ["0.0\t100.0\tBb:maj"],
        "002": ["0.0\t50.0\tC:maj", "50.0\t100.0\tA:min"],  # modulates: not a one-key song
        "003": ["1.5\t80.0\tC#:min"],
        "004": [],  # no label
        "005": ["0.0\t60.0\tN"],  # not a key
        "801": ["0.0\t90.0\tE:min"],
        "950": ["0.0\t90.0\tF:maj"],
    }
    for song, lines in songs.items():
        (root / song).mkdir()
        (root / song / "key_audio.txt").write_text("".join(line + "\n" for line in lines))
        notes = [trainset.Note(2.0 * i, 2.0 * i + 1.5, 60 + i % 5, 90, channel) for i in range(20) for channel in (0, 2)]
        trainset.write_midi(notes, {0: 0, 2: 0}, root / song / f"{song}.mid")
    return root


def plan(**kwargs):
    settings = {"pop909": None, **NOTHING_ELSE, "transpositions": 1, "pop909_renders": 1,
                "pop909_holdout_from": 800, "seed": 5}
    return trainset.plan_jobs(**{**settings, **kwargs})


def test_pop909_plan_keeps_one_key_songs_and_holds_out_by_song_id(pop909):
    jobs = plan(pop909=pop909, pop909_renders=3)
    assert [(j.ref, j.key, j.split) for j in jobs] == [
        (f"{pop909}::001", keys.parse_key("Bb major"), "train"),
        (f"{pop909}::003", keys.parse_key("C# minor"), "train"),
        (f"{pop909}::801", keys.parse_key("E minor"), "heldout"),
        (f"{pop909}::950", keys.parse_key("F major"), "heldout"),
    ]
    for job in jobs:
        assert job.kind == "pop909" and job.source == "pop909"
        shifts = [shift for shift, _ in job.variants]
        assert len(shifts) == 3 and len(set(shifts)) == 3 and all(0 <= s < 12 for s in shifts)
    assert [j.variants for j in plan(pop909=pop909, pop909_renders=3)] == [j.variants for j in jobs]  # seeded
    assert [j.variants for j in plan(pop909=pop909, pop909_renders=3, seed=6)] != [j.variants for j in jobs]


def test_pop909_plan_limit_offset_holdout_and_absent_folder(pop909, tmp_path):
    refs = lambda jobs: [j.ref.rsplit("::", 1)[1] for j in jobs]  # noqa: E731
    assert refs(plan(pop909=pop909, pop909_holdout_from=3)) == ["001", "003", "801", "950"]  # 003 held out
    assert [j.split for j in plan(pop909=pop909, pop909_holdout_from=3)] == ["train", "heldout", "heldout", "heldout"]
    assert refs(plan(pop909=pop909, pop909_offset=1)) == ["003", "801", "950"]
    assert refs(plan(pop909=pop909, pop909_limit=1)) == ["001", "801"]  # and a fifth as many held out (at least 1)
    assert refs(plan(pop909=pop909, pop909_heldout=False)) == ["001", "003"]
    assert plan(pop909=tmp_path / "absent") == []


def test_only_split_keeps_that_splits_jobs_of_the_same_plan(pop909):
    full = plan(pop909=pop909, pop909_renders=2, n_procedural=3)
    held = plan(pop909=pop909, pop909_renders=2, n_procedural=3, only_split="heldout")
    assert [(j.ref, j.variants) for j in held] == [(j.ref, j.variants) for j in full if j.split == "heldout"]
    assert [j.ref.rsplit("::", 1)[1] for j in held] == ["801", "950"]
    train = plan(pop909=pop909, pop909_renders=2, n_procedural=3, only_split="train")
    assert len(train) == 5 and {j.split for j in train} == {"train"}


def test_a_planned_pop909_variant_is_transposed_into_its_labelled_key(pop909):
    [job] = [j for j in plan(pop909=pop909, pop909_renders=2) if j.ref.endswith("::003")]
    original = {p for track in trainset.read_midi_tracks(pop909 / "003" / "003.mid") for _, _, p, _ in track}
    for shift, seed in job.variants:
        piece = trainset.pop909_piece(pop909, "003", job.key, np.random.default_rng(seed), transpose=shift,
                                      programs_by_role=trainset.TRAIN_PROGRAMS, split=job.split)
        assert piece.key == keys.transpose_index(keys.parse_key("C# minor"), shift)
        assert piece.split == "train" and piece.source == "pop909" and piece.piece == "003"
        pitches = {n.pitch for n in piece.notes if n.channel != trainset.DRUM_CHANNEL}
        assert pitches and pitches <= {p + shift for p in original}


def test_chorale_plan(tmp_path):
    from music21 import corpus

    jobs = plan(n_chorales=3, transpositions=4)
    assert len(jobs) == 3 and len({j.ref for j in jobs}) == 3
    bach = {Path(str(p)).name for p in corpus.getComposer("bach")}
    for job in jobs:
        assert job.kind == "chorale" and job.source == "bach-chorales" and job.split == "train"
        assert job.key is None  # read from the score when it is built (modal chorales are skipped)
        assert job.ref.startswith("bach/") and job.ref.split("/", 1)[1] in bach
        assert job.ref.endswith((".mxl", ".krn", ".xml"))
        shifts = [shift for shift, _ in job.variants]
        assert len(shifts) == 4 and len(set(shifts)) == 4
    assert [j.ref for j in plan(n_chorales=3, transpositions=4)] == [j.ref for j in jobs]  # seeded
    assert len(plan(n_chorales=3, transpositions=12)[0].variants) == 12  # every tonic once
    # the key is read from the score when the job is built: tonic = the final bass note
    found = []
    for job in jobs:
        score = corpus.parse(job.ref)
        key = trainset.chorale_key(score)
        if key is not None:
            final_bass = min(p.midi for p in list(score.parts[-1].recurse().notes)[-1].pitches) % 12
            assert keys.tonic_mode(key)[0] == final_bass, job.ref
            found.append(key)
    assert found, "none of the planned chorales has a major or minor key"


def test_rendering_one_split_keeps_the_other_splits_rows(tmp_path):
    """--only-split into a folder that holds another split adds to it, it does not replace it."""
    import csv

    import pyarrow.parquet as pq

    from keylib.training.trainset.make import _other_splits
    from keylib.training.trainset.chroma_cache import write_chroma_cache

    def row(track_id, split, frames):
        return {"path": f"audio/{split}/{track_id}.flac", "track_id": track_id, "key": "C major", "source": "s",
                "piece": track_id, "instrument": "piano", "split": split, "duration_s": frames / 5,
                "cut": "whole", "soundfont": "", "chroma": np.full((12, frames), 0.5, np.float32)}

    cache, manifest = tmp_path / "chroma_cache.parquet", tmp_path / "manifest.csv"
    write_chroma_cache([row("h1", "heldout", 4), row("t0", "train", 3)], cache, tmp_path)
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "track_id", "key", "split"], extrasaction="ignore")
        w.writeheader()
        w.writerows([row("h1", "heldout", 4), row("t0", "train", 3)])
    assert [r["track_id"] for r in _other_splits(manifest, "train")] == ["h1"]

    write_chroma_cache([row("t1", "train", 6)], cache, tmp_path, replace_split="train")
    table = pq.read_table(cache).to_pydict()
    assert table["track_id"] == ["h1", "t1"]  # the old train row replaced, the held-out row kept
    assert table["n_frames"] == [4, 6] and len(table["chroma"][0]) == 48
    assert not list(tmp_path.glob("*.tmp"))


def test_training_soundfonts_replace_the_defaults_but_never_a_held_out_one(pop909, tmp_path):
    from keylib.errors import ConfigError
    from keylib.training.trainset.plan import _with_soundfonts
    from keylib.training.trainset.render import HELDOUT_SOUNDFONTS

    font = tmp_path / "other.sf2"
    font.write_bytes(b"RIFF")
    jobs = plan(pop909=pop909, soundfonts=[str(font)])
    assert {j.soundfonts for j in jobs if j.split == "train"} == {(str(font),)}
    [train_job] = [j for j in jobs if j.ref.endswith("::001")]
    pieces = [trainset.Piece(notes=[], key=0, source="pop909", piece="001") for _ in train_job.variants]
    assert {p.soundfont for p in _with_soundfonts(pieces, train_job)} == {str(font)}
    [held_job] = [j for j in jobs if j.ref.endswith("::801")]
    pieces = [trainset.Piece(notes=[], key=0, source="pop909", piece="801") for _ in held_job.variants]
    assert {p.soundfont for p in _with_soundfonts(pieces, held_job)} <= set(HELDOUT_SOUNDFONTS)
    with pytest.raises(ConfigError, match="held-out"):
        plan(pop909=pop909, soundfonts=[HELDOUT_SOUNDFONTS[0]])
    with pytest.raises(ConfigError, match="does not exist"):
        plan(pop909=pop909, soundfonts=[str(tmp_path / "absent.sf2")])
