"""Shared fixtures: one real local[2] Spark session and one generated sample catalogue."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before pyspark starts a JVM: loopback only, and workers run this interpreter.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as submit.sh: one task per core
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def config():
    """The default configuration (conf/local.toml)."""
    from keylib.config import load_config

    return load_config(REPO / "conf" / "local.toml")


@pytest.fixture(scope="session")
def spark(config):
    """A real local[2] Spark session shared by the whole test run."""
    from keylib.spark.session import get_session

    session = get_session(config, app_name="keylib-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    """The sample catalogue (24 keys x mp3 + wav, 4 s clips) and its manifest.csv."""
    from keylib.synth import make_sample_catalogue

    return make_sample_catalogue(tmp_path_factory.mktemp("sample"), duration_s=4.0)
