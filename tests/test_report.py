"""Evaluation join (exclusions with reasons) and the report files, without Spark."""

import json

import numpy as np
import pandas as pd
import pytest

from keylib.evaluate import evaluate_keys, read_truth
from keylib import mirex
from keylib.keys import KEY_NAMES
from keylib.report import REPORT_FILES, write_report


def _keys_row(track_id, key, *, uri=None, status="ok", error=None):
    return {"track_id": track_id, "uri": uri or f"/music/{track_id}.mp3", "key": key,
            "confidence": 0.9 if key else None, "status": status, "error": error}


@pytest.fixture
def keys_and_truth(tmp_path):
    keys = pd.DataFrame([
        _keys_row("t1", "C major"),          # correct
        _keys_row("t2", "G major"),          # fifth above
        _keys_row("t3", "F major"),          # fifth below: counts only with both fifths
        _keys_row("t4", "A minor"),          # relative
        _keys_row("t5", "C minor"),          # parallel
        _keys_row("t6", "E major"),          # other
        _keys_row("t7", "C major"),          # truth label X
        _keys_row("t8", "C major"),          # truth label -
        _keys_row("t9", "C major"),          # truth label None
        _keys_row("t10", "D major"),         # truth D dorian (modal)
        _keys_row("t11", None, status="decode_error", error="not decodable audio: junk"),
        _keys_row("t12", None, status="silent", error="no audible signal"),
        _keys_row("other-id", "Bb minor", uri="/music/by_path.mp3"),  # joined by path
        _keys_row("t14", "C major"),         # truth row without a label
        _keys_row("extra", "A major"),       # not in the truth manifest
    ])
    manifest = tmp_path / "truth.csv"
    pd.DataFrame([
        ("/music/t1.mp3", "t1", "C major", "pop"),
        ("/music/t2.mp3", "t2", "c major", "pop"),
        ("/music/t3.mp3", "t3", "C:maj", "pop"),
        ("/music/t4.mp3", "t4", "C", "classical"),
        ("/music/t5.mp3", "t5", "Cmaj", "classical"),
        ("/music/t6.mp3", "t6", "C major", "classical"),
        ("/music/t7.mp3", "t7", "X", "classical"),
        ("/music/t8.mp3", "t8", "-", "classical"),
        ("/music/t9.mp3", "t9", "None", "edm"),
        ("/music/t10.mp3", "t10", "D dorian", "edm"),
        ("/music/t11.mp3", "t11", "A minor", "edm"),
        ("/music/t12.mp3", "t12", "A minor", "edm"),
        ("/music/by_path.mp3", "", "A#:min", "edm"),
        ("/music/t14.mp3", "t14", "", "edm"),
        ("/music/missing.mp3", "t15", "E minor", "edm"),
    ], columns=["path", "track_id", "key", "source"]).to_csv(manifest, index=False)
    return keys, manifest


def test_evaluation_counts_and_exclusions(keys_and_truth):
    keys, manifest = keys_and_truth
    result = evaluate_keys(keys, read_truth(manifest))
    s = result.summary
    assert s["scored"] == 7
    assert s["counts"] == {"correct": 2, "fifth": 1, "relative": 1, "parallel": 1, "other": 2}
    assert s["counts_both_fifths"]["fifth"] == 2
    assert s["weighted_score"] == pytest.approx((1 + 0.5 + 0 + 0.3 + 0.2 + 0 + 1) / 7)
    assert s["weighted_score_both_fifths"] == pytest.approx((1 + 0.5 + 0.5 + 0.3 + 0.2 + 0 + 1) / 7)
    assert s["accuracy"] == pytest.approx(2 / 7)
    assert s["excluded"] == {"no_label": 1, "unparseable_label": 4, "not_predicted": 1, "no_estimate": 2}
    excluded = result.excluded.set_index("track_id")
    assert excluded.loc["t11", "detail"].startswith("decode_error: not decodable")
    assert excluded.loc["t10", "reason"] == "unparseable_label"
    assert s["unmatched_predictions"] == 1 + 4 + 1  # 'extra' + unscored labels X - None dorian + t14
    by_path = result.scored.set_index("track_id").loc["other-id"]
    assert (by_path["reference"], by_path["estimate"]) == ("Bb minor", "Bb minor")
    assert set(s["by_source"]) == {"pop", "classical", "edm"}
    assert s["by_source"]["classical"]["n"] == 3 and s["by_source"]["classical"]["excluded"] == 2
    assert sum(s["reference_distribution"]) == 7 and sum(s["estimate_distribution"]) == 7
    assert np.array(s["confusion"]).sum() == 7


