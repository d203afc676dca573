"""The extraction job on a real local[2] Spark session: schema, bad input, incremental runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keylib import features, synth
from keylib.keys import KEY_NAMES
from keylib.spark.flows import run_extract
from keylib.spark.frames import read_current
from keylib.storage.tables import committed_runs, read_rows
from keylib.templates import template_scores
from keylib.tensors import pitch_classes
from keylib.track import CHROMA_COLUMNS

REPO = Path(__file__).resolve().parent.parent


def _current(spark, out: Path) -> pd.DataFrame:
    return read_current(spark, str(out / "chroma")).toPandas().set_index("track_id")


@pytest.fixture
def bad_catalogue(tmp_path) -> Path:
    """Good clips plus every kind of bad input a catalogue meets, in one manifest."""
    folder = tmp_path / "audio"
    rows = []
    for index in (0, 21):  # C major, A minor
        name = f"good_{index}.mp3"
        synth.write_audio(folder / name, synth.chord_progression(index, duration_s=4.0, sr=22050), sr=22050)
        rows.append((name, f"good-{index}"))
    good = (folder / "good_0.mp3").read_bytes()
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "notes.mp3").write_text("this is a text file renamed to .mp3\n" * 40)
    (folder / "corrupt.wav").write_bytes(b"RIFF" + bytes(np.random.default_rng(1).integers(0, 256, 8000, dtype=np.uint8)))
    (folder / "truncated.mp3").write_bytes(good[:600])
    (folder / "cover.xyz").write_bytes(b"\x89PNG not audio")
    synth.write_audio(folder / "blip.wav", synth.tone(60, 0.1, sr=22050), sr=22050)
    synth.write_audio(folder / "silence.wav", np.zeros(22050 * 30, dtype=np.float32), sr=22050)
    for name in ("empty.mp3", "notes.mp3", "corrupt.wav", "truncated.mp3", "cover.xyz", "blip.wav",
                 "silence.wav", "does_not_exist.mp3"):
        rows.append((name, name.split(".")[0]))
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "track_id"]).to_csv(manifest, index=False)
    return manifest


def test_schema_and_tensor_round_trip(spark, config, sample_manifest, tmp_path):
    summary = run_extract(spark, input_uri=str(sample_manifest), output=tmp_path, config=config)
    assert (summary.listed, summary.new, summary.failed) == (48, 48, 0)
    [run] = committed_runs(str(tmp_path / "chroma"))
    [part, *_] = (tmp_path / "chroma").glob(f"run={run}/*.parquet")
    table = pq.read_table(part)
    assert table.column_names == CHROMA_COLUMNS and list(read_rows(str(tmp_path / "chroma")).columns) == CHROMA_COLUMNS
    assert str(table.schema.field("chroma").type) == "list<element: float not null>"
    frame = _current(spark, tmp_path)
    assert (frame["status"] == "ok").all()
    assert (frame["feature_version"] == features.FEATURE_VERSION).all()
    assert frame["identity"].str.match(r"^sha256:[0-9a-f]{64}$").all()
    assert (frame["hop"] == features.HOP_LENGTH).all() and (frame["sample_rate"] == features.SAMPLE_RATE).all()
    row = frame.loc["sample-wav-00"]  # C major
    tensor = pitch_classes(np.asarray(row["chroma"], dtype=np.float32).reshape(-1, row["n_frames"]))
    assert row["duration_s"] == pytest.approx(4.0, abs=0.05)
    assert row["truth_key"] == "C major" and row["source"] == "synth-wav"
    # the profile is C major's: the Krumhansl-Schmuckler template picks it (it does for all 48 clips)
    assert int(np.argmax(template_scores(tensor.mean(axis=1)))) == KEY_NAMES.index("C major")
    # synthesized at A440: the tuning read back is 0 within the estimator's 1-cent bins
    assert frame["tuning_cents"].abs().max() <= 2, frame["tuning_cents"].describe()
    # mp3 and wav of the same clip give nearly the same tensor
    other = frame.loc["sample-mp3-00"]
    assert np.corrcoef(np.asarray(other["chroma"])[: len(row["chroma"])], row["chroma"][: len(other["chroma"])])[0, 1] > 0.95


def test_bad_input_gets_error_rows_and_good_tracks_succeed(spark, config, bad_catalogue, tmp_path):
    summary = run_extract(spark, input_uri=str(bad_catalogue), output=tmp_path, config=config)
    frame = _current(spark, tmp_path)
    assert len(frame) == summary.listed == 10
    expected = {
        "good-0": "ok", "good-21": "ok",
        "empty": "empty", "notes": "decode_error", "corrupt": "decode_error",
        "truncated": "too_short", "cover": "unsupported_format", "blip": "too_short",
        "silence": "silent", "does_not_exist": "missing",
    }
    assert frame["status"].to_dict() == expected
    bad = frame[frame["status"] != "ok"]
    assert bad["error"].str.len().gt(10).all(), bad["error"]
    silence = frame.loc["silence"]
    tensor = np.asarray(silence["chroma"])
    assert tensor.size == features.n_rows(features.FEATURE_VERSION) * silence["n_frames"] and np.isfinite(tensor).all() and not tensor.any()
    assert silence["tuning_cents"] is None or np.isnan(silence["tuning_cents"])  # no pitch to measure
    assert frame.loc[["empty", "notes", "does_not_exist"], "chroma"].isna().all()
    assert summary.failed == 7  # silent is not a failure


def test_incremental_rerun_then_added_then_changed_then_force(spark, config, tmp_path):
    folder = tmp_path / "lib"
    for index in range(3):
        synth.write_audio(folder / f"t{index}.wav", synth.chord_progression(index, duration_s=2.0, sr=22050), sr=22050)
    out = tmp_path / "out"
    first = run_extract(spark, input_uri=str(folder), output=out, config=config)
    again = run_extract(spark, input_uri=str(folder), output=out, config=config)
    assert (first.new, again.new, again.skipped) == (3, 0, 3)
    assert len(committed_runs(str(out / "chroma"))) == 1  # nothing new: nothing written

    synth.write_audio(folder / "sub" / "t3.flac", synth.chord_progression(3, duration_s=2.0, sr=22050), sr=22050)
    added = run_extract(spark, input_uri=str(folder), output=out, config=config)
    assert (added.listed, added.new, added.skipped) == (4, 1, 3)

    before = _current(spark, out).loc["t0.wav", "identity"]
    synth.write_audio(folder / "t0.wav", synth.chord_progression(7, duration_s=2.5, sr=22050), sr=22050)
    changed = run_extract(spark, input_uri=str(folder), output=out, config=config)
    assert changed.new == 1
    current = _current(spark, out)
    assert len(current) == 4 and current.loc["t0.wav", "identity"] != before
    assert current.loc["t0.wav", "duration_s"] == pytest.approx(2.5, abs=0.05)

    forced = run_extract(spark, input_uri=str(folder), output=out, config=config, force=True)
    assert (forced.new, forced.skipped) == (4, 0)
    assert len(_current(spark, out)) == 4


def test_extraction_computes_the_served_models_features(spark, config, tmp_path, other_features_model_path,
                                                        other_feature_version):
    """The shipped model's features by default; a model of other features gets its own, and
    a rerun for it re-extracts every track once. Inference serves each model the rows of its
    own version and refuses the others (feature_mismatch)."""
    from keylib import serving
    from keylib.inference import STATUS_FEATURE_MISMATCH, predict_records

    folder = tmp_path / "lib"
    for index in (0, 21):
        synth.write_audio(folder / f"t{index}.wav", synth.chord_progression(index, duration_s=3.0, sr=22050), sr=22050)
    out = tmp_path / "out"
    shipped = run_extract(spark, input_uri=str(folder), output=out, config=config)
    shipped_rows = _current(spark, out)
    assert shipped.new == 2 and (shipped_rows["feature_version"] == features.FEATURE_VERSION).all()
    rows = features.n_rows(features.FEATURE_VERSION)
    assert all(len(c) == rows * n for c, n in zip(shipped_rows["chroma"], shipped_rows["n_frames"]))
    other, other_model = other_feature_version, str(other_features_model_path)
    first = run_extract(spark, input_uri=str(folder), output=out, config=config, model_path=other_model)
    again = run_extract(spark, input_uri=str(folder), output=out, config=config, model_path=other_model)
    assert (first.new, again.new, again.skipped) == (2, 0, 2)
    other_rows = _current(spark, out)
    assert (other_rows["feature_version"] == other).all()
    rows = features.n_rows(other)
    assert all(len(c) == rows * n for c, n in zip(other_rows["chroma"], other_rows["n_frames"]))
    records = [{**r, "track_id": t} for t, r in other_rows.to_dict("index").items()]
    served = predict_records(records, serving.load_model(other_model))
    assert [r["status"] for r in served] == ["ok", "ok"] and all(len(r["probs"]) == 24 for r in served)
    refused = predict_records(records, serving.load_model())
    assert {r["status"] for r in refused} == {STATUS_FEATURE_MISMATCH} and other in refused[0]["error"]


def test_missing_input_is_an_input_error(spark, config, tmp_path):
    from keylib.errors import InputError

    with pytest.raises(InputError, match="not found"):
        run_extract(spark, input_uri=str(tmp_path / "nowhere"), output=tmp_path, config=config)


@pytest.mark.slow  # ./submit.sh extract, twice
def test_submit_sh_extract_end_to_end(tmp_path):
    folder = tmp_path / "lib"
    for index in (4, 16):
        synth.write_audio(folder / f"k{index}.mp3", synth.chord_progression(index, duration_s=2.0, sr=22050), sr=22050)
    (folder / "broken.mp3").write_bytes(b"not audio at all" * 10)
    env = {**os.environ, "KEYLIB_VENV": str(Path(sys.executable).parent.parent)}
    cmd = [str(REPO / "submit.sh"), "extract", "--input", str(folder), "--output", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    # spark-submit passes the driver's stdout and stderr through one stream: read both
    output = result.stdout + result.stderr
    summary = [line for line in output.splitlines() if line.startswith("keylib extract:")]
    assert summary, output[-3000:]
    assert "listed 3, new 3, skipped 0, failed 1" in summary[-1]
    assert "decode_error       broken.mp3: not decodable audio" in output
    # one failure in three is above the default 5 % threshold: documented exit code 4
    assert result.returncode == 4
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert "listed 3, new 0, skipped 3, failed 0" in rerun.stdout and rerun.returncode == 0
