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
from keylib.training.data import add_training_rows, load_dataset, split_dataset
from keylib.training.networks import load_keras_model
from keylib.training.scores import mirex_summary
from keylib.training.settings import TrainConfig
from keylib.training.train import WeightAverage, train_model


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Chroma Parquet in the extraction job's layout, each track in every feature version,
    + a manifest with the labels."""
    root = tmp_path_factory.mktemp("small")
    rows, man = [], []
    for i, k in enumerate([0, 2, 5, 7, 9, 12, 14, 16, 19, 21, 9, 4]):
        y = synth.chord_progression(k, duration_s=6.0, sr=features.SAMPLE_RATE, seed=i)
        tid = f"t{i:02d}"
        for version in features.FEATURE_VERSIONS:  # both versions' rows: training reads its own
            c = features.chroma(y, feature_version=version)
            rows.append({"track_id": tid, "uri": f"/x/{tid}.wav", "chroma": c.reshape(-1), "n_frames": c.shape[1],
                         "status": "ok", "feature_version": version})
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
    assert df.chroma[0].shape[0] == features.n_rows(features.FEATURE_VERSION) and df.key_index[3] == 7
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    assert len(held) == 2 and len(train) + len(val) == 10 and len(val) > 0 and len(train) > 0
    assert not set(train.piece) & set(val.piece)  # held out by piece


def test_a_render_added_for_training_leaves_validation_and_heldout_as_they_were(small_set):
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    more = df.assign(track_id=df["track_id"] + "-r2")  # the same pieces rendered again
    more.loc[more.index[more["piece"].isin(set(train["piece"]))][0], "split"] = "validation"  # a validation render row
    rows, dropped = add_training_rows(train, more, val_fraction=0.5, seed=1)
    assert dropped == len(val) + len(held) + 1 and len(rows) == 2 * len(train) - 1
    assert set(rows["piece"]) == set(train["piece"]) and not set(rows["piece"]) & set(val["piece"])
    assert set(rows["split"]) == {"train"}


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
    # validation: whole, excerpt, and by the music's source (no soundfont column here: no by_sound_source)
    assert set(on_disk["validation"]) == {"whole", "excerpt", "by_source"}
    assert set(on_disk["validation"]["by_source"]) == set(val["source"])
    for section in (on_disk["validation"]["whole"], on_disk["validation"]["excerpt"], on_disk["heldout"]["all"]):
        assert {"ascending_fifths", "both_fifths", "confusion"} <= set(section)
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
    more = [str(tmp_path / "more") if a == str(tmp_path / "refit") else a for a in job]
    more += ["--training-only", str(small_set / "chroma")]  # the same renders again: only their training rows
    done = subprocess.run(more, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(train)} training rows added, {len(val) + len(held)} rows" in done.stdout
    with_more = json.loads((tmp_path / "more" / "tiny.json").read_text())
    assert with_more["data"]["train"]["tracks"] == 2 * len(train)
    assert with_more["data"]["validation"] == refit["data"]["validation"]
    again = load_network(tmp_path / "refit" / "tiny.keras")
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), again.get_weights()))
    done = subprocess.run(job[:-1] + [str(tmp_path / "missing.keras")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "configuration error" in done.stderr and "missing.keras" in done.stderr
    done = subprocess.run(job + ["--init-from", str(tmp_path / "first" / "tiny.keras")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2 and "--init-from" in done.stderr  # a refit trains nothing: not both


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
    assert all(card["validation"][view]["n"] == len(val) for view in ("whole", "excerpt"))
    assert card["heldout"]["all"]["n"] == len(held)
    chromas = list(held.chroma) + [held.chroma.iloc[0][:, :3]]  # and a 3-frame track
    expected = predict_exact(net, chromas, 1)
    loaded = load_keras_model(tmp_path / "tiny-ref.keras")
    assert loaded.version == "tiny-ref-1" and loaded.frames_per_step == 1
    np.testing.assert_allclose(predict_exact(loaded.keras_model, chromas, 1), expected, atol=1e-5)
    served = serving.load_model(tmp_path / "tiny-ref.onnx")
    assert served.version == "tiny-ref-1"
    calibrated = serving.calibrate(expected, serving.temperatures(serving.track_seconds(chromas), served.calibration))
    np.testing.assert_allclose(served.predict_probs(chromas), calibrated, atol=1e-4)


# --------------------------------------------------------------------------- v3 features (24 rows)

V3 = features.FEATURE_VERSION_V3




def _assert_equivariant(predict, track):
    """Rolling ``track``'s bands by k moves every key probability by k semitones."""
    from keylib.tensors import roll_pitch

    base = predict([track])[0]
    assert base.max() - base.min() > 1e-3  # an answer that depends on the input
    moved = predict([roll_pitch(track, shift) for shift in range(12)])
    for shift in range(12):
        expected = np.empty_like(base)
        expected[[keys.transpose_index(k, shift) for k in range(keys.N_KEYS)]] = base
        np.testing.assert_allclose(moved[shift], expected, rtol=0, atol=1e-5, err_msg=f"shift {shift}")
    return base


