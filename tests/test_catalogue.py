"""Catalogue listing, incremental selection and configuration (Spark and train.toml too)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from keylib import synth
from keylib.catalogue import URL_FINGERPRINT, list_tracks
from keylib.config import load_config
from keylib.errors import ConfigError, InputError
from keylib.incremental import select_tracks
from keylib.training.settings import TRAINSET_DEFAULTS, load_train_config
from servers import clip_bytes, fill_bucket, moto_server  # noqa: F401 - moto_server is a fixture

REPO = Path(__file__).resolve().parent.parent


def _clip(path):
    return synth.write_audio(path, synth.tone(60, 0.5, sr=8000), sr=8000)


def test_folder_lists_audio_recursively_and_ignores_other_files(tmp_path, monkeypatch, caplog):
    from keylib.storage import io

    for name in ("a.mp3", "sub/b.wav", "sub/deeper/c.flac", "d.ogg"):
        _clip(tmp_path / name)
    (tmp_path / "cover.jpg").write_bytes(b"jpeg")
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setattr(io, "LISTING_PROGRESS_S", 0.0)  # a progress line for every folder
    with caplog.at_level("INFO", logger="keylib"):
        frame = list_tracks(str(tmp_path))
    assert f"listing {tmp_path.resolve()}: 6 entries so far" in caplog.text  # every file walked, audio or not
    assert sorted(frame["track_id"]) == ["a.mp3", "d.ogg", "sub/b.wav", "sub/deeper/c.flac"]
    assert frame["fingerprint"].str.match(r"^\d+:\d+$").all()
    assert (frame["size_bytes"] > 0).all()


def test_manifest_relative_paths_truth_and_missing_files(tmp_path):
    _clip(tmp_path / "audio" / "x.wav")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({
        "path": ["audio/x.wav", str(tmp_path / "audio" / "x.wav"), "audio/gone.mp3"],
        "track_id": ["rel", "abs", ""],
        "key": ["Bb:min", "", "c#m"],
        "source": ["pop", "pop", "folk"],
    }).to_csv(manifest, index=False)
    frame = list_tracks(str(manifest)).set_index("track_id")
    assert frame.loc["rel", "uri"] == str(tmp_path / "audio" / "x.wav")
    assert frame.loc["rel", "fingerprint"] == frame.loc["abs", "fingerprint"]
    assert frame.loc["audio/gone.mp3", "fingerprint"] == "missing"  # track_id defaults to the path
    assert frame.loc["rel", "truth_key"] == "Bb:min" and pd.isna(frame.loc["abs", "truth_key"])


def test_manifest_with_s3_rows(tmp_path, moto_server, spark, config):
    """s3:// paths in a CSV manifest: fingerprints from HEAD (ETag:size), a deleted object is
    missing, and executors read the others; local rows in the same manifest work as usual."""
    from keylib.features import FEATURE_VERSION
    from keylib.track import ExtractSettings
    from keylib.spark.workers import extract_dataframe

    fill_bucket(moto_server, "music", "m", 2)
    synth.write_audio(tmp_path / "local.wav", synth.chord_progression(21, duration_s=3.0, seed=2), sr=22050)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({
        "path": ["s3://music/m/track0000.wav", "s3://music/m/track0001.wav", "s3://music/m/gone.wav", "local.wav"],
        "track_id": ["s3-a", "s3-b", "s3-gone", "here"],
        "key": ["C major", "Db major", "", "A minor"],
    }).to_csv(manifest, index=False)
    s3conf = {"endpoint_url": moto_server.endpoint, "region": "us-east-1", "max_attempts": 2}
    frame = list_tracks(str(manifest), s3_settings=s3conf).set_index("track_id")
    head = moto_server.client().head_object(Bucket="music", Key="m/track0001.wav")
    assert frame.loc["s3-b", "uri"] == "s3://music/m/track0001.wav"
    assert frame.loc["s3-b", "fingerprint"] == f"{head['ETag'].strip(chr(34))}:{len(clip_bytes(1))}"
    assert frame.loc["s3-b", "size_bytes"] == len(clip_bytes(1)) and frame.loc["s3-b", "truth_key"] == "Db major"
    assert frame.loc["s3-gone", "fingerprint"] == "missing" and pd.isna(frame.loc["s3-gone", "size_bytes"])
    assert frame.loc["here", "uri"] == str(tmp_path / "local.wav")

    settings = ExtractSettings.from_config({**config, "s3": s3conf}, feature_version=FEATURE_VERSION)
    rows = (extract_dataframe(spark, frame.reset_index(), settings=settings, tracks_per_partition=2)
            .select("track_id", "status", "error", "n_frames").toPandas().set_index("track_id"))
    assert rows.loc["s3-gone", "status"] == "missing" and "s3://music/m/gone.wav" in rows.loc["s3-gone", "error"]
    for track in ("s3-a", "s3-b", "here"):
        assert rows.loc[track, "status"] == "ok" and rows.loc[track, "n_frames"] > 0, rows.loc[track, "error"]


def _odd_folder(root):
    """A folder holding every kind of entry a listing must give a row: a clip, a dangling
    symlink, a name with '?', a name that is not valid UTF-8 (with '|' and a newline too),
    a FIFO named like audio. The clips last 1.5 s: long enough to be read and decoded."""
    for name in ("good.wav", "what?x=1.wav"):
        synth.write_audio(root / name, synth.tone(60, 1.5, sr=8000), sr=8000)
    os.symlink(root / "deleted.mp3", root / "dangling.mp3")
    odd = os.fsencode(root / "sub") + b"/caf\xe9 | 1\n.wav"
    os.makedirs(os.path.dirname(odd))
    fd = os.open(odd, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, (root / "good.wav").read_bytes())
    os.close(fd)
    os.mkfifo(root / "x.mp3")
    return odd


def _list_in_time(uri, **kwargs):
    """``list_tracks`` in a thread: a listing that opened the FIFO would block, and fail here."""
    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("frame", list_tracks(uri, **kwargs)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the listing blocked (did it open the FIFO?)"
    return result["frame"]


def test_folder_gives_every_odd_entry_a_row_that_arrow_can_write(tmp_path):
    import pyarrow as pa

    from keylib.catalogue import MISSING_FINGERPRINT
    from keylib.storage.io import local_path

    odd = _odd_folder(tmp_path)
    frame = _list_in_time(str(tmp_path))
    odd_id = "sub/caf\\xe9 | 1\n.wav"  # the byte 0xE9 kept as an escape, valid UTF-8
    assert sorted(frame["track_id"]) == sorted(["good.wav", "dangling.mp3", "what?x=1.wav", odd_id, "x.mp3"])
    rows = frame.set_index("track_id")
    assert rows.loc["dangling.mp3", "fingerprint"] == MISSING_FINGERPRINT
    assert pd.isna(rows.loc["dangling.mp3", "size_bytes"])
    assert rows.loc["x.mp3", "size_bytes"] == 0 and rows.loc["x.mp3", "uri"] == str(tmp_path / "x.mp3")
    assert rows.loc["what?x=1.wav", "uri"] == str(tmp_path / "what?x=1.wav")
    uri = rows.loc[odd_id, "uri"]
    assert uri.startswith("file://") and uri.isascii()
    assert os.fsencode(local_path(uri)) == odd  # the URI names the same bytes again
    assert rows.loc[odd_id, "size_bytes"] == os.stat(odd).st_size
    table = pa.Table.from_pandas(frame)  # no lone surrogates: Arrow writes every row
    assert table.num_rows == 5


def test_a_presigned_url_in_a_manifest_keeps_no_credential(tmp_path):
    token = "IQoJb3JpZ2luX2VjEXAMPLETOKEN"
    signature = "f3a0c5e9d1b7EXAMPLESIG"
    presigned = (f"https://music.s3.amazonaws.com/a/b.mp3?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 f"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
                 f"&X-Amz-Security-Token={token}&X-Amz-Signature={signature}&response-content-type=audio%2Fmpeg")
    _clip(tmp_path / "here.wav")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [presigned, f"https://cdn.example.com/c.mp3?token={token}", "here.wav"],
                  "track_id": ["", "cdn", ""], "key": ["C major", "", ""]}).to_csv(manifest, index=False)
    frame = list_tracks(str(manifest))
    stripped = "https://music.s3.amazonaws.com/a/b.mp3?response-content-type=audio%2Fmpeg"
    rows = frame.set_index("track_id")
    assert list(rows.index) == [stripped, "cdn", "here.wav"]
    assert rows.loc[stripped, "uri"] == stripped and rows.loc["cdn", "uri"] == "https://cdn.example.com/c.mp3"
    for track in (stripped, "cdn"):
        # a constant fingerprint: its unsupported_source row is not redone every night
        assert rows.loc[track, "fingerprint"] == URL_FINGERPRINT and pd.isna(rows.loc[track, "size_bytes"])
    text = frame.to_csv() + repr(frame.to_dict("records"))
    for secret in (token, signature, "AKIAIOSFODNN7EXAMPLE", "X-Amz"):
        assert secret not in text, secret


def test_a_refused_head_is_the_tracks_problem_not_the_runs(tmp_path, moto_server, spark, config):
    """S3 answers 403 (a bucket policy denies the object, as S3 does for a missing key to a
    caller without ListBucket): the manifest still lists, that track alone gets a
    read_error row; the odd folder entries and a URL get their own status rows."""
    import json

    from keylib.features import FEATURE_VERSION

    from keylib.track import ExtractSettings
    from keylib.spark.workers import extract_dataframe

    fill_bucket(moto_server, "music", "m", 2)
    moto_server.client().put_bucket_policy(Bucket="music", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": ["s3:GetObject", "s3:HeadObject"],
                       "Resource": ["arn:aws:s3:::music/m/track0001.wav", "arn:aws:s3:::music/m/unlisted.wav"]}],
    }))
    manifest = tmp_path / "m.csv"
    pd.DataFrame({
        "path": ["s3://music/m/track0000.wav", "s3://music/m/track0001.wav", "s3://music/m/unlisted.wav",
                 "s3://music/m/gone.wav", "https://cdn.example.com/c.mp3?sig=abc"],
        "track_id": ["ok", "denied", "denied-absent", "gone", "url"],
    }).to_csv(manifest, index=False)
    s3conf = {"endpoint_url": moto_server.endpoint, "region": "us-east-1", "max_attempts": 2}
    listing = list_tracks(str(manifest), s3_settings=s3conf)  # no InputError
    rows = listing.set_index("track_id")
    assert rows.loc["ok", "fingerprint"].endswith(f":{len(clip_bytes(0))}")
    for track in ("denied", "denied-absent"):  # no fingerprint: the worker's GET says why, every run
        assert rows.loc[track, "fingerprint"] is None and pd.isna(rows.loc[track, "size_bytes"]), track
    assert rows.loc["url", "fingerprint"] == URL_FINGERPRINT
    assert rows.loc["gone", "fingerprint"] == "missing"

    folder = tmp_path / "odd"
    folder.mkdir()
    _odd_folder(folder)
    tracks = pd.concat([listing, _list_in_time(str(folder))], ignore_index=True)
    settings = ExtractSettings.from_config({**config, "s3": s3conf}, feature_version=FEATURE_VERSION)
    status = (extract_dataframe(spark, tracks, settings=settings, tracks_per_partition=2)
              .select("track_id", "status", "error").toPandas().set_index("track_id"))
    assert len(status) == len(tracks)
    expected = {"ok": "ok", "denied": "read_error", "denied-absent": "read_error", "gone": "missing",
                "url": "unsupported_source", "good.wav": "ok", "what?x=1.wav": "ok", "sub/caf\\xe9 | 1\n.wav": "ok",
                "dangling.mp3": "missing", "x.mp3": "not_a_file"}
    assert status["status"].to_dict() == expected, status["error"].to_dict()
    assert "403" in status.loc["denied", "error"] and "sig=abc" not in " ".join(status["error"].dropna())


@pytest.mark.parametrize(
    "content, message",
    [("file,key\na.mp3,C major\n", "no 'path' column"),
     ("path,track_id\na.mp3,t\nb.mp3,t\n", "track_id 't' twice with different paths"),
     ("path,key\na.mp3,C major\na.mp3,D major\n", "track_id '.*a.mp3' twice")],
)
def test_malformed_manifest_is_an_input_error(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    with pytest.raises(InputError, match=message):
        list_tracks(str(manifest))


def test_a_line_repeated_word_for_word_lists_its_track_once(tmp_path, caplog):
    (tmp_path / "a.mp3").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,key\na.mp3,C major\nb.mp3,\na.mp3,C major\n a.mp3 ,C major\n,D minor\n")
    with caplog.at_level("WARNING", logger="keylib"):
        tracks = list_tracks(str(manifest))
    assert sorted(tracks["track_id"]) == ["a.mp3", "b.mp3"]
    assert tracks.set_index("track_id").loc["a.mp3", "truth_key"] == "C major"
    assert "repeats 2 line(s) word for word" in caplog.text and "1 line(s) without a path" in caplog.text


def test_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list_tracks(str(tmp_path / "nope"))


def _listing(fingerprints):
    return pd.DataFrame({"track_id": list(fingerprints), "fingerprint": list(fingerprints.values())})


def test_select_tracks_new_changed_retry_version_force():
    listing = _listing({"same": "1:1", "changed": "2:9", "new": "3:3", "retry": "4:4", "oldver": "5:5"})
    previous = pd.DataFrame({
        "track_id": ["same", "changed", "retry", "oldver", "deleted"],
        "fingerprint": ["1:1", "2:2", "4:4", "5:5", "6:6"],
        "status": ["ok", "ok", "read_error", "decode_error", "ok"],
        "feature_version": ["v2", "v2", "v2", "v1", "v2"],
    })
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v2"})
    assert sorted(todo["track_id"]) == ["changed", "new", "oldver", "retry"]
    assert list(skipped["track_id"]) == ["same"]
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v2"}, force=True)
    assert len(todo) == 5 and skipped.empty


def test_shipped_conf_files_load_and_local_spells_out_the_defaults():
    from pathlib import Path

    from keylib.config import DEFAULTS

    conf = Path(__file__).resolve().parent.parent / "conf"
    assert load_config(conf / "local.toml") == DEFAULTS
    assert load_config(conf / "nightly.toml")["nightly"]["max_failed_share"] == 0.02
    assert load_config(conf / "cluster.toml")["spark"]["conf"]["spark.task.maxFailures"] == "4"


def test_driver_java_options_and_the_class_archive(tmp_path, monkeypatch):
    from keylib.config import CLASS_ARCHIVE_ENV, _submit_args, driver_java_options

    spark = load_config(None)["spark"]
    archive = tmp_path / "spark-classes.jsa"
    monkeypatch.setenv(CLASS_ARCHIVE_ENV, str(archive))
    assert driver_java_options(spark) == "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # no file: not named
    archive.write_bytes(b"x")
    assert driver_java_options(spark).endswith(f" -XX:SharedArchiveFile={archive}")
    args = _submit_args(None)
    java = args[args.index("--driver-java-options") + 1]
    assert "-Dlog4j2.configurationFile=file:" in java and f"-XX:SharedArchiveFile={archive}" in java
    assert "-XX:TieredStopAtLevel=1" in java


def test_config_defaults_and_validation(tmp_path):
    config = load_config(None)
    assert config["spark"]["master"] == "local[2]" and config["audio"]["max_duration_s"] == 600.0
    for text, message in [
        ("[audio]\nmax_duration_s = -1\n", "must be positive"),
        ("[audio]\nmax_duration = 5\n", "unknown setting 'audio.max_duration'"),
        ("[spark]\narrow_batch_rows = 'many'\n", "must be int"),
        ("[nightly]\nmax_failed_share = 2.0\n", "within 0..1"),
        ("not toml [", "not valid TOML"),
        ('[spark.conf]\n"spark.python.daemon.module" = "keylib.daemon"\n', "that module is now 'keylib.spark.daemon'"),
    ]:
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


# ---------------------------------------------------------------- conf/train.toml

def test_train_conf_loads_and_feeds_the_training_code():
    from keylib.training.settings import TrainConfig

    config = load_train_config(REPO / "conf" / "train.toml")
    assert set(config) == {"trainset", "train"} and set(config["trainset"]) == set(TRAINSET_DEFAULTS)
    assert config["trainset"]["seed"] == 11 and config["train"]["arch"] == "keynet_eq_relu"
    train = TrainConfig(**config["train"])  # every [train] key is a TrainConfig field
    assert set(config["train"]) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert not {"name", "version", "threads", "max_steps_per_epoch"} & set(config["train"])  # flags
    assert train.epochs == config["train"]["epochs"]
    defaults = load_train_config(None)  # conf/train.toml itself
    assert defaults == config


def test_train_conf_holds_only_the_recipes_changes_to_the_defaults():
    """The training defaults and conf/train.toml are one recipe, each value in one place."""
    import tomllib

    from keylib.training.settings import REPO_ROOT, TRAINSET_DEFAULTS, TrainConfig

    written = tomllib.loads((REPO / "conf" / "train.toml").read_text())
    defaults = TrainConfig()
    assert written["train"] and all(getattr(defaults, k) != v for k, v in written["train"].items())
    assert all(TRAINSET_DEFAULTS[k] != v for k, v in written["trainset"].items())
    recipe = TrainConfig(**load_train_config(None)["train"])
    assert recipe.arch == "keynet_eq_relu" and recipe.ema == written["train"]["ema"]
    assert not Path(written["trainset"]["pop909"]).is_absolute()  # no machine paths in conf/
    assert load_train_config(None)["trainset"]["pop909"] == str((REPO_ROOT / written["trainset"]["pop909"]).resolve())


def test_train_conf_validation(tmp_path):
    for text, message in [
        ("[train]\nepoch = 3\n", "unknown setting 'train.epoch'"),
        ("[trainset]\nworkers = 'two'\n", "trainset.workers must be int, got str 'two'"),
        ("[train]\nname = 'x'\n", "unknown setting 'train.name'"),  # a flag, not a setting
        ("[model]\npath = 'x'\n", "unknown setting 'model'"),
        ("[train]\nval_fraction = 1.5\n", "train.val_fraction must be within 0..1"),
        ("[train]\nema = 1.5\n", "train.ema must be within 0..1"),
        ("[train]\nfeature_version = 'chroma-v0'\n", "train.feature_version must be one of chroma-stft-11k-5fps-v2, "
                                                      "chroma-stft-11k-5fps-v3, got 'chroma-v0'"),
        ("[trainset]\nworkers = 0\n", "trainset.workers must be positive"),
        ("[train]\nlearning_rate = 1\n", None),  # an int where a float is expected is fine
    ]:
        path = tmp_path / "t.toml"
        path.write_text(text)
        if message is None:
            assert load_train_config(path)["train"]["learning_rate"] == 1.0
            continue
        with pytest.raises(ConfigError, match=message):
            load_train_config(path)


def test_make_training_set_help_says_what_each_trainset_flag_does(tmp_path):
    from keylib.training.settings import TRAINSET_SETTINGS

    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "1000"}  # argparse wraps at hyphens
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "make_training_set.py"), "--help"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for name, (_, meaning) in TRAINSET_SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        assert f"{flag} {name.upper()} {meaning} (else [trainset] {name} of --train-conf)" in text, flag


@pytest.mark.parametrize("job, text, message", [
    ("train", "[train]\nepochz = 3\n", "unknown setting 'train.epochz'"),
    ("train", "[trainset]\nchorales = 'many'\n", "trainset.chorales must be int, got str 'many'"),
    ("train", "[train]\narch = 'resnet'\n", "train.arch must be one of keycnn_ref, keynet_eq, keynet_eq_relu, keynet_eq_small, got 'resnet'"),
    ("train", "[train]\narch = 'keycnn_ref'\nfilters = 8\nhead = 16\n",
     "train.filters, train.head shape the keynet_eq networks, not keycnn_ref"),
    ("train", "[train]\nmix = -1\n", "train.mix must not be negative"),
    ("make_training_set", "[trainset]\nprocedurall = 5\n", "unknown setting 'trainset.procedurall'"),
    ("make_training_set", "[train]\nepochs = 4.5\n", "train.epochs must be int, got float 4.5"),
])
def test_training_jobs_reject_a_bad_train_conf_with_exit_code_2(tmp_path, job, text, message):
    conf = tmp_path / "train.toml"
    conf.write_text(text)
    args = ["--output", str(tmp_path / "out"), "--train-conf", str(conf)]
    if job == "train":
        args += ["--features", str(tmp_path / "none.parquet")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "configuration error" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was rendered or trained
