"""Real servers for the S3, nightly, crash and cluster tests, on 127.0.0.1 only.

* :class:`MotoServer`: moto's S3 server (``moto_server``), real HTTP; state in memory.
* :class:`StandaloneCluster`: a Spark standalone master and N workers started from
  PySpark's own distribution (``spark-class ...Master`` / ``...Worker``).
* :func:`submit`: ``./submit.sh JOB ...`` as a subprocess in its own process group.

Everything is stopped in teardown; every wait is bounded. The dummy AWS credentials are
set in this process's environment at import (before any JVM starts) so that local-mode
Python workers inherit them through boto3's usual chain, as a real node would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SPARK_HOME = Path(__import__("pyspark").__file__).resolve().parent

# Distinctive dummy values: tests grep outputs and logs for them.
ACCESS_KEY_ID = "AKIAKEYLIBDUMMY7Q3Z"
SECRET_ACCESS_KEY = "keylibTestSecret/NeverLog+Me0123456789abcd"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _name, _value in CREDENTIALS.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT``; ``stop()`` then ``start()`` gives an empty store."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_dir = log_dir

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        log = open(self.log_dir / f"moto-{self.port}.log", "ab") if self.log_dir else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(lambda: _port_open(self.port) or self.proc.poll() is not None, timeout=30, what="moto_server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
        return self

    def stop(self) -> None:
        _stop(self.proc, timeout=5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crashed or unreachable store."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1",
        ).client("s3", endpoint_url=self.endpoint)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: boto3's usual chain finds this server."""
        return {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}


