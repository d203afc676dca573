"""annotate + evaluate on the sample catalogue, on the shared local[2] Spark session:
keys Parquet schema and partitioning, a failed track's row, the report, incremental rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keylib.flows import read_keys, run_annotate
from keylib.inference import KEYS_COLUMNS
from keylib.keys import KEY_NAMES, camelot
from keylib.report import REPORT_FILES

sys.path.insert(0, str(Path(__file__).parent))
from test_inference import make_untrained_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_untrained_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def manifest(sample_manifest, tmp_path):
    """The sample catalogue (absolute paths) plus a corrupt file and an unusable label."""
    table = pd.read_csv(sample_manifest, dtype=str)
    table["path"] = [str((sample_manifest.parent / p).resolve()) for p in table["path"]]
    table.loc[table["track_id"] == "sample-wav-05", "key"] = "X"
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3 this is not audio at all" * 50)
    table.loc[len(table)] = [str(corrupt), "broken-1", "A minor", "broken"]
    path = tmp_path / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def test_annotate_then_evaluate(spark, config, manifest, model_path, tmp_path):
    out = tmp_path / "out"
    result = run_annotate(spark, input_uri=str(manifest), output=out, config=config, model_path=str(model_path))
    extract, infer = result["extract"], result["infer"]
    assert (extract.listed, extract.new, extract.failed) == (49, 49, 1)
    assert (infer.listed, infer.new) == (49, 49)
    assert infer.extra["statuses"] == {"ok": 48, "decode_error": 1}

    # keys/: a Delta table, the contract's columns, probs as 24 floats
    from deltalake import DeltaTable

    table = DeltaTable(str(out / "keys")).to_pyarrow_table()
    assert table.column_names == KEYS_COLUMNS
    assert str(table.schema.field("probs").type) == "list<element: float not null>"
    rows = table.to_pandas().set_index("track_id")
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 48
    assert ok["key"].isin(KEY_NAMES).all()
    assert ok["probs"].map(len).eq(24).all()
    assert np.allclose(ok["probs"].map(sum), 1.0, atol=1e-3)
    assert ((ok["tonic"] >= 0) & (ok["tonic"] <= 11)).all()
    assert (ok["camelot"] == ok["key"].map(lambda k: camelot(KEY_NAMES.index(k)))).all()
    assert (ok["model_version"] == "untrained-test").all()
    broken = rows.loc["broken-1"]
    assert broken["status"] == "decode_error" and "not decodable" in broken["error"]
    assert broken["key"] is None and broken["probs"] is None

    # the report
    report = result["report"]
    assert report == out / "report" / "report.html"
    for name in REPORT_FILES:
        assert (report.parent / name).stat().st_size > 0
    summary = json.loads((report.parent / "report.json").read_text())["summary"]
    assert summary["scored"] == 47
    assert summary["excluded"] == {"no_label": 0, "unparseable_label": 1, "not_predicted": 0, "no_estimate": 1}
    assert set(summary["by_source"]) == {"synth-mp3", "synth-wav", "broken"}
    assert summary["by_source"]["synth-wav"]["n"] == 23
    assert sum(summary["counts"].values()) == 47
    assert 0.0 <= summary["weighted_score"] <= summary["weighted_score_both_fifths"] <= 1.0

    # a rerun predicts nothing again, and the current view has one row per track
    again = run_annotate(spark, input_uri=str(manifest), output=out, config=config, model_path=str(model_path))
    assert (again["extract"].new, again["infer"].new, again["infer"].skipped) == (0, 0, 49)
    current = read_keys(spark, out).toPandas()
    assert len(current) == 49 and current["track_id"].is_unique


@pytest.mark.slow
def test_jobs_through_submit_sh(tmp_path, model_path):
    """infer, evaluate and annotate as a user runs them (spark-submit, job flags, output)."""
    from keylib import synth

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
