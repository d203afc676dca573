"""Ship this project's Python environment to the executors of a Spark cluster.

``./submit.sh JOB --master spark://HOST:PORT ...`` calls ``python -m keylib.cluster
submit-args --root ROOT`` and appends what it prints (one spark-submit argument per line).
Following PySpark's "Python Package Management" guide (virtualenv + venv-pack):

* ``build/keylib-env-<hash>.tar``: the virtual environment packed by ``venv-pack``
  (dependencies: numpy, librosa, tensorflow, boto3...), unpacked by every executor as
  ``./environment`` through ``--archives``; executors run ``./environment/bin/python``.
  It is rebuilt only when the installed distributions change (the hash covers the Python
  version and the names of the ``*.dist-info`` folders). Left out: the editable-install
  hook of keylib (it points at this checkout, which cluster nodes do not have), Spark's
  own jars (every node has Spark) and TensorFlow's C headers. Uncompressed ``.tar``:
  packing 2 GB takes ~30 s instead of minutes, unpacking on executors is faster too.
* ``build/keylib-code-<hash>.zip``: the ``keylib`` package itself with its shipped model
  (``keylib/models/*.keras``), unpacked as ``./keylib_code`` and put on the executors'
  ``PYTHONPATH``. A folder rather than a ``--py-files`` zip, so that the model is a real
  file that Keras can open. Rebuilt when any file of the package changes.

Nodes need no keylib and no virtualenv, only Spark (same version) and the base Python
interpreter the venv was made from at the same path (``/usr/bin/python3.11``, say; see
``venv-pack --python-prefix`` otherwise), and Java. The driver keeps the local venv.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

__all__ = ["ENV_ALIAS", "CODE_ALIAS", "env_archive", "code_archive", "submit_args"]

ENV_ALIAS = "environment"
CODE_ALIAS = "keylib_code"
_PACKAGE_DIR = Path(__file__).resolve().parent
_EXCLUDES = (
    "*__editable__*",               # the editable hook names this checkout's path
    "*/site-packages/keylib-*.dist-info/*",
    "*/site-packages/pyspark/jars/*",  # JVM side: the cluster has its own Spark
    "*/site-packages/tensorflow/include/*",  # C headers, build time only
)


def _venv_prefix() -> Path:
    return Path(sys.prefix)


def _env_hash(prefix: Path) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update("\n".join(_EXCLUDES).encode() + b"copies-v2")
    site = Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["purelib"])
    for path in sorted(site.glob("*.dist-info")):
        if path.name.startswith("keylib-"):
            continue
        record = path / "RECORD"
        h.update(path.name.encode())
        if record.exists():
            h.update(hashlib.sha256(record.read_bytes()).digest())
    return h.hexdigest()[:12]


def _locked(build: Path):
    build.mkdir(parents=True, exist_ok=True)
    handle = open(build / ".pack.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # two submits at once: one packs, the other waits
    return handle


def env_archive(root: str | Path, *, prefix: str | Path | None = None) -> Path:
    """The packed virtual environment under ``ROOT/build/``, packed when missing or stale."""
    build = Path(root) / "build"
    prefix = Path(prefix) if prefix else _venv_prefix()
    target = build / f"keylib-env-{_env_hash(prefix)}.tar"
    if target.exists():
        return target
    with _locked(build):
        if target.exists():
            return target
        venv_pack = Path(sys.executable).parent / "venv-pack"
        command = [str(venv_pack) if venv_pack.exists() else "venv-pack",
                   "--prefix", str(prefix), "--output", str(target) + ".part",
                   "--format", "tar", "--force", "--quiet"]
        # Spark refuses to unpack symlinks that point outside the archive, and a venv's
        # bin/python3 is one (-> the base interpreter): ship a copy of the binary instead,
        # as `python -m venv --copies` would (it still needs the base install on the node).
        outside = {
            link.relative_to(prefix).as_posix(): link.resolve()
            for link in sorted((prefix / "bin").iterdir())
            if link.is_symlink() and Path(os.readlink(link)).is_absolute() and link.resolve().is_file()
        }
        for pattern in (*_EXCLUDES, *outside):
            command += ["--exclude", pattern]
        print(f"keylib: packing {prefix} for the executors into {target} (once per change)", file=sys.stderr)
        subprocess.run(command, check=True, stdout=sys.stderr)
        with tarfile.open(str(target) + ".part", "a") as tar:
            for name, real in outside.items():
                tar.add(str(real), arcname=name)
        os.replace(str(target) + ".part", target)
        for old in build.glob("keylib-env-*.tar"):
            if old != target:
                old.unlink(missing_ok=True)
    return target


def _package_files() -> list[Path]:
    return sorted(
        p for p in _PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    )


def code_archive(root: str | Path) -> Path:
    """``keylib/`` (code and shipped model) zipped under ``ROOT/build/``, when changed."""
    build = Path(root) / "build"
    files = _package_files()
    h = hashlib.sha256(_SITECUSTOMIZE.encode())
    for path in files:
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    target = build / f"keylib-code-{h.hexdigest()[:12]}.zip"
    if target.exists():
        return target
    with _locked(build):
        if not target.exists():
            part = Path(str(target) + ".part")
            with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("sitecustomize.py", _SITECUSTOMIZE)
                for path in files:
                    zf.write(path, "keylib/" + path.relative_to(_PACKAGE_DIR).as_posix())
            os.replace(part, target)
            for old in build.glob("keylib-code-*.zip"):
                if old != target:
                    old.unlink(missing_ok=True)
    return target


# Imported at start-up by every executor Python (it is first on PYTHONPATH): puts the
# unpacked environment's site-packages (and its .pth files) ahead of the base install's.
_SITECUSTOMIZE = f"""\
import os, site, sys
_site = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "{ENV_ALIAS}",
                                      "lib", "python%d.%d" % sys.version_info[:2], "site-packages"))
