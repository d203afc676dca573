"""Training on a small set for a few epochs lowers the loss and writes a loadable model and card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keylib import features, keys, serving, synth
from keylib.training.calibration import fit_calibration
from keylib.training.data import load_dataset, split_dataset
from keylib.training.networks import load_keras_model
from keylib.training.scores import mirex_summary
from keylib.training.settings import TrainConfig
from keylib.training.train import WeightAverage, train_model


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Chroma Parquet in the extraction job's layout + a manifest with the labels."""
    root = tmp_path_factory.mktemp("small")
    rows, man = [], []
    for i, k in enumerate([0, 2, 5, 7, 9, 12, 14, 16, 19, 21, 9, 4]):
        c = features.chroma(synth.chord_progression(k, duration_s=6.0, sr=features.SAMPLE_RATE, seed=i))
        tid = f"t{i:02d}"
        rows.append({"track_id": tid, "uri": f"/x/{tid}.wav", "chroma": c.reshape(-1), "n_frames": c.shape[1],
                     "status": "ok", "feature_version": features.FEATURE_VERSION})
        man.append({"path": f"{tid}.wav", "track_id": tid, "key": keys.key_name(k), "source": "synth",
                    "piece": f"p{i % 6}", "split": "heldout" if i >= 10 else "train"})
    rows.append({**rows[0], "track_id": "bad", "status": "decode_error"})
    (root / "chroma").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "chroma" / "part-0.parquet")
    pd.DataFrame(man).to_csv(root / "manifest.csv", index=False)
    return root


def test_load_and_split(small_set):
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    assert len(df) == 12 and "bad" not in set(df.track_id)
    assert df.chroma[0].shape[0] == 12 and df.key_index[3] == 7
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    assert len(held) == 2 and len(train) + len(val) == 10 and len(val) > 0 and len(train) > 0
    assert not set(train.piece) & set(val.piece)  # held out by piece


def test_training_lowers_the_loss_and_writes_model_and_card(small_set, tmp_path):
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(epochs=8, batch_size=8, patience=100, seed=3, threads=1, name="tiny", version="tiny-1",
                      learning_rate=1e-2)
    _, card = train_model(train, val, cfg, heldout_df=held, out_dir=tmp_path, log=lambda *_: None)
    losses = [h["loss"] for h in card["training"]["history"]]
    assert len(losses) == 8 and np.mean(losses[-2:]) < losses[0]
    model = load_keras_model(tmp_path / "tiny.keras")
    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert model.version == "tiny-1" and on_disk["feature_version"] == features.FEATURE_VERSION
    for section in (*on_disk["validation"].values(), on_disk["heldout"]["all"]):  # validation: whole, excerpt
        assert {"ascending_fifths", "both_fifths", "confusion"} <= set(section)
    assert set(on_disk["validation"]) == {"whole", "excerpt"}
    assert on_disk["data"]["train"]["tracks"] == len(train) and on_disk["parameters"] > 0
    assert model.predict_probs(list(held.chroma)).shape == (2, 24)
    served = serving.load_model(tmp_path / "tiny.onnx")  # train writes the served export too
    assert np.abs(served.predict_probs(list(held.chroma)) - model.predict_probs(list(held.chroma))).max() < 1e-4


