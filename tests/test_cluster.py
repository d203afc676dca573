"""./submit.sh --master spark://... against a real Spark standalone master and two workers.

The workers run with a node-like environment (no keylib, no venv, no PYTHONPATH): the
job only works if the packed environment and the keylib code (with the model) reach the
executors through --archives.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from servers import REPO, StandaloneCluster, submit, write_conf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StandaloneCluster(tmp_path_factory.mktemp("cluster"), n_workers=2, worker_memory="2g")
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _apps_removed_after_each_test(request):
    """Each test's application leaves the environment unpacked once per worker."""
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").remove_app_dirs()


def test_packed_environment_is_lean_and_built_once(tmp_path):
    from keylib.spark import cluster as kc
    from keylib.serving import SHIPPED_MODEL

    first = kc.submit_args(REPO)
    archive = kc.env_archive(REPO)
    mtime = archive.stat().st_mtime_ns
    assert kc.submit_args(REPO) == first and archive.stat().st_mtime_ns == mtime  # not repacked
    assert "--archives" in first and any(a.startswith("spark.pyspark.python=/") for a in first)
    import tarfile
    import zipfile

    names = zipfile.ZipFile(kc.code_archive(REPO)).namelist()
    assert "keylib/__init__.py" in names and "keylib/serving.py" in names and "sitecustomize.py" in names
    assert f"keylib/models/{SHIPPED_MODEL.name}" in names and "keylib/models/keynet-eq.json" in names
    assert not any(n.endswith(".keras") for n in names)  # training files stay home
    # Only what serving needs: no TensorFlow, no training or test extras, no second PySpark.
    dists = kc.executor_distributions()
    assert {"numpy", "soxr", "onnxruntime", "pandas", "pyarrow", "boto3", "soundfile"} <= set(dists)
    assert not {"tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "pytest", "moto", "music21",
                "pyspark", "py4j", "librosa", "scipy"} & set(dists)
    with tarfile.open(archive) as tar:
        tops = {Path(m).parts[3] for m in tar.getnames() if len(Path(m).parts) > 3}
    assert {"numpy", "soxr", "onnxruntime"} <= tops
    assert not {"tensorflow", "keras", "pyspark", "py4j", "pytest", "moto", "librosa", "scipy"} & tops
    assert archive.stat().st_size < 800e6, f"{archive.stat().st_size / 1e6:.0f} MB"


def test_submit_against_standalone_cluster(cluster, tmp_path):
    from keylib.synth import chord_progression, write_audio

    catalogue = tmp_path / "catalogue"
    for i in range(6):
        write_audio(catalogue / f"clip{i}.wav", chord_progression(i * 2, duration_s=3.0, sr=22050), sr=22050)
    conf = write_conf(tmp_path / "cluster.toml", master=cluster.url, tracks_per_partition=2)
    out = tmp_path / "out"
    code, log = submit("nightly", "--conf", str(conf), "--master", cluster.url,
                       "--input", str(catalogue), "--output", str(out), timeout=420)
    assert code == 0, log
    assert "listed 6, new 6, skipped 0, failed 0" in log, log
    keys = ds.dataset(str(out / "keys"), format="parquet", partitioning="hive",
                      ignore_prefixes=["_", "."]).to_table().to_pandas()
    assert sorted(keys["track_id"]) == [f"clip{i}.wav" for i in range(6)]
    assert set(keys["status"]) == {"ok"} and keys["key"].notna().all()
    # The executors ran on the workers, from the unpacked archives.
    executor_dirs = cluster.executor_dirs()
    assert len({d.parent.parent.name for d in executor_dirs}) == 2, executor_dirs  # both workers
    sites = [d / "environment" / "lib" / "python3.11" / "site-packages" for d in executor_dirs]
    assert any((site / "onnxruntime").is_dir() for site in sites)
    assert not any((site / name).exists() for site in sites for name in ("tensorflow", "pyspark"))
    assert any((d / "keylib_code" / "keylib" / "__init__.py").exists() for d in executor_dirs)


def test_nightly_on_cluster_with_output_on_s3(cluster, tmp_path):
    """The standalone cluster's executors write the run's files to S3 themselves (Spark has
    no S3 connector here); the driver commits; `keylib keys` reads the result."""
    from keylib.storage import tables
    from keylib.serving import SHIPPED_MODEL
    from servers import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoServer, fill_bucket

    server = MotoServer(log_dir=tmp_path).start()
    try:
        fill_bucket(server, "music", "c", 4)
        server.client().create_bucket(Bucket="out")
        model = "" if SHIPPED_MODEL.is_file() else make_model(tmp_path)
        conf = write_conf(tmp_path / "cluster.toml", master=cluster.url, model=model, tracks_per_partition=1,
                          endpoint=server.endpoint)
        code, log = submit("nightly", "--conf", str(conf), "--master", cluster.url, "--input", "s3://music/c",
                           "--output", "s3://out/night", env=server.env(), timeout=420)
        assert code == 0, log
        assert "listed 4, new 4, skipped 0, failed 0" in log, log
        s3 = {"endpoint_url": server.endpoint, "region": "us-east-1"}
        keys = tables.read_rows("s3://out/night/keys", s3_settings=s3)
        assert sorted(keys["track_id"]) == [f"c/track{i:04d}.wav" for i in range(4)]
        assert set(keys["status"]) == {"ok"} and keys["key"].notna().all()
        assert ACCESS_KEY_ID not in log and SECRET_ACCESS_KEY not in log
    finally:
        server.stop()