if os.path.isdir(_site):
    _before = list(sys.path)
    site.addsitedir(_site)
    _added = [p for p in sys.path if p not in _before]
    sys.path[:] = [sys.path[0]] + _added + [p for p in sys.path[1:] if p not in _added]
"""


def base_python() -> str:
    """The interpreter the venv was made from (``pyvenv.cfg`` ``home``), fully resolved."""
    return str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


def submit_args(root: str | Path) -> list[str]:
    """spark-submit arguments that give cluster executors this project's Python.

    Spark 4.3 unpacks ``--archives`` tars with its own Java code, which drops file modes
    and mis-resolves relative symlinks: the packed ``environment/bin/python`` is not
    executable there. So executors run the node's base interpreter (the one the venv was
    made from, same path on every node) with the packed site-packages put first on their
    path by ``keylib_code/sitecustomize.py``: the same packages, versions and model.
    """
    env = env_archive(root)
    code = code_archive(root)
    executor_python = base_python()
    return [
        "--archives", f"{env}#{ENV_ALIAS},{code}#{CODE_ALIAS}",
        # Executors: base Python + the unpacked environment. The driver (client mode) keeps
        # this venv: spark.pyspark.driver.python wins over spark.pyspark.python for it.
        "--conf", f"spark.pyspark.python={executor_python}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", f"spark.executorEnv.PYSPARK_PYTHON={executor_python}",
        "--conf", f"spark.executorEnv.PYTHONPATH=./{CODE_ALIAS}",
        "--conf", "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keylib.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    args_parser = sub.add_parser("submit-args", help="print spark-submit arguments, one per line")
    args_parser.add_argument("--root", default=str(_PACKAGE_DIR.parent))
    args = parser.parse_args(argv)
    try:
        print("\n".join(submit_args(args.root)))
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"keylib: cannot pack the environment for the cluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