def test_report_files(keys_and_truth, tmp_path):
    keys, manifest = keys_and_truth
    result = evaluate_keys(keys, read_truth(manifest))
    html_path = write_report(result, tmp_path / "report", metadata={"model_version": "test-1"})
    folder = html_path.parent
    assert set(REPORT_FILES) <= {p.name for p in folder.iterdir()}
    for png in (name for name in REPORT_FILES if name.endswith(".png")):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    payload = json.loads((folder / "report.json").read_text())
    assert payload["summary"]["scored"] == result.summary["scored"]
    assert len(payload["summary"]["confusion"]) == 24
    assert payload["metadata"]["model_version"] == "test-1"
    assert {r["track_id"] for r in payload["excluded_tracks"]} >= {"t7", "t8", "t9", "t10", "t11"}
    assert {r["track_id"] for r in payload["scored_tracks"]} == set(result.scored["track_id"])
    assert len(payload["scored_tracks"]) == result.summary["scored"]
    page = html_path.read_text()
    assert "src='confusion.png'" in page and "src='key_distribution.png'" in page
    assert "fifth above or below" in page and "unparseable_label" in page
    md = (folder / "report.md").read_text()
    assert "| weighted score, fifth above only (MIREX/NEMA, mir_eval 0.8.2) |" in md
    assert "## By source" in md
    for excluded in ("t7", "t8", "t9", "t10", "t11"):  # each excluded track is named, with its reason
        assert excluded in md and excluded in page, excluded


def test_no_scored_tracks_still_reports(tmp_path):
    keys = pd.DataFrame([_keys_row("a", None, status="decode_error", error="junk")])
    manifest = tmp_path / "t.csv"
    pd.DataFrame({"track_id": ["a", "b"], "key": ["C major", "X"]}).to_csv(manifest, index=False)
    result = evaluate_keys(keys, read_truth(manifest))
    assert result.summary["scored"] == 0 and result.summary["weighted_score"] is None
    write_report(result, tmp_path / "r")
    assert "n/a" in (tmp_path / "r" / "report.md").read_text()