def test_a_24_row_network_is_transposition_equivariant():
    import keras

    from keylib.training.networks import build_keynet_eq
    from keylib.training.scores import predict_exact

    keras.utils.set_random_seed(1)
    net = build_keynet_eq(rows=24, filters=8, mix=8, head=8, dropout=0.0)
    c = features.chroma(synth.chord_progression(14, duration_s=6.0, sr=features.SAMPLE_RATE), feature_version=V3)
    noise = np.random.default_rng(4).random((24, 37), dtype=np.float32)
    for track in (c, noise):
        base = _assert_equivariant(lambda cs: predict_exact(net, cs, 5), track)
    # The bands are read as bands: rolling the 24 rows as one block is not a transposition.
    blocked = predict_exact(net, [np.roll(noise, 1, axis=0)], 5)[0]
    expected = np.empty_like(base)
    expected[[keys.transpose_index(k, 1) for k in range(keys.N_KEYS)]] = base
    assert np.abs(blocked - expected).max() > 1e-4


def test_a_v3_model_trains_writes_its_card_and_is_served_on_v3_chroma_of_audio(small_set, tmp_path):
    from keylib.inference import predict_records
    from keylib.track import ExtractSettings, extract_track

    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"], feature_version=V3)
    assert len(df) == 12 and {c.shape[0] for c in df.chroma} == {24}
    train, val, held = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(arch="keynet_eq_relu", feature_version=V3, epochs=2, batch_size=8, batches_per_epoch=4,
                      patience=100, seed=3, threads=1, name="tiny3", version="tiny3-1", filters=8, mix=8, head=8)
    rng = np.random.default_rng(6)  # music without a key: the tonality classifier's negatives
    noise = [features.chroma(rng.standard_normal(features.SAMPLE_RATE * 6).astype(np.float32), feature_version=V3)
             for _ in range(4)]
    atonal = pd.DataFrame({"chroma": noise, "source": "noise", "key_index": -1})
    net, card = train_model(train, val, cfg, heldout_df=held, atonal_df=atonal, out_dir=tmp_path, log=lambda *_: None)
    on_disk = json.loads((tmp_path / "tiny3.json").read_text())
    assert on_disk["feature_version"] == V3 and on_disk["input"]["layout"].startswith("(batch, steps, 24)")
    assert net.input_shape[-1] == 24 and on_disk["training"]["config"]["feature_version"] == V3
    served = serving.load_model(tmp_path / "tiny3.onnx")
    assert served.feature_version == V3
    keras_model = load_keras_model(tmp_path / "tiny3.keras")
    held_chroma = list(held.chroma)
    assert np.abs(served.predict_probs(held_chroma) - keras_model.predict_probs(held_chroma)).max() < 1e-4
    # Audio on disk through extraction with the model's features, then inference.
    path = tmp_path / "d-minor.wav"
    synth.write_audio(path, synth.chord_progression(14, duration_s=5.0, sr=22050), sr=22050)
    row = extract_track({"track_id": "d", "uri": str(path)},
                        settings=ExtractSettings(hash_content=False, feature_version=served.feature_version))
    assert row["status"] == "ok" and row["feature_version"] == V3 and row["chroma"].size == 24 * row["n_frames"]
    [keys_row] = predict_records([row], served)
    assert keys_row["status"] == "ok" and len(keys_row["probs"]) == 24 and keys_row["tonal"] is not None
    _assert_equivariant(served.predict_probs, row["chroma"].reshape(24, -1))  # the ONNX export too


def test_training_data_and_refit_must_match_the_feature_version(small_set, tmp_path):
    from keylib.errors import ModelError
    from keylib.training.networks import build_keynet_eq

    v2 = features.FEATURE_VERSION_V2
    only_v2 = tmp_path / "v2.parquet"
    table = pq.read_table(small_set / "chroma" / "part-0.parquet")
    pq.write_table(table.filter(pa.compute.equal(table["feature_version"], v2)), only_v2)
    with pytest.raises(ValueError, match=f"no rows with feature_version '{V3}'.*found: {v2}"):
        load_dataset([only_v2], [small_set / "manifest.csv"], feature_version=V3)
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"], feature_version=V3)
    train, val, _ = split_dataset(df, val_fraction=0.5, seed=1)
    network = build_keynet_eq(rows=12, filters=8, mix=8, head=8)  # a v2 network
    cfg = TrainConfig(feature_version=V3, threads=1, name="r", version="r-1")
    with pytest.raises(ModelError, match="12 chroma rows"):
        train_model(train, val, cfg, refit=(network, {"version": "v2-net", "architecture": "keynet_eq"}),
                    log=lambda *_: None)


