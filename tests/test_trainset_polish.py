"""The Polish Music Heritage scores as training material: labels, composer splits, Verovio's
MIDI with the score's instruments, and the validation render by TiMidity++."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keylib import audio, features, keys, templates
from keylib.training import data, trainset
from keylib.training.trainset import polish, render
from keylib.tensors import pitch_classes

# A D major cadence for violin and cello (I-IV-V-I, whole notes), plus a clarinet part.
KERN = """!!!COM: {composer}
!!!OTL: Test piece
**kern\t**kern\t**kern
*I"Violoncello\t*I"Clarinetto in B\t*I"Violino
*Icello\t*Iclars\t*Ivioln
*clefF4\t*clefG2\t*clefG2
*k[f#c#]\t*k[f#c#]\t*k[f#c#]
*{first}:\t*{first}:\t*{first}:
*M4/4\t*M4/4\t*M4/4
=1\t=1\t=1
1D\t1e\t1f#
=2\t=2\t=2
1G\t1e\t1b
=3\t=3\t=3
1A\t1e\t1c#
=4\t=4\t=4
*{last}:\t*{last}:\t*{last}:
1D\t1e\t1dd
==\t==\t==
*-\t*-\t*-
"""


def kern(tmp_path: Path, name: str, *, composer: str = "Elsner, J\u00f3zef", first: str = "D", last: str = "D") -> Path:
    path = tmp_path / f"{name}.krn"
    path.write_text(KERN.format(composer=composer, first=first, last=last))
    return path


def composers(split: str, n: int) -> list[str]:
    """``n`` made-up composer names that :func:`polish.composer_split` sends to ``split``."""
    names = (f"Composer {i}" for i in range(10_000))
    return [c for c in names if polish.composer_split(c) == split][:n]


def test_header_keeps_a_score_whose_first_and_last_key_agree(tmp_path):
    composer, key, strings = polish.read_score_header(kern(tmp_path, "a").read_text())
    assert (composer, key, strings) == ("Elsner, J\u00f3zef", keys.parse_key("D major"), True)
    assert polish.read_score_header(kern(tmp_path, "b", first="f#", last="f#").read_text())[1] == keys.parse_key("F# minor")
    assert polish.read_score_header(kern(tmp_path, "c", first="B-", last="B-").read_text())[1] == keys.parse_key("Bb major")
    assert polish.read_score_header(kern(tmp_path, "d", first="D", last="b").read_text())[1] is None  # ends elsewhere
    no_strings = KERN.replace("*Icello", "*Iorgan").replace("*Ivioln", "*Iorgan").replace("Violoncello", "Organo").replace("Violino", "Organo")
    assert polish.read_score_header(no_strings.format(composer="X", first="D", last="D"))[2] is False


def test_composer_split_keeps_whole_composers_apart_and_anonymous_pieces_train():
    names = [f"Composer {i}" for i in range(4000)]
    splits = pd.Series([polish.composer_split(c) for c in names]).value_counts(normalize=True)
    assert abs(splits["heldout"] - polish.HELDOUT_COMPOSERS) < 0.02
    assert abs(splits["validation"] - polish.VALIDATION_COMPOSERS) < 0.02
    assert polish.composer_split(polish.ANONYMOUS) == "train"
    assert {polish.composer_split("Composer 7") for _ in range(3)} == {polish.composer_split("Composer 7")}


def test_score_keeps_its_string_instruments_and_drops_transposing_parts(tmp_path):
    tracks = polish.score_tracks(kern(tmp_path, "a"))
    programs = sorted(program for _, program, _ in tracks)
    assert programs == [40, 42]  # violin, cello; the clarinet in B flat is left out
    cello = next(notes for _, program, notes in tracks if program == 42)
    assert [p for _, _, p, _ in sorted(cello)] == [50, 55, 57, 50]  # D3 G3 A3 D3 (kern: c is middle C)
    starts = sorted(s for s, _, _, _ in cello)
    assert np.all(np.diff(starts) > 0.5)  # whole notes, in seconds


def test_polish_piece_is_transposed_into_its_label(tmp_path):
    score = polish.PolishScore(str(kern(tmp_path, "a")), "X", keys.parse_key("D major"), True)
    rng = np.random.default_rng(0)
    piece = polish.polish_piece(score, rng, transpose=3, programs_by_role=trainset.TRAIN_PROGRAMS, split="train",
                                own_instruments=1.0)
    assert piece.key == keys.parse_key("F major") and piece.source == polish.POLISH_SOURCE
    assert sorted(piece.programs.values()) == [40, 42]
    assert min(n.pitch for n in piece.notes) == 50 + 3
    random = polish.polish_piece(score, rng, transpose=0, programs_by_role=trainset.TRAIN_PROGRAMS, split="train",
                                 own_instruments=0.0)
    assert set(random.programs.values()) <= set(trainset.TRAIN_PROGRAMS["harmony"]) | set(trainset.TRAIN_PROGRAMS["bass"])


def test_plan_splits_polish_scores_by_composer(tmp_path):
    folder = tmp_path / "scores"
    folder.mkdir()
    for split in ("train", "validation", "heldout"):
        for i, composer in enumerate(composers(split, 3)):
            kern(folder, f"{split}{i}", composer=composer)
    kern(folder, "modulating", composer=composers("train", 4)[-1], last="b")  # not kept
    jobs = trainset.plan_jobs(pop909=None, n_procedural=0, n_chorales=0, n_folk=0, n_heldout_folk=0, transpositions=1,
                              pop909_renders=1, pop909_holdout_from=800, seed=1, polish=folder, n_polish=10,
                              n_validation_polish=2, n_heldout_polish=10)
    by_split = {s: sorted(Path(j.ref).stem for j in jobs if j.split == s) for s in ("train", "validation", "heldout")}
    assert by_split["train"] == ["train0", "train1", "train2"] and by_split["heldout"] == ["heldout0", "heldout1", "heldout2"]
    assert len(by_split["validation"]) == 2 and set(by_split["validation"]) < {"validation0", "validation1", "validation2"}
    assert all(j.source == polish.POLISH_SOURCE and j.kind == "polish" for j in jobs)


def test_validation_rows_are_validation_whatever_the_piece_hash():
    df = pd.DataFrame({"source": ["pop909"] * 200 + ["polish-scores"] * 4, "piece": [f"{i:03d}" for i in range(204)],
                       "split": ["train"] * 200 + ["validation"] * 4})
    train, val, held = data.split_dataset(df, val_fraction=0.12, seed=7)
    assert set(val["piece"]) >= {"200", "201", "202", "203"} and len(held) == 0
    hashed = {p for p in df["piece"][:200] if data.is_validation_piece("pop909", p, seed=7, fraction=0.12)}
    assert set(val["piece"]) == hashed | {"200", "201", "202", "203"} and 10 < len(hashed) < 40
    assert not set(train["piece"]) & set(val["piece"])


def test_training_may_not_use_the_validation_sound_source(tmp_path):
    with pytest.raises(Exception, match="validation"):
        trainset.plan_jobs(pop909=None, n_procedural=1, n_chorales=0, n_folk=0, n_heldout_folk=0, transpositions=1,
                           pop909_renders=1, pop909_holdout_from=800, seed=1, soundfonts=render.VALIDATION_SOUNDFONTS)


def test_freepats_plays_the_nearest_program_it_has():
    programs = render.playable_programs({0: 0, 1: 43, 2: 50, 3: 127}, render.VALIDATION_SOUNDFONTS[0])
    assert programs[0] == 0 and programs[1] == 42 and programs[2] == 48  # contrabass -> cello, synth strings -> strings
    assert all(p in render.FREEPATS_PROGRAMS for p in programs.values())
    assert render.playable_programs({1: 43}, "/usr/share/sounds/sf2/FluidR3_GM.sf2") == {1: 43}


def test_a_polish_score_rendered_by_timidity_is_in_its_key(tmp_path):
    """The validation engine through the real job path: a validation composer's score played
    by TiMidity++ and freepats, transposed; its chroma's template key is the label."""
    if shutil.which("timidity") is None or not Path(render.VALIDATION_SOUNDFONTS[0]).is_file():
        pytest.fail("TiMidity++ and freepats are not installed: run ./submit.sh setup (apt-get install timidity freepats)")
    composer = composers("validation", 1)[0]
    job = trainset.Job("polish", str(kern(tmp_path, "v", composer=composer)), keys.parse_key("D major"), [(2, 5)],
                       "validation", polish.POLISH_SOURCE, composer)
    rows = trainset.run_job(job, str(tmp_path))
    assert len(rows) == 1 and rows[0]["soundfont"] == "freepats" and rows[0]["key"] == "E major"
    chroma = features.chroma(audio.decode((tmp_path / rows[0]["path"]).read_bytes(), ext=".flac").samples)
    assert templates.template_key(pitch_classes(chroma)) == keys.parse_key("E major")


def test_a_score_verovio_cannot_convert_costs_that_score_only(tmp_path):
    """Verovio runs in a child process (it crashes on a few scores of the archive): a failure
    is a ValueError naming the file, and run_job turns it into that job's error row."""
    bad = tmp_path / "bad.krn"
    bad.write_bytes(b"\x00\xff not kern at all")
    with pytest.raises(ValueError, match="bad.krn"):
        polish.kern_to_midi(bad)
    job = trainset.Job("polish", str(bad), 0, [(0, 1)], "train", polish.POLISH_SOURCE, "X")
    rows = trainset.run_job(job, str(tmp_path))
    assert len(rows) == 1 and "bad.krn" in rows[0]["error"]


def test_training_hears_a_scores_opening_and_ending_joined():
    """The stated key holds where a score starts and ends; its middle modulates: training
    renders the opening, then the ending moved to where the opening stops."""
    Note = trainset.Note
    notes = [Note(float(t), float(t) + 2.0, 60 + t % 12, 80, 0) for t in range(0, 200, 2)]  # 200 s
    joined = polish.opening_and_ending(notes, opening_s=45.0, ending_s=30.0)
    assert max(n.end for n in joined) == pytest.approx(75.0) and min(n.start for n in joined) == 0.0
    opening = [n for n in joined if n.start < 45.0]
    ending = [n for n in joined if n.start >= 45.0]
    assert [n.pitch for n in opening] == [n.pitch for n in notes if n.start < 45.0]
    assert [n.pitch for n in ending] == [n.pitch for n in notes if n.end > 170.0]  # the last 30 s
    assert opening[-1].end == 45.0  # the note across the cut (44-46 s) is cut
    assert ending[0].start == pytest.approx(45.0) and ending[-1].end == pytest.approx(75.0)
    short = notes[:30]  # 60 s: whole
    assert polish.opening_and_ending(short, opening_s=45.0, ending_s=30.0) == short
    with pytest.raises(ValueError):
        polish.opening_and_ending(notes, opening_s=0.0, ending_s=30.0)
