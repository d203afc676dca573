"""``keylib analyze``: in-process and through the installed console script (speed: bench/analyze.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keylib import synth
from keylib.cli import analyze_files, main
from keylib.keys import KEY_NAMES, camelot
from keylib.serving import load_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    c_major = synth.write_c_major_cadence(folder)
    silence = folder / "silence.wav"
    synth.write_audio(silence, np.zeros(22050 * 3, dtype=np.float32), sr=22050)
    junk = folder / "junk.mp3"
    junk.write_bytes(b"not audio" * 100)
    return {"c_major": c_major, "silence": silence, "junk": junk, "missing": folder / "nope.wav"}


@pytest.fixture(scope="module")
def model_path(untrained_model_path):
    return str(untrained_model_path)


@pytest.fixture(scope="module")
def c_major_row(files, model_path):
    """``analyze_files``'s row for the C major file with the untrained model: what the
    command line must print for it."""
    [row] = analyze_files([files["c_major"]], model_path=model_path)
    return row


def test_analyze_files_rows(files, model_path):
    rows = analyze_files([files[k] for k in ("c_major", "silence", "junk", "missing")], model_path=model_path)
    good, silent, junk, missing = rows
    # an untrained network: its key is arbitrary, but it is the argmax of the returned probs
    assert good["status"] == "ok" and len(good["probs"]) == 24
    assert sum(good["probs"]) == pytest.approx(1.0, abs=1e-4)
    assert good["key"] == KEY_NAMES[int(np.argmax(good["probs"]))]
    assert good["confidence"] == pytest.approx(max(good["probs"]))
    assert good["camelot"] == camelot(KEY_NAMES.index(good["key"]))
    assert good["model_version"] == "untrained-test"
    assert good["duration_s"] == pytest.approx(30.0, abs=0.1)
    assert silent["status"] == "silent" and silent["key"] is None
    assert junk["status"] == "decode_error" and junk["error"]
    assert missing["status"] == "missing" and "no such file" in missing["error"]


def test_analyze_files_with_a_model_of_other_features_computes_them(files, other_features_model_path, other_feature_version):
    other = other_feature_version
    [good, silent] = analyze_files([files["c_major"], files["silence"]], model_path=str(other_features_model_path))
    assert good["status"] == "ok" and good["feature_version"] == other
    assert len(good["probs"]) == 24 and good["model_version"] == f"untrained-{other}"
    assert silent["status"] == "silent" and silent["feature_version"] == other


def test_main_json_and_exit_codes(files, model_path, c_major_row, capsys):
    assert main(["analyze", "--json", "--model", model_path, str(files["c_major"])]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["file"] == str(files["c_major"]) and "probs" not in row
    assert (row["key"], row["camelot"]) == (c_major_row["key"], c_major_row["camelot"])
    assert row["confidence"] == pytest.approx(c_major_row["confidence"])
    assert main(["analyze", "--model", model_path, str(files["c_major"]), str(files["junk"])]) == 1
    out = capsys.readouterr().out
    assert "camelot" in out and "decode_error" in out
    assert main(["analyze", "--model", str(files["missing"]), str(files["c_major"])]) == 2


def test_console_script(files, model_path, c_major_row):
    script = Path(sys.executable).parent / "keylib"
    exe = str(script) if script.exists() else shutil.which("keylib")
    if exe is None:
        pytest.skip("the keylib console script is not installed (pip install -e .)")
    proc = subprocess.run([exe, "analyze", "--json", "--model", model_path, str(files["c_major"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = json.loads(proc.stdout)
    assert row["model_version"] == "untrained-test"
    assert (row["key"], row["camelot"]) == (c_major_row["key"], c_major_row["camelot"])


@pytest.mark.acceptance
def test_shipped_model_finds_c_major(files, acceptance):
    [row] = analyze_files([files["c_major"]])
    assert row["key"] == "C major" and row["confidence"] > acceptance.c_major_min_confidence, row
    assert row["model_version"] == load_model().version