def test_a_v3_network_started_from_a_v2_one_is_that_model_until_it_trains(small_set, tmp_path):
    """`train --init-from`: the 12-row network's weights go into the 24-row one, its bass
    weights zero, so on v3 chroma it answers as the v2 network does on v2 chroma; training
    then goes on from there. Networks of another shape are refused."""
    import keras

    from keylib.errors import ModelError
    from keylib.training.networks import build_keynet_eq
    from keylib.training.scores import predict_exact
    from keylib.training.train import transfer_weights

    keras.utils.set_random_seed(2)
    v2_net = build_keynet_eq(rows=12, filters=8, mix=8, head=8, dropout=0.0)
    v3_net = build_keynet_eq(rows=24, filters=8, mix=8, head=8, dropout=0.0)
    y = synth.chord_progression(14, duration_s=6.0, sr=features.SAMPLE_RATE)
    v2, v3 = (features.chroma(y, feature_version=v) for v in (features.FEATURE_VERSION_V2, V3))
    assert np.abs(predict_exact(v3_net, [v3], 5) - predict_exact(v2_net, [v2], 5)).max() > 1e-3  # not yet
    transfer_weights(v2_net, v3_net)
    np.testing.assert_allclose(predict_exact(v3_net, [v3], 5), predict_exact(v2_net, [v2], 5), atol=1e-6)
    with pytest.raises(ModelError, match="cannot start"):
        transfer_weights(build_keynet_eq(rows=12, filters=4, mix=8, head=8), v3_net)
    with pytest.raises(ModelError, match="cannot start"):
        transfer_weights(v3_net, v2_net)  # a band cannot be dropped

    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"], feature_version=V3)
    train, val, _ = split_dataset(df, val_fraction=0.5, seed=1)
    cfg = TrainConfig(arch="keynet_eq", feature_version=V3, epochs=1, batch_size=8, batches_per_epoch=2, seed=3,
                      threads=1, filters=8, mix=8, head=8, name="warm", version="warm-1")
    net, card = train_model(train, val, cfg, log=lambda *_: None,
                            init_from=(v2_net, {"version": "v2-net", "feature_version": features.FEATURE_VERSION_V2}))
    assert card["training"]["initialised_from"] == {"version": "v2-net", "feature_version": features.FEATURE_VERSION_V2}
    assert net.input_shape[-1] == 24


def test_validation_is_scored_by_the_sound_source_that_rendered_it_and_by_source(small_set):
    """The card's validation.by_sound_source (by soundfont) and by_source (by the music's
    source): n, whole, excerpt and their mean (fifths both ways), mean_fifth_up (mir_eval's
    convention), and the errors of both views by kind, the fifth below apart."""
    df = load_dataset([small_set / "chroma"], [small_set / "manifest.csv"])
    train, val, _ = split_dataset(df, val_fraction=0.5, seed=1)
    val = val.assign(soundfont=["freepats" if i % 2 else "FluidR3_GM" for i in range(len(val))],
                     source=["pop909" if i % 3 else "polish-scores" for i in range(len(val))])
    cfg = TrainConfig(epochs=1, batch_size=8, batches_per_epoch=2, seed=3, threads=1, filters=8, mix=8, head=8,
                      name="s", version="s-1")
    _, card = train_model(train, val, cfg, log=lambda *_: None)
    for entry, column in (("by_sound_source", "soundfont"), ("by_source", "source")):
        groups = card["validation"][entry]
        assert set(groups) == set(val[column]) and sum(s["n"] for s in groups.values()) == len(val)
        for s in groups.values():
            assert set(s) == {"n", "whole", "excerpt", "mean", "mean_fifth_up", "errors"}
            assert s["mean"] == pytest.approx((s["whole"] + s["excerpt"]) / 2)
            assert 0.0 <= s["mean_fifth_up"] <= s["mean"] <= 1.0  # an upward-only fifth can only score less
            errors = s["errors"]
            assert min(errors.values()) >= 0 and sum(errors.values()) <= 2 * s["n"]  # two views per track
            # what the fifth below costs: half a point in the both-fifths score only
            assert s["mean"] - s["mean_fifth_up"] == pytest.approx(0.5 * errors["fifth_below"] / (2 * s["n"]))
