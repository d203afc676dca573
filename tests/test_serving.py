"""The served model (ONNX Runtime): same probabilities as Keras, any length at its real
length, calibration, model files, and no TensorFlow anywhere on the serving path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keylib import features, keys, serving, synth
from keylib.errors import ModelError

REPO = Path(__file__).resolve().parent.parent
STEP_LENGTHS = (1, 2, 3, 7, 8, 17, 40, 301)
ROWS = features.n_rows(features.FEATURE_VERSION)  # the shipped model's chroma rows


@pytest.fixture(scope="module")
def served():
    return serving.load_model()


@pytest.fixture(scope="module")
def keras_model():
    from keylib.training import networks as km

    return km.load_keras_model()


@pytest.fixture(scope="module")
def cadences():
    """One 8-s cadential piece per key (keylib.synth), as (12, n_frames) chroma."""
    return [features.chroma(synth.chord_progression(k, duration_s=8.0, sr=features.SAMPLE_RATE, seed=500 + k))
            for k in range(keys.N_KEYS)]


def random_chromas(seed: int, frames_per_step: int = 5):
    """Random chroma of several lengths: whole steps, and partial last steps."""
    rng = np.random.default_rng(seed)
    out = []
    for steps in STEP_LENGTHS:
        out.append(rng.random((ROWS, steps * frames_per_step), dtype=np.float32))
        out.append(rng.random((ROWS, steps * frames_per_step + 2), dtype=np.float32) ** 3)
    return out


def test_shipped_files_side_by_side(served):
    for suffix in (".onnx", ".keras", ".json"):
        assert (serving.MODELS_DIR / f"keynet-eq{suffix}").is_file(), f"keynet-eq{suffix}"
    assert served.path == serving.SHIPPED_MODEL.resolve()
    assert served.version == json.loads(serving.SHIPPED_MODEL.with_suffix(".json").read_text())["version"]
    assert served.feature_version == features.FEATURE_VERSION and served.threads == 1
    assert serving.load_model() is served  # once per process
    assert serving.load_model(serving.SHIPPED_MODEL.with_suffix(".keras")) is served  # the .keras names it too


def test_served_equals_keras_on_the_24_cadences(served, keras_model, cadences):
    a = served.predict_probs(cadences)
    b = keras_model.predict_probs(cadences)
    assert a.shape == (24, 24) and a.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    # and the model names the keys of these 8-s additive-synth cadences: keynet-eq-2026.11-3
    # gets 22 of 24 (C major -> A minor, Ab major -> F minor: relatives), measured here.
    assert sum(int(e) == k for k, e in enumerate(a.argmax(axis=1))) >= 22


def test_served_equals_keras_on_random_chroma_of_any_length():
    from keylib.training import networks as km

    served = serving.load_model(serving.MODELS_DIR / "keynet-eq.onnx")
    trained = km.load_keras_model(serving.MODELS_DIR / "keynet-eq.keras")
    chromas = random_chromas(1, frames_per_step=5)
    a = served.predict_probs(chromas, batch_size=3)
    b = trained.predict_probs(chromas, batch_size=3)
    assert a.shape == (len(chromas), 24)
    assert np.abs(a - b).max() < 1e-4
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ["keynet_eq", "keycnn_ref"])
def test_export_onnx_of_a_fresh_network(tmp_path, arch):
    """export_onnx: a new (seeded, untrained) network of each architecture served equals
    itself in Keras."""
    import keras

    from keylib.training import networks as km

    keras.utils.set_random_seed(7)
    net = km.build_keynet_eq(filters=8, mix=8, head=8) if arch == "keynet_eq" else km.build_keycnn_ref(filters=8)
    path = km.export_onnx(net, tmp_path / "fresh.onnx")
    card = {"version": "fresh-1", "feature_version": features.FEATURE_VERSION,
            "input": {"frames_per_step": km.FRAMES_PER_STEP[arch]}}
    path.with_suffix(".json").write_text(json.dumps(card))
    served = serving.load_model(path)
    chromas = random_chromas(2, frames_per_step=km.FRAMES_PER_STEP[arch])
    expected = km.KeyModel(net, card).predict_probs(chromas)
    assert np.abs(served.predict_probs(chromas) - expected).max() < 1e-4
    assert served.version == "fresh-1"


def test_each_track_runs_at_its_real_length(served):
    """No tiling: a 17-step track (tiled to 24 before) is the network on exactly its 17 steps,
    alone or in a batch of mixed lengths."""
    rng = np.random.default_rng(3)
    track = rng.random((ROWS, 17 * 5), dtype=np.float32)
    steps = serving.to_steps(track, 5)
    assert steps.shape == (17, ROWS)
    direct = serving.calibrate(served._run(steps[None]), serving.temperatures([17.0], served.calibration))
    mixed = served.predict_probs([rng.random((ROWS, 40), dtype=np.float32), track, track[:, :7]])
    assert np.abs(mixed[1] - direct[0]).max() < 1e-6
    # The tiled input of old (17 steps looped to 24) gives another answer: 7 steps counted twice.
    tiled = serving.calibrate(served._run(steps[np.arange(24) % 17][None]), serving.temperatures([17.0], served.calibration))
    assert np.abs(tiled[0] - direct[0]).max() > 1e-4
    # Whereas a track and the same track played twice are the same loop: same evidence (which
    # the calibration then trusts as a 34 s track's).
    twice = served.predict_probs([np.concatenate([track, track], axis=1)])
    same = serving.calibrate(served._run(steps[None]), serving.temperatures([34.0], served.calibration))
    assert np.abs(twice[0] - same[0]).max() < 1e-5


def test_to_steps_layout():
    c = np.arange(12 * 11, dtype=np.float32).reshape(12, 11)
    s = serving.to_steps(c, 5)
    assert s.shape == (3, 12)
    assert np.allclose(s[0], c[:, :5].mean(axis=1)) and np.allclose(s[2], c[:, 10])
    assert serving.to_steps(c[:, :1], 5).shape == (1, 12)
    with pytest.raises(ValueError):
        serving.to_steps(np.zeros((11, 5), np.float32), 5)


@pytest.mark.parametrize("frames", [10, 11])  # whole steps (the matrix product) and a partial last one
def test_to_steps_reads_nan_and_inf_as_zero(frames):
    c = np.ones((12, frames), np.float32)
    bad = c.copy()
    bad[3, 1], bad[4, 2], bad[5, 7] = np.nan, np.inf, -np.inf
    clean = c.copy()
    clean[3, 1] = clean[4, 2] = clean[5, 7] = 0.0
    assert np.allclose(serving.to_steps(bad, 5), serving.to_steps(clean, 5))
    assert np.isfinite(serving.to_steps(bad, 1)).all()
    assert np.allclose(serving.to_steps(clean, 5)[0, 3], 0.8)


def test_calibration_from_the_card(tmp_path, served, cadences):
    shipped = json.loads(serving.SHIPPED_MODEL.with_suffix(".json").read_text())
    assert served.temperature == shipped["calibration"]["temperature"] != 1.0
    card = dict(shipped)
    for name, temperature in (("plain", 1.0), ("m", 2.0)):
        shutil.copy(serving.SHIPPED_MODEL.with_suffix(".onnx"), tmp_path / f"{name}.onnx")
        card["calibration"] = {"temperature": temperature}
        (tmp_path / f"{name}.json").write_text(json.dumps(card))
    plain, warm = serving.load_model(tmp_path / "plain.onnx"), serving.load_model(tmp_path / "m.onnx")
    assert warm.temperature == 2.0 and plain.temperature == 1.0
    base, soft = plain.predict_probs(cadences), warm.predict_probs(cadences)
    assert np.array_equal(base.argmax(1), soft.argmax(1))
    assert np.all(soft.max(1) < base.max(1)) and np.allclose(soft.sum(1), 1.0, atol=1e-5)
    expected = np.exp(np.log(base.astype(np.float64)) / 2.0)
    assert np.allclose(soft, expected / expected.sum(1, keepdims=True), atol=1e-5)
    for bad, message in (({"temperature": 0}, "temperature"), ({"temperature": 1, "duration_exponent": "x"}, "numbers"),
                         ({"temperature": 1, "duration_exponent": float("nan")}, "duration_exponent"),
                         ({"temperature": 1, "reference_s": -3}, "reference_s")):
        card["calibration"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(card))
        shutil.copy(tmp_path / "m.onnx", tmp_path / "bad.onnx")
        with pytest.raises(ModelError, match=message):
            serving.load_model(tmp_path / "bad.onnx")


def test_calibration_follows_the_track_length(tmp_path, cadences):
    """A card with a duration exponent: each track gets T * (seconds / reference_s) ** g,
    bounded to 5-600 s; the argmax never moves."""
    card = json.loads(serving.SHIPPED_MODEL.with_suffix(".json").read_text())
    for name, cal in (("plain", {"temperature": 1.0}), ("len", {"temperature": 1.5, "duration_exponent": -0.5,
                                                              "reference_s": 12.0})):
        shutil.copy(serving.SHIPPED_MODEL.with_suffix(".onnx"), tmp_path / f"{name}.onnx")
        (tmp_path / f"{name}.json").write_text(json.dumps({**card, "calibration": cal}))
    plain, by_length = serving.load_model(tmp_path / "plain.onnx"), serving.load_model(tmp_path / "len.onnx")
    assert np.allclose(serving.temperatures([3.0, 12.0, 48.0, 2400.0], by_length.calibration),
                       [1.5 * (5 / 12) ** -0.5, 1.5, 0.75, 1.5 * 50 ** -0.5])
    clip = cadences[0]
    tracks = [clip, np.concatenate([clip] * 4, axis=1)]  # the same music, 4x as long
    seconds = serving.track_seconds(tracks)
    assert np.allclose(seconds, [clip.shape[1] / 5, 4 * clip.shape[1] / 5])
    base, scaled = plain.predict_probs(tracks), by_length.predict_probs(tracks)
    assert np.array_equal(base.argmax(1), scaled.argmax(1))
    for row, t in zip(range(2), serving.temperatures(seconds, by_length.calibration)):
        expected = np.exp(np.log(base[row].astype(np.float64)) / t)
        assert np.allclose(scaled[row], expected / expected.sum(), atol=1e-5)
    # The longer track is sharpened more (a lower temperature) than its 12 s self.
    assert scaled[1].max() > scaled[0].max()


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        serving.load_model(tmp_path / "absent.onnx")
    shutil.copy(serving.SHIPPED_MODEL.with_suffix(".keras"), tmp_path / "k.keras")
    shutil.copy(serving.SHIPPED_MODEL.with_suffix(".json"), tmp_path / "k.json")
    with pytest.raises(ModelError, match="export_onnx"):
        serving.load_model(tmp_path / "k.keras")  # a .keras alone is not servable
    shutil.copy(serving.SHIPPED_MODEL, tmp_path / "nocard.onnx")
    with pytest.raises(ModelError, match="card"):
        serving.load_model(tmp_path / "nocard.onnx")
    card = json.loads(serving.SHIPPED_MODEL.with_suffix(".json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**card, "feature_version": "chroma-other"}))
    shutil.copy(serving.SHIPPED_MODEL, tmp_path / "old.onnx")
    with pytest.raises(ModelError, match="feature"):
        serving.model_info(tmp_path / "old.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot load"):
        serving.load_model(tmp_path / "junk.onnx")


# ------------------------------------------------------------------ no TensorFlow anywhere

HEAVY = ("tensorflow", "keras", "tf2onnx")


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_serving_modules_never_import_tensorflow(cadences):
    proc = _python("""
        import json, sys
        import numpy as np
        import keylib.serving, keylib.inference, keylib.cli, keylib.track, keylib.features, keylib.evaluate
        from keylib import features, synth
        from keylib.inference import predict_frame
        import pandas as pd
        c = features.chroma(synth.chord_progression(7, duration_s=6.0, sr=features.SAMPLE_RATE))
        rows = pd.DataFrame([{"track_id": "t", "uri": "t", "n_frames": c.shape[1], "chroma": c.reshape(-1),
                              "feature_version": features.FEATURE_VERSION, "status": "ok", "error": None}])
        out = predict_frame(rows, keylib.serving.load_model())
        print(json.dumps({"key": out.key[0], "heavy": sorted(m for m in sys.modules
                          if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["key"] == "G major" and result["heavy"] == []


def test_keylib_analyze_never_imports_tensorflow(tmp_path):
    song = tmp_path / "song.mp3"
    synth.write_audio(song, synth.chord_progression(9, duration_s=10.0, sr=22050, seed=1), sr=22050)
    # -X importtime lists every module the process imports, on stderr.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "keylib.cli", "analyze", "--json", str(song)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = json.loads(proc.stdout)
    assert row["key"] == "A major"
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported and "numpy" in imported  # the listing works
    assert not imported & set(HEAVY), imported & set(HEAVY)
    # nor what only the Spark side needs: pandas alone was 0.6 of the command's 0.9 s
    assert not imported & {"pandas", "pyspark", "pyarrow", "deltalake"}, imported
    assert "oneDNN" not in proc.stderr


@pytest.mark.slow  # ~7 s: a Spark job in a subprocess
def test_spark_job_never_imports_tensorflow(tmp_path):
    """A local Spark job runs the inference UDF; neither its driver nor the Python worker
    that served the model has TensorFlow loaded."""
    proc = _python(f"""
        import json, sys
        import numpy as np, pandas as pd
        from keylib import features, synth
        from keylib.config import load_config
        from keylib.spark.workers import infer_dataframe
        from keylib.spark.session import get_session

        config = load_config(None)
        config["spark"]["master"] = "local[1]"
        spark = get_session(config, app_name="no-tensorflow")
        rows = []
        for k in (0, 5, 21):
            c = features.chroma(synth.chord_progression(k, duration_s=6.0, sr=features.SAMPLE_RATE, seed=k))
            rows.append({{"track_id": f"t{{k}}", "uri": f"t{{k}}", "identity": None, "n_frames": int(c.shape[1]),
                         "offset_s": 0.0, "tuning_cents": 0.0,
                         "feature_version": features.FEATURE_VERSION, "chroma": c.reshape(-1).tolist(),
                         "status": "ok", "error": None, "extracted_at": pd.Timestamp.now(tz="UTC")}})
        chroma = spark.createDataFrame(pd.DataFrame(rows)).coalesce(1)
        keys = infer_dataframe(chroma).toPandas()

        def check(batches):
            import os
            from keylib.inference import predict_frame
            from keylib.serving import load_model
            for batch in batches:
                served = predict_frame(batch, load_model())  # the worker serves, then looks
                yield pd.DataFrame({{"pid": [os.getpid()], "model": [served.key.iloc[0]],
                                    "heavy": [",".join(sorted(m for m in sys.modules
                                              if m.split(".")[0] in {HEAVY!r}))]}})
        worker = chroma.mapInPandas(check, "pid long, model string, heavy string").toPandas()
        driver = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"keys": dict(zip(keys.track_id, keys.key)), "status": sorted(set(keys.status)),
                          "worker": worker.heavy.tolist(), "driver": driver}}))
        spark.stop()
    """, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == ["ok"]
    assert result["keys"] == {"t0": "C major", "t5": "F major", "t21": "A minor"}
    assert result["driver"] == [] and result["worker"] and set(result["worker"]) == {""}


def test_a_card_of_unknown_features_is_refused_naming_the_known_ones(tmp_path):
    card = json.loads(serving.SHIPPED_MODEL.with_suffix(".json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, "feature_version": "chroma-stft-11k-5fps-v9"}))
    shutil.copy(serving.SHIPPED_MODEL, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="v9") as caught:
        serving.load_model(tmp_path / "m.onnx")
    assert all(version in str(caught.value) for version in features.FEATURE_VERSIONS)


def test_a_model_of_other_features_is_served_its_rows_and_refuses_the_shipped_ones(other_features_model_path, other_feature_version):
    other = other_feature_version
    served = serving.load_model(other_features_model_path)
    assert served.feature_version == other
    y = synth.chord_progression(21, duration_s=6.0, sr=features.SAMPLE_RATE)
    c = features.chroma(y, feature_version=other)
    probs = served.predict_probs([c, c[:, :7]])
    assert probs.shape == (2, 24) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=str(features.n_rows(other))):
        served.predict_probs([features.chroma(y)])
    with pytest.raises(ValueError, match=str(features.n_rows(features.FEATURE_VERSION))):
        serving.load_model().predict_probs([c])
