"""Per-track paths the main tests do not reach: a local file over ``audio.max_file_mb``,
``extract.hash_content = false``, and a batch whose prediction fails (``model_error``)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from keylib import features, synth
from keylib.catalogue import list_tracks
from keylib.spark.workers import extract_dataframe
from keylib.storage import io
from keylib.track import ExtractSettings, extract_track
from keylib.features import FEATURE_VERSION


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A folder with a small clip and a valid 2.5 MiB WAV (60 s at 22,050 Hz, 16 bit)."""
    folder = tmp_path_factory.mktemp("paths")
    synth.write_audio(folder / "small.wav", synth.chord_progression(0, duration_s=3.0, seed=1), sr=22050)
    synth.write_audio(folder / "large.wav", synth.chord_progression(7, duration_s=60.0, seed=2), sr=22050)
    assert (folder / "large.wav").stat().st_size > 2 * 2**20
    return folder


def _extract(spark, config, folder, **sections):
    settings = ExtractSettings.from_config({**config, **sections}, feature_version=FEATURE_VERSION)
    rows = extract_dataframe(spark, list_tracks(str(folder)), settings=settings, tracks_per_partition=1)
    return rows.select("track_id", "fingerprint", "identity", "size_bytes", "n_frames", "status", "error") \
        .toPandas().set_index("track_id")


def test_a_local_file_over_max_file_mb_is_too_large_and_not_read(spark, config, catalogue, monkeypatch):
    rows = _extract(spark, config, catalogue, audio={**config["audio"], "max_file_mb": 2})
    large, small = rows.loc["large.wav"], rows.loc["small.wav"]
    assert large["status"] == "too_large" and "audio.max_file_mb" in large["error"]
    assert "large.wav" in large["error"] and "above the limit of 2 MiB" in large["error"]
    assert large["size_bytes"] == (catalogue / "large.wav").stat().st_size  # from the listing
    assert pd.isna(large["identity"]) and pd.isna(large["n_frames"])  # never hashed nor decoded
    assert small["status"] == "ok" and small["n_frames"] > 0

    # The size is checked before the file is opened: reading it would fail this test.
    def no_open(*args, **kwargs):
        raise AssertionError(f"opened {args[0]}")

    monkeypatch.setattr(io, "open", no_open, raising=False)
    row = extract_track({"track_id": "large.wav", "uri": str(catalogue / "large.wav")},
                        settings=ExtractSettings(max_file_mb=2))
    assert row["status"] == "too_large", row["error"]


def test_hash_content_false_identifies_tracks_by_their_listing(spark, config, catalogue):
    by_stat = _extract(spark, config, catalogue, extract={"hash_content": False})
    by_hash = _extract(spark, config, catalogue, extract={"hash_content": True})
    for name in ("small.wav", "large.wav"):
        assert by_stat.loc[name, "status"] == by_hash.loc[name, "status"] == "ok"
        assert by_stat.loc[name, "identity"] == f"stat:{by_stat.loc[name, 'fingerprint']}"
        digest = hashlib.sha256((catalogue / name).read_bytes()).hexdigest()
        assert by_hash.loc[name, "identity"] == f"sha256:{digest}"
    assert by_stat.loc["small.wav", "fingerprint"].startswith(f"{(catalogue / 'small.wav').stat().st_size}:")


class FailsOnOneTrack:
    """The real served model, except that a batch holding ``poison`` fails as a runtime
    out of memory would (the failure ``predict_frame`` must confine to that batch)."""

    def __init__(self, model, poison: np.ndarray):
        self.model, self.poison = model, poison
        self.version, self.feature_version = model.version, model.feature_version

    def predict_probs(self, chromas):
        if any(c.shape == self.poison.shape and np.array_equal(c, self.poison) for c in chromas):
            raise MemoryError("failed to allocate 96 GiB for the network's input")
        return self.model.predict_probs(chromas)


def _chroma_rows(prefix, tensors, statuses):
    return pd.DataFrame([
        {"track_id": f"{prefix}{i}", "uri": f"/x/{prefix}{i}.wav", "identity": None, "extracted_at": None,
         "n_frames": None if c is None else c.shape[1], "feature_version": features.FEATURE_VERSION,
         "chroma": None if c is None else c.reshape(-1), "status": status,
         "error": None if status == "ok" else "not decodable audio"}
        for i, (c, status) in enumerate(zip(tensors, statuses))
    ])


def test_a_batch_whose_prediction_fails_gets_model_error_rows_and_other_batches_are_fine():
    from keylib.inference import predict_frame
    from keylib.serving import load_model

    clips = [features.chroma(synth.chord_progression(k, duration_s=6.0, sr=features.SAMPLE_RATE, seed=k))
             for k in (0, 9, 14, 19)]
    model = FailsOnOneTrack(load_model(), poison=clips[1])
    bad = predict_frame(_chroma_rows("a", [clips[0], clips[1], None], ["ok", "ok", "decode_error"]), model)
    good = predict_frame(_chroma_rows("b", [clips[2], clips[3]], ["ok", "ok"]), model)

    assert list(bad["status"]) == ["model_error", "model_error", "decode_error"]
    for error in bad["error"][:2]:
        assert error == "MemoryError: failed to allocate 96 GiB for the network's input"
    assert bad["error"][2] == "not decodable audio"  # the extraction failure is kept as it was
    assert bad["key"].isna().all() and bad["probs"].isna().all()
    assert (bad["model_version"] == model.version).all()

    assert list(good["status"]) == ["ok", "ok"] and good["error"].isna().all()
    assert list(good["key"]) == ["D minor", "G minor"]
    assert all(len(p) == 24 and abs(sum(p) - 1) < 1e-4 for p in good["probs"])
