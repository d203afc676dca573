"""annotate + evaluate on the sample catalogue, on the shared local[2] Spark session:
the keys and chroma Delta tables and their schemas, a failed track's row, the report with the shipped
model's score, incremental reruns, and one pass equal to extract-then-infer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from keylib import synth
from keylib.inference import KEYS_COLUMNS
from keylib.keys import KEY_NAMES, camelot
from keylib.report import REPORT_FILES
from keylib.serving import load_model
from keylib.spark.flows import read_keys, run_annotate, run_extract, run_infer
from keylib.spark.frames import read_current
from keylib.storage.tables import committed_runs
from keylib.track import CHROMA_COLUMNS

REPO = Path(__file__).resolve().parent.parent

# One annotate pass over the sample catalogue takes ~15 s, the one-pass comparison ~5 s more,
# and the last test runs ./submit.sh jobs: the whole file is out of the quick loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_path(untrained_model_path):
    """An untrained network: another model version than the shipped one."""
    return untrained_model_path


@pytest.fixture(scope="module")
def manifest(sample_manifest, tmp_path_factory):
    """The sample catalogue (absolute paths) plus a corrupt file and an unusable label
    (:func:`keylib.synth.make_flawed_manifest`, what bench/acceptance.py scores)."""
    return synth.make_flawed_manifest(tmp_path_factory.mktemp("manifest"), sample_manifest=sample_manifest)


@pytest.fixture(scope="module")
def annotated(spark, config, manifest, tmp_path_factory):
    """One annotate run (the shipped model, one pass) over the manifest: (result, output)."""
    out = tmp_path_factory.mktemp("annotated") / "out"
    result = run_annotate(spark, input_uri=str(manifest), output=out, config=config)
    return result, out


@pytest.mark.acceptance
def test_annotate_then_evaluate(spark, config, manifest, annotated, acceptance):
    result, out = annotated
    extract, infer = result["extract"], result["infer"]
    assert (extract.listed, extract.new, extract.failed) == (49, 49, 1)
    assert (infer.listed, infer.new) == (49, 49)
    assert infer.extra["statuses"] == {"ok": 48, "decode_error": 1}
    assert sorted(result["listing"]["track_id"]) == sorted(pd.read_csv(manifest, dtype=str)["track_id"])

    # keys/: a Delta table, the contract's columns, probs as 24 floats
    from deltalake import DeltaTable

    table = DeltaTable(str(out / "keys")).to_pyarrow_table()
    assert table.column_names == KEYS_COLUMNS
    assert str(table.schema.field("probs").type) == "list<element: float not null>"
    assert table.schema.field("tonal").type == pa.bool_()
    assert table.schema.field("tuning_cents").type == pa.float64()
    segment = table.schema.field("segments").type.value_type
    assert [(f.name, f.type) for f in segment] == [
        ("start_s", pa.float64()), ("end_s", pa.float64()), ("key", pa.string()), ("confidence", pa.float64())]
    rows = table.to_pandas().set_index("track_id")
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 48
    assert ok["probs"].map(len).eq(24).all()
    assert (ok["key"] == ok["probs"].map(lambda p: KEY_NAMES[int(np.argmax(p))])).all()
    assert np.allclose(ok["probs"].map(sum), 1.0, atol=1e-3)
    assert ((ok["tonic"] >= 0) & (ok["tonic"] <= 11)).all()
    assert (ok["camelot"] == ok["key"].map(lambda k: camelot(KEY_NAMES.index(k)))).all()
    assert (ok["model_version"] == load_model().version).all()
    broken = rows.loc["broken-1"]
    assert broken["status"] == "decode_error" and "not decodable" in broken["error"]
    assert broken["key"] is None and broken["probs"] is None
    assert ok["segments"].map(len).ge(1).all()
    assert all(s["key"] in KEY_NAMES and s["start_s"] < s["end_s"] for segs in ok["segments"] for s in segs)
    # the chroma/ table of the same pass: the extraction contract, one run id for both tables
    assert DeltaTable(str(out / "chroma")).schema().to_arrow().names == CHROMA_COLUMNS
    assert committed_runs(str(out / "chroma")) == committed_runs(str(out / "keys")) == [extract.extra["run_id"]]

    # the report
    report = result["report"]
    assert report == out / "report" / "report.html"
    assert set(REPORT_FILES) <= {p.name for p in report.parent.iterdir()}
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert (report.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    payload = json.loads((report.parent / "report.json").read_text())
    scored_ids = {r["track_id"] for r in payload["scored_tracks"]}
    assert scored_ids == set(ok.index) - {"sample-wav-05"}  # its label is unusable
    assert {r["track_id"] for r in payload["excluded_tracks"]} == {"sample-wav-05", "broken-1"}
    assert payload["metadata"]["model_version"] == load_model().version
    assert "sample-wav-05" in (report.parent / "report.md").read_text() and "broken-1" in report.read_text()
    summary = payload["summary"]
    assert summary["scored"] == 47
    assert summary["excluded"] == {"no_label": 0, "unparseable_label": 1, "not_predicted": 0, "no_estimate": 1}
    assert set(summary["by_source"]) == {"synth-mp3", "synth-wav", "broken"}
    assert summary["by_source"]["synth-wav"]["n"] == 23
    assert sum(summary["counts"].values()) == 47
    # The shipped model's accuracy on the 4-s clips: conftest.py's acceptance thresholds.
    assert summary["weighted_score"] >= acceptance.annotate_min_weighted_score
    assert summary["counts"]["correct"] >= acceptance.annotate_min_correct

    # a rerun predicts nothing again, and the current view has one row per track
    again = run_annotate(spark, input_uri=str(manifest), output=out, config=config)
    assert (again["extract"].new, again["infer"].new, again["infer"].skipped) == (0, 0, 49)
    assert "committed" not in again["infer"].extra
    current = read_keys(spark, out).toPandas()
    assert len(current) == 49 and current["track_id"].is_unique


def test_one_pass_equals_extract_then_infer(spark, config, manifest, annotated, model_path, tmp_path):
    _, one_pass = annotated
    out = tmp_path / "out"
    run_extract(spark, input_uri=str(manifest), output=out, config=config)
    run_infer(spark, features=out / "chroma", output=out, config=config)

    def rows(root, table):
        frame = read_current(spark, str(root / table)).toPandas()  # read by the executors (pyarrow)
        assert frame["track_id"].is_unique
        return frame.set_index("track_id").sort_index()

    chroma_a, chroma_b = rows(one_pass, "chroma"), rows(out, "chroma")
    assert list(chroma_a.index) == list(chroma_b.index) and len(chroma_a) == 49
    for column in ("status", "identity", "fingerprint", "n_frames", "duration_s", "feature_version"):
        assert chroma_a[column].equals(chroma_b[column]), column
    ok = chroma_a.index[chroma_a["status"] == "ok"]
    assert all(np.array_equal(chroma_a.loc[t, "chroma"], chroma_b.loc[t, "chroma"]) for t in ok)

    keys_a, keys_b = rows(one_pass, "keys"), rows(out, "keys")
    assert list(keys_a.index) == list(keys_b.index)
    for column in ("status", "key", "camelot", "model_version", "feature_version", "identity"):
        assert keys_a[column].equals(keys_b[column]), column
    assert np.allclose(np.stack(keys_a.loc[ok, "probs"]), np.stack(keys_b.loc[ok, "probs"]), atol=1e-5)
    assert keys_a.loc["broken-1", "error"] == keys_b.loc["broken-1", "error"]

    # chroma and keys current: annotate does nothing; chroma current but keys of another
    # model version: only the keys are redone, from the committed chroma
    again = run_annotate(spark, input_uri=str(manifest), output=out, config=config)
    assert (again["extract"].new, again["infer"].new) == (0, 0)
    other = run_annotate(spark, input_uri=str(manifest), output=out, config=config, model_path=str(model_path))
    assert (other["extract"].new, other["infer"].new, other["infer"].skipped) == (0, 49, 0)
    assert len(committed_runs(str(out / "chroma"))) == 1
    redone = rows(out, "keys")
    assert (redone["model_version"] == "untrained-test").all()
    assert redone["status"].equals(keys_b["status"])


def test_jobs_through_submit_sh(tmp_path, model_path):
    """infer, evaluate and annotate as a user runs them (spark-submit, job flags, output)."""
    rows = []
    for index in (0, 21):
        name = f"clip_{index}.wav"
        synth.write_audio(tmp_path / name, synth.chord_progression(index, duration_s=3.0, sr=22050), sr=22050)
        rows.append({"path": name, "track_id": f"clip-{index}", "key": KEY_NAMES[index], "source": "synth"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "out"

    def submit(*args):
        proc = subprocess.run([str(REPO / "submit.sh"), *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    stdout = submit("annotate", "--input", str(tmp_path / "manifest.csv"), "--output", str(out),
                    "--model", str(model_path))
    assert "clip-0" in stdout and "clip-21" in stdout
    assert f"MIREX report: {out / 'report' / 'report.html'}" in stdout
    stdout = submit("infer", "--features", str(out / "chroma"), "--output", str(out), "--model", str(model_path))
    assert "keylib infer: listed 2, new 0, skipped 2" in stdout
    stdout = submit("evaluate", "--keys", str(out / "keys"), "--truth", str(tmp_path / "manifest.csv"),
                    "--output", str(tmp_path / "report2"))
    assert "scored 2, excluded 0" in stdout
    assert (tmp_path / "report2" / "report.html").is_file()