def test_truth_manifest_errors(tmp_path):
    from keylib.errors import InputError

    with pytest.raises(InputError, match="not found"):
        read_truth(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.mp3,C major\n")
    with pytest.raises(InputError, match="no 'key' column"):
        read_truth(bad)


def test_every_key_name_round_trips_through_evaluation(tmp_path):
    keys = pd.DataFrame([_keys_row(f"k{i}", KEY_NAMES[i]) for i in range(24)])
    manifest = tmp_path / "t.csv"
    pd.DataFrame({"track_id": [f"k{i}" for i in range(24)], "key": list(KEY_NAMES)}).to_csv(manifest, index=False)
    result = evaluate_keys(keys, read_truth(manifest))
    assert result.summary["accuracy"] == 1.0
    assert np.array_equal(np.array(result.summary["confusion"]), np.eye(24, dtype=int))
    # the report's category table: each category's MIREX weight and count
    write_report(result, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    counts = {"correct": 24, "fifth": 0, "relative": 0, "parallel": 0, "other": 0}
    for category, weight in mirex.WEIGHTS.items():
        assert f"| {category} | {weight} | {counts[category]} | {counts[category]} |" in md, category


def test_calibration_and_columns_beyond_the_key(tmp_path):
    # Confidence 0.9 for 10 tracks of which 6 are right: ECE |0.6 - 0.9| = 0.3 (one bin).
    keys = pd.DataFrame([
        {**_keys_row(f"t{i}", "C major" if i < 6 else "E major"), "tonal": i != 9,
         "tuning_cents": 20.0 if i < 3 else 0.0,
         "segments": [{"start_s": 0.0, "end_s": 10.0, "key": "C major", "confidence": 0.9}] * (2 if i == 0 else 1)}
        for i in range(10)
    ])
    manifest = tmp_path / "truth.csv"
    pd.DataFrame([(f"/music/t{i}.mp3", f"t{i}", "C major") for i in range(10)],
                 columns=["path", "track_id", "key"]).to_csv(manifest, index=False)
    result = evaluate_keys(keys, read_truth(manifest))
    s = result.summary
    assert s["calibration"]["ece"] == pytest.approx(0.3)
    assert s["calibration"]["n"] == 10
    assert s["beyond_key"] == {"tonal_share": 0.9, "tuning_median_cents": 0.0, "tuning_off_share": 0.3,
                               "modulating_share": 0.1}
    folder = write_report(result, tmp_path / "r").parent
    assert (folder / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "report.md").read_text()
    assert "| expected calibration error of confidence (15 bins) | 0.300 |" in md
    assert "| tonal | 0.900 |" in md and "| segments | 0.100 |" in md
    assert "src='reliability.png'" in (folder / "report.html").read_text()


def test_report_escapes_and_redacts_what_it_takes_from_the_data(tmp_path):
    """A track id with '|', a newline and HTML, a source with '|', an error with a presigned
    URL: report.md keeps its tables' shape, report.html shows the text, not markup, and no
    report file holds the signature."""
    import re

    odd = "a|b\nc <b>bold</b> `x` [l](u) \\"
    keys = pd.DataFrame([
        _keys_row(odd, None, status="read_error", error="cannot read https://h/x.mp3?X-Amz-Signature=SIGVALUE|x"),
        _keys_row("t1", "C major"),
        _keys_row("t2", "A minor"),
    ])
    manifest = tmp_path / "truth.csv"
    pd.DataFrame({"track_id": [odd, "t1", "t2"], "key": ["C major", "C major", "A minor"],
                  "source": ["po|p\nrock", "po|p\nrock", "<i>jazz</i>"]}).to_csv(manifest, index=False)
    result = evaluate_keys(keys, read_truth(manifest))
    folder = write_report(result, tmp_path / "r", metadata={"keys": "https://h/k?token=TOKVALUE", "n": "a`b"}).parent

    md = (folder / "report.md").read_text()
    cells = re.compile(r"(?<!\\)\|")  # an unescaped cell separator
    lines = md.splitlines()
    start = lines.index("| track | reason | detail |")
    rows = lines[start + 2:start + 2 + len(result.excluded)]
    assert len(rows) == 1 and len(cells.findall(rows[0])) == 4, rows
    assert rows[0].startswith(r"| a\|b\nc \<b\>bold\</b\> \`x\` \[l\](u) \\ | no_estimate |")
    header = next(i for i, line in enumerate(lines) if line.startswith("| source |"))
    table = lines[header:header + 2 + len(result.summary["by_source"])]
    assert {len(cells.findall(line)) for line in table} == {len(cells.findall(lines[header]))}
    assert any(line.startswith(r"| po\|p\nrock |") for line in table)
    assert "- keys: `https://h/k?token=***`" in md and "- n: ``a`b``" in md

    page = (folder / "report.html").read_text()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<i>jazz</i>" not in page and "&lt;i&gt;jazz&lt;/i&gt;" in page
    for name in REPORT_FILES:
        if name.endswith((".md", ".html", ".json")):
            text = (folder / name).read_text()
            assert "SIGVALUE" not in text and "TOKVALUE" not in text, name
    payload = json.loads((folder / "report.json").read_text())
    assert payload["excluded_tracks"][0]["track_id"] == odd  # the data itself, unescaped, in JSON