@pytest.mark.slow  # ~9 s
def test_refit_keeps_the_weights_and_fits_the_rest_again(small_set, tmp_path):
    """`train --refit`: after a feature change that keeps most tensors, the network stays and what
    was fitted on validation (calibration, scores) is fitted on the new chroma."""
    import subprocess
    import sys
    from pathlib import Path

    from keylib.training.networks import load_network

    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=8, patience=100, seed=3, threads=1, name="tiny", version="tiny-1")
    net, card = train_model(train, val, cfg, heldout_df=held, out_dir=tmp_path / "first", log=lambda *_: None)
    (tmp_path / "first" / "tiny.json").write_text(json.dumps({**card, "feature_version": "older-features"}))
    conf = tmp_path / "train.toml"  # the same validation split as above
    conf.write_text("[train]\nval_fraction = 0.5\nsplit_seed = 1\n")
    job = [sys.executable, str(Path(__file__).resolve().parent.parent / "jobs" / "train.py"), "--train-conf", str(conf),
           "--features", str(small_set / "chroma"), "--manifest", str(small_set / "manifest.csv"),
           "--output", str(tmp_path / "refit"), "--name", "tiny", "--version", "tiny-2", "--threads", "1",
           "--refit", str(tmp_path / "first" / "tiny.keras")]
    done = subprocess.run(job, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    refit = json.loads((tmp_path / "refit" / "tiny.json").read_text())
    assert refit["version"] == "tiny-2" and refit["feature_version"] == features.FEATURE_VERSION
    assert refit["refit"]["from"] == "tiny-1" and refit["refit"]["network_features"] == "older-features"
    assert refit["training"]["history"] == card["training"]["history"]  # the network's own record
    assert refit["calibration"]["temperature"] > 0 and "heldout" in refit
    again = load_network(tmp_path / "refit" / "tiny.keras")
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), again.get_weights()))
    done = subprocess.run(job[:-1] + [str(tmp_path / "missing.keras")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "configuration error" in done.stderr and "missing.keras" in done.stderr


def test_network_shape_comes_from_the_config(small_set):
    from keylib.training.networks import build_keynet_eq

    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, _ = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(arch="keynet_eq_relu", epochs=1, batch_size=8, seed=3, threads=1, filters=8, mix=6, head=10,
                      context=1, batches_per_epoch=2)
    net, card = train_model(train, val, cfg, log=lambda *_: None)
    expected = build_keynet_eq(filters=8, mix=6, head=10, context=1)
    assert card["parameters"] == expected.count_params() == net.count_params()
    assert card["parameters"] != build_keynet_eq().count_params()
    assert {k: card["training"]["config"][k] for k in ("filters", "mix", "head", "context")} == \
        {"filters": 8, "mix": 6, "head": 10, "context": 1}


def test_weight_average_ramps_up_then_lags_the_weights():
    class Net:  # the two calls WeightAverage makes of a Keras model
        w = [np.zeros(3, np.float32)]

        def get_weights(self):
            return [x.copy() for x in self.w]

    net = Net()
    average = WeightAverage(net, 0.99)
    net.w = [np.ones(3, np.float32)]
    average.update()  # first decay (1 + 1) / (10 + 1): mostly the new weights, not the initial ones
    assert np.allclose(average.weights[0], 9 / 11)
    for _ in range(2000):
        average.update()
    assert np.allclose(average.weights[0], 1.0, atol=1e-6)
    net.w = [np.full(3, 2.0, np.float32)]
    average.update()  # at full decay one step moves it by 1%
    assert np.allclose(average.weights[0], 1.01)


def test_training_with_a_weight_average_keeps_the_averaged_weights(small_set):
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, _ = split_dataset(df, val_fraction=0.5, seed=1)

    def trained(ema):
        cfg = TrainConfig(epochs=2, batch_size=8, patience=100, seed=3, threads=1, ema=ema,
                          learning_rate=1e-2, batches_per_epoch=5)
        net, card = train_model(train, val, cfg, log=lambda *_: None)
        return net.get_weights(), card

    plain, _ = trained(0.0)
    again, _ = trained(0.0)
    averaged, card = trained(0.9)
    assert card["training"]["config"]["ema"] == 0.9
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))  # same seed, same steps
    # the same steps, but the network kept is their moving average, not the last step's
    assert not all(np.allclose(a, b) for a, b in zip(plain, averaged))


