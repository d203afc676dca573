"""Keys rows from chroma rows: fields, statuses, any track length, and the Spark UDF."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from keylib import features
from keylib.incremental import stale_tracks
from keylib.inference import KEYS_COLUMNS, keys_fields, predict_frame
from keylib.keys import KEY_NAMES, camelot, open_key
from keylib.spark.schemas import keys_schema


@pytest.fixture(scope="module")
def model(untrained_model_path):
    from keylib.serving import load_model

    return load_model(untrained_model_path)


@pytest.mark.parametrize("index", range(24))
def test_keys_fields_for_each_key(index):
    probs = np.full(24, 0.01)
    probs[index] = 0.6
    probs[(index + 1) % 24] = 0.17
    f = keys_fields(probs)
    assert f["key"] == KEY_NAMES[index]
    assert f["tonic"] == index % 12 and f["mode"] == ("major" if index < 12 else "minor")
    assert f["confidence"] == pytest.approx(0.6) and f["margin"] == pytest.approx(0.43)
    assert f["camelot"] == camelot(index) and f["open_key"] == open_key(index)
    assert f["probs"] == pytest.approx(probs.tolist())


def test_keys_fields_rejects_bad_shapes():
    with pytest.raises(ValueError):
        keys_fields(np.ones(12))
    with pytest.raises(ValueError):
        keys_fields(np.full(24, np.nan))


def _chroma_row(track_id, n_frames, *, status="ok", error=None, feature_version=features.FEATURE_VERSION,
                seed=0, tensor=True):
    rng = np.random.default_rng(seed)
    rows = features.FEATURE_VERSIONS.get(feature_version, 12)  # an unknown version: 12 rows, refused anyway
    flat = rng.random(rows * n_frames, dtype=np.float32) if tensor and n_frames else None
    return {"track_id": track_id, "uri": f"/m/{track_id}.mp3", "identity": f"sha256:{track_id}",
            "n_frames": n_frames if tensor else None, "feature_version": feature_version, "chroma": flat,
            "status": status, "error": error, "extracted_at": datetime(2026, 11, 24, tzinfo=timezone.utc)}


def test_predict_frame_statuses_and_any_length(model):
    rows = pd.DataFrame([
        _chroma_row("one-frame", 1),
        _chroma_row("30s", features.frames_for_duration(30.0), seed=1),
        _chroma_row("10min", features.frames_for_duration(600.0), seed=2),
        _chroma_row("silent", 20, status="silent", error="no audible signal"),
        _chroma_row("broken", 0, status="decode_error", error="not decodable audio: junk", tensor=False),
        _chroma_row("old-features", 20, feature_version="chroma-v0"),
        _chroma_row("bad-length", 20) | {"n_frames": 21},
    ])
    out = predict_frame(rows, model).set_index("track_id")
    assert list(out.reset_index().columns) == KEYS_COLUMNS
    assert list(out.index) == list(rows["track_id"])
    for tid in ("one-frame", "30s", "10min"):
        r = out.loc[tid]
        assert r["status"] == "ok" and r["error"] is None
        assert len(r["probs"]) == 24 and sum(r["probs"]) == pytest.approx(1.0, abs=1e-4)
        assert r["confidence"] == pytest.approx(max(r["probs"]))
        assert r["key"] == KEY_NAMES[int(np.argmax(r["probs"]))]
        # the probabilities are the served model's on this row's tensor, not any 24 numbers
        source = rows.set_index("track_id").loc[tid]
        tensor = np.asarray(source["chroma"], dtype=np.float32).reshape(-1, int(source["n_frames"]))
        np.testing.assert_allclose(r["probs"], model.predict_probs([tensor])[0], atol=1e-5)
        assert r["model_version"] == "untrained-test"
    assert out.loc["silent", "status"] == "silent" and out.loc["silent", "key"] is None
    assert out.loc["broken", "status"] == "decode_error"
    assert out.loc["broken", "error"] == "not decodable audio: junk" and out.loc["broken", "key"] is None
    assert out.loc["old-features", "status"] == "feature_mismatch" and "re-extract" in out.loc["old-features", "error"]
    assert out.loc["bad-length", "status"] == "error" and out.loc["bad-length", "key"] is None


def test_predict_frame_batch_equals_one_by_one(model):
    rows = pd.DataFrame([_chroma_row(f"t{i}", 30 + 40 * i, seed=i) for i in range(5)])
    together = np.array(predict_frame(rows, model)["probs"].tolist())
    alone = np.array([predict_frame(rows.iloc[[i]], model)["probs"].iloc[0] for i in range(5)])
    assert np.allclose(together, alone, atol=1e-5)


def test_stale_tracks():
    t0 = pd.Timestamp("2026-11-24T10:00:00Z")
    chroma = pd.DataFrame({"track_id": ["a", "b", "c", "d"], "extracted_at": [t0, t0, t0 + pd.Timedelta("1h"), t0]})
    keys = pd.DataFrame({"track_id": ["a", "b", "c"], "model_version": ["m1", "m0", "m1"], "extracted_at": [t0, t0, t0]})
    mask = stale_tracks(chroma, keys, model_version="m1")
    assert mask.tolist() == [False, True, True, True]  # b: old model, c: re-extracted, d: new
    assert stale_tracks(chroma, keys, model_version="m1", force=True).all()
    assert stale_tracks(chroma, None, model_version="m1").all()


def test_infer_dataframe_on_spark(spark, model):
    from keylib.spark.workers import infer_dataframe
    from keylib.spark.schemas import CHROMA_SCHEMA

    rows = [_chroma_row(f"t{i}", 25 * (i + 1), seed=i) for i in range(6)]
    rows.append(_chroma_row("gone", 0, status="missing", error="file not found", tensor=False))
    records = [
        {**{f.name: None for f in CHROMA_SCHEMA.fields}, **r,
         "chroma": None if r["chroma"] is None else r["chroma"].tolist()}
        for r in rows
    ]
    frame = spark.createDataFrame(records, CHROMA_SCHEMA).repartition(2)
    keys = infer_dataframe(frame, model_path=str(model.path))
    assert keys.schema == keys_schema()
    out = keys.toPandas().set_index("track_id")
    local = predict_frame(pd.DataFrame(rows), model).set_index("track_id")
    assert sorted(out.index) == sorted(local.index)
    ok = [f"t{i}" for i in range(6)]
    assert (out.loc[ok, "status"] == "ok").all()
    assert out.loc[ok, "key"].tolist() == local.loc[ok, "key"].tolist()
    assert np.allclose(np.stack(out.loc[ok, "probs"]), np.stack(local.loc[ok, "probs"]), atol=1e-5)
    assert out.loc["gone", "status"] == "missing" and out.loc["gone", "error"] == "file not found"
    assert pd.isna(out.loc["gone", "key"])


def test_python_workers_fork_from_keylibs_daemon_with_imports_done(spark):
    """conf/local.toml's ``spark.python.daemon.module``: workers start with pandas, pyarrow
    and keylib's worker modules already imported (keylib/spark/daemon.py), not importing them
    on their own."""

    def probe(_):
        import sys

        main = sys.modules["__main__"]
        yield (getattr(getattr(main, "__spec__", None), "name", None),
               all(m in sys.modules for m in ("pandas", "pyarrow", "keylib.spark.workers", "keylib.storage.commit")))

    seen = set(spark.sparkContext.parallelize(range(4), 2).mapPartitions(probe).collect())
    assert seen == {("keylib.spark.daemon", True)}