@contextlib.contextmanager
def local_or_s3(kind: str, tmp_path: Path, *, local: Path, s3_uri: str):
    """``(uri, [s3] settings)`` of a root in a local folder (``kind="local"``) or under a
    bucket of a fresh moto server (``kind="s3"``, stopped on exit): the same test for both."""
    if kind == "local":
        yield str(local), {}
        return
    server = MotoServer(log_dir=tmp_path).start()
    try:
        server.client().create_bucket(Bucket=s3_uri[len("s3://"):].split("/", 1)[0])
        yield s3_uri, {"endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 2}
    finally:
        server.stop()


@pytest.fixture
def moto_server(tmp_path):
    server = MotoServer(log_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- audio in a bucket

_CLIPS: dict[tuple[int, float, str], bytes] = {}


def clip_bytes(index: int, *, duration_s: float = 3.0, ext: str = ".wav", sr: int = 22050) -> bytes:
    """A short generated chord progression in key ``index % 24``, encoded as ``ext``."""
    import soundfile as sf

    from keylib.synth import chord_progression

    key = (index, duration_s, ext)
    if key not in _CLIPS:
        samples = chord_progression(index % 24, duration_s=duration_s, sr=sr, seed=index)
        buf = io.BytesIO()
        sf.write(buf, samples, sr, format={".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[ext])
        _CLIPS[key] = buf.getvalue()
    return _CLIPS[key]


def fill_bucket(server: MotoServer, bucket: str, prefix: str, n: int, *, start: int = 0,
                duration_s: float = 3.0) -> list[str]:
    """Create ``bucket`` (if needed) and upload ``n`` clips; returns their keys."""
    s3 = server.client()
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    keys = []
    for i in range(start, start + n):
        key = f"{prefix}/track{i:04d}.wav"
        s3.put_object(Bucket=bucket, Key=key, Body=clip_bytes(i % 12, duration_s=duration_s))
        keys.append(key)
    return keys


# ---------------------------------------------------------------- jobs as subprocesses

def make_model(folder: Path) -> Path:
    """The shipped model when there is one, else a small untrained network with a valid card
    (keys are arbitrary, but every row goes through the real inference path)."""
    from keylib import serving
    from keylib.training import networks as km
    from keylib.features import FEATURE_VERSION

    if serving.SHIPPED_MODEL.is_file():
        return serving.SHIPPED_MODEL.with_suffix(".keras")
    path = Path(folder) / "untrained.keras"
    if not path.exists():
        km.configure_tensorflow(1)
        km._layers()
        net = km.build_keynet_eq()
        net.save(str(path))
        km.export_onnx(net, path.with_suffix(".onnx"))
        serving.card_path(path).write_text(json.dumps({
            "name": "untrained", "version": "untrained-test", "architecture": "keynet_eq",
            "feature_version": FEATURE_VERSION, "input": {"frames_per_step": 5, "min_steps": 8},
        }))
    return path


def write_conf(path: Path, *, endpoint: str = "", max_attempts: int = 3, max_failed_share: float = 0.05,
               tracks_per_partition: int = 4, master: str = "local[2]", model: Path | str = "") -> Path:
    """A small test configuration (TOML) over the defaults."""
    path.write_text(
        f'[spark]\nmaster = "{master}"\ndriver_memory = "1g"\nexecutor_memory = "1g"\n'
        f"tracks_per_partition = {tracks_per_partition}\n"
        '[spark.conf]\n"spark.ui.enabled" = "false"\n"spark.ui.showConsoleProgress" = "false"\n'
        '"spark.sql.shuffle.partitions" = "4"\n'
        f'[s3]\nendpoint_url = "{endpoint}"\nmax_attempts = {max_attempts}\n'
        f"[nightly]\nmax_failed_share = {max_failed_share}\n"
        f'[model]\npath = "{model}"\n'
    )
    return path


def start_submit(job: str, *args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start ``./submit.sh JOB ARGS`` in its own process group (killable as a whole)."""
    env = {**os.environ, **(env or {})}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    out = open(log, "wb") if log else subprocess.PIPE
    return subprocess.Popen(
        [str(REPO / "submit.sh"), job, *args], cwd=REPO, env=env,
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )


def submit(job: str, *args: str, env: dict | None = None, timeout: float = 300, log: Path | None = None):
    """Run ``./submit.sh JOB ARGS`` to completion; returns ``(returncode, output)``."""
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"keylib-submit-{os.getpid()}-{time.time_ns()}.log"
    proc = start_submit(job, *args, env=env, log=log)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc, timeout=5)
        raise
    return proc.returncode, log.read_text(errors="replace")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group (driver JVM, Python workers, submit.sh)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# ---------------------------------------------------------------- Spark standalone

class StandaloneCluster:
    """A Spark standalone master and ``n_workers`` workers (1 core each) on 127.0.0.1.

    Workers get a node-like environment: no PYTHONPATH, no keylib, no venv on PATH; only
    Java, Spark and the (dummy) AWS credentials of boto3's chain.
    """

    def __init__(self, workdir: Path, n_workers: int = 2, worker_memory: str = "2g"):
        self.workdir = Path(workdir)
        self.n_workers = n_workers
        self.worker_memory = worker_memory
        self.port = free_port()
        self.ui_port = free_port()
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR", "USER")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if str(VENV_BIN) != p)
        env.update(CREDENTIALS)
        env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
                   SPARK_LOG_DIR=str(self.workdir / "logs"))
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args], env=self._env(), cwd=self.workdir,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    def start(self, timeout: float = 60) -> "StandaloneCluster":
        """Start the master, then the workers; ``timeout`` bounds the master's start (the
        workers get 1.5 times it)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        master = self._spawn("master", "org.apache.spark.deploy.master.Master",
                             "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port))
        wait_for(lambda: _port_open(self.port) or master.poll() is not None, timeout=timeout, what="Spark master")
        for i in range(self.n_workers):
            self._spawn(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.url,
                        "--host", "127.0.0.1", "--cores", "1", "--memory", self.worker_memory,
                        "--webui-port", str(free_port()), "--work-dir", str(self.workdir / f"work{i}"))
        wait_for(lambda: self.alive_workers() >= self.n_workers, timeout=1.5 * timeout, interval=0.5,
                 what=f"{self.n_workers} Spark workers")
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc, timeout=20)
        self.procs = []

    def executor_dirs(self) -> list[Path]:
        return sorted(self.workdir.glob("work*/app-*/*"))

    def remove_app_dirs(self) -> None:
        """Delete the applications' folders under the workers' work dirs. Each executor's
        holds the unpacked environment (hundreds of MB); Spark's own cleanup
        (``spark.worker.cleanup.*``) only runs every half hour."""
        for app in self.workdir.glob("work*/app-*"):
            shutil.rmtree(app, ignore_errors=True)