def test_fit_calibration_finds_a_temperature_that_follows_length():
    """Tracks drawn from a known length-dependent temperature: the fit recovers it, and it
    calibrates better than one temperature for all lengths."""
    rng = np.random.default_rng(5)
    n = 6000
    seconds = np.exp(rng.uniform(np.log(8), np.log(400), n))
    truth = {"temperature": 0.7, "duration_exponent": -0.2, "reference_s": 30.0}
    logits = rng.normal(0.0, 2.0, (n, keys.N_KEYS))
    raw = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    honest = serving.calibrate(raw, serving.temperatures(seconds, truth)).astype(np.float64)
    refs = np.array([rng.choice(keys.N_KEYS, p=p / p.sum()) for p in honest])
    fitted = fit_calibration(raw, refs, seconds)
    assert fitted["reference_s"] == 30.0
    assert abs(fitted["temperature"] - 0.7) < 0.05 and abs(fitted["duration_exponent"] + 0.2) < 0.05
    flat = fit_calibration(raw, refs, np.full(n, 30.0))  # lengths that cannot tell T from g: T alone
    assert flat["duration_exponent"] == 0.0 and 0.3 < flat["temperature"] < 2.0
    with pytest.raises(ValueError, match="fit_calibration"):
        fit_calibration(raw, refs[:-1], seconds)

    def nll(cal):
        p = serving.calibrate(raw, serving.temperatures(seconds, cal))
        return -np.mean(np.log(p[np.arange(n), refs]))

    assert nll(fitted) < nll(flat) - 0.005


def test_mirex_summary_conventions():
    # C major reference: G major (fifth up), F major (fifth down), A minor (relative), C minor (parallel)
    s = mirex_summary([0, 0, 0, 0, 0], [0, 7, 5, 21, 12])
    assert s["ascending_fifths"]["weighted"] == pytest.approx((1 + 0.5 + 0 + 0.3 + 0.2) / 5)
    assert s["both_fifths"]["weighted"] == pytest.approx((1 + 0.5 + 0.5 + 0.3 + 0.2) / 5)
    assert s["both_fifths"]["categories"] == {"correct": 1, "fifth": 2, "relative": 1, "parallel": 1, "other": 0}
    assert np.asarray(s["confusion"]).sum() == 5


def test_reference_cnn_trains_and_round_trips(small_set, tmp_path):
    """A tiny keycnn_ref run: one-frame steps, its own card, its weights move, and the saved
    files (Keras and the served ONNX export) predict what the trained network does. (Too few
    steps to expect a lower loss.)"""
    import keras

    from keylib.training.networks import ARCHITECTURES
    from keylib.training.scores import predict_exact

    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(arch="keycnn_ref", epochs=3, batch_size=8, batches_per_epoch=2, patience=100, seed=3,
                      threads=1, name="tiny-ref", version="tiny-ref-1")
    net, card = train_model(train, val, cfg, heldout_df=held, out_dir=tmp_path, log=lambda *_: None)
    assert card["architecture"] == "keycnn_ref" and card["input"]["frames_per_step"] == 1
    keras.utils.set_random_seed(cfg.seed)  # as train_model does before building the network
    initial = ARCHITECTURES["keycnn_ref"]()
    assert card["parameters"] == initial.count_params() != ARCHITECTURES["keynet_eq"]().count_params()
    moved = [not np.allclose(a, b) for a, b in zip(initial.get_weights(), net.get_weights())]
    assert len(moved) > 2 and all(moved[:2]), "training did not update the convolutions"
    history = card["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in history)
    assert all(v["n"] == len(val) for v in card["validation"].values()) and card["heldout"]["all"]["n"] == len(held)
    chromas = list(held.chroma) + [held.chroma.iloc[0][:, :3]]  # and a 3-frame track
    expected = predict_exact(net, chromas, 1)
    loaded = load_keras_model(tmp_path / "tiny-ref.keras")
    assert loaded.version == "tiny-ref-1" and loaded.frames_per_step == 1
    np.testing.assert_allclose(predict_exact(loaded.keras_model, chromas, 1), expected, atol=1e-5)
    served = serving.load_model(tmp_path / "tiny-ref.onnx")
    assert served.version == "tiny-ref-1"
    calibrated = serving.calibrate(expected, serving.temperatures(serving.track_seconds(chromas), served.calibration))
    np.testing.assert_allclose(served.predict_probs(chromas), calibrated, atol=1e-4)
