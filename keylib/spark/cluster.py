"""Ship what serving needs to the executors of a Spark cluster, and nothing else.

``./submit.sh JOB --master spark://HOST:PORT ...`` calls ``python -m keylib.spark.cluster
submit-args --root ROOT`` and appends what it prints (one spark-submit argument per line).

* ``build/keylib-env-<hash>.tar``: the executors' Python packages, unpacked by every
  executor as ``./environment`` through ``--archives``. Only the distributions that
  serving needs: keylib's own requirements (no extras: no TensorFlow, no training or
  test packages) and theirs, taken from this virtual environment, minus matplotlib (report
  plots are drawn on the driver), deltalake (tables are committed by the driver; executors
  write their files with pyarrow) and PySpark and py4j, which every node's Spark provides (executors import them from Spark's
  ``python/lib/pyspark.zip`` and ``py4j-*.zip``, which Spark puts on each Python worker's
  path). Left out too: the packages' test suites and C headers. Rebuilt only when those
  distributions change. Its size is printed.
  Uncompressed ``.tar``: packing and unpacking are faster than with gzip.
* ``build/keylib-code-<hash>.zip``: the ``keylib`` package itself with the served model
  (``keylib/models/*.onnx`` and cards; not the ``.keras``), unpacked as ``./keylib_code``
  and put on the executors' ``PYTHONPATH``. Rebuilt when any file of the package changes.

Nodes need no keylib and no virtualenv, only Spark (same version), Java, and the base
Python interpreter the venv was made from at the same path (``/usr/bin/python3.11``,
say). The driver keeps the local venv.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

__all__ = ["ENV_ALIAS", "CODE_ALIAS", "CLUSTER_PROVIDED", "DRIVER_ONLY", "executor_distributions", "env_archive",
           "code_archive", "submit_args"]

ENV_ALIAS = "environment"
CODE_ALIAS = "keylib_code"
# Distributions the cluster's own Spark provides to every Python worker.
CLUSTER_PROVIDED = frozenset({"pyspark", "py4j"})
# Distributions only the driver uses: report plots are drawn there (keylib.report), and
# Delta commits and log reads happen there (keylib.storage; executors write and read the
# Parquet files with pyarrow.fs alone).
DRIVER_ONLY = frozenset({"matplotlib", "deltalake"})
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # keylib/, this file being keylib/spark/cluster.py
_LAYOUT = "serving-v2"  # bump when what goes into the archive changes


def _venv_prefix() -> Path:
    return Path(sys.prefix)


def _site_packages(prefix: Path) -> Path:
    return Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["purelib"])


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def executor_distributions(prefix: str | Path | None = None) -> dict:
    """The installed distributions executors need: keylib's requirements without extras,
    recursively, minus :data:`CLUSTER_PROVIDED` and :data:`DRIVER_ONLY` (and what only
    those need).

    Returns
    -------
    dict
        canonical name -> ``importlib.metadata.Distribution`` (from ``prefix``'s site-packages).
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    site = _site_packages(Path(prefix) if prefix else _venv_prefix())
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    if "keylib" not in installed:
        raise OSError(f"keylib is not installed in {site}: run ./submit.sh setup")
    needed: dict = {}
    todo = [installed["keylib"]]
    while todo:
        dist = todo.pop()
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra (train, test) or another platform
            name = _canonical(req.name)
            if name in needed or name in CLUSTER_PROVIDED or name in DRIVER_ONLY:
                continue
            if name not in installed:
                raise OSError(f"{req.name} (needed by {dist.metadata['Name']}) is not installed in {site}")
            needed[name] = installed[name]
            todo.append(installed[name])
    return dict(sorted(needed.items()))


def _top_level_entries(dist, site: Path) -> set[str]:
    """Names directly under site-packages that a distribution installed (from its RECORD)."""
    entries = set()
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if parts and parts[0] != ".." and (site / parts[0]).exists():
            entries.add(parts[0])
    return entries


def _env_hash(prefix: Path, dists: dict) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode() + _LAYOUT.encode())
    for name, dist in dists.items():
        h.update(f"{name}=={dist.version}".encode())
        h.update(hashlib.sha256((dist.read_text("RECORD") or "").encode()).digest())
    return h.hexdigest()[:12]


def _locked(build: Path):
    build.mkdir(parents=True, exist_ok=True)
    handle = open(build / ".pack.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # two submits at once: one packs, the other waits
    return handle


def env_archive(root: str | Path, *, prefix: str | Path | None = None) -> Path:
    """The executors' packages (:func:`executor_distributions`) packed as a tar under
    ``ROOT/build/`` in the venv's layout (``lib/pythonX.Y/site-packages/...``); packed when
    missing or stale."""
    build = Path(root) / "build"
    prefix = Path(prefix) if prefix else _venv_prefix()
    site = _site_packages(prefix)
    dists = executor_distributions(prefix)
    target = build / f"keylib-env-{_env_hash(prefix, dists)}.tar"
    if target.exists():
        return target
    with _locked(build):
        if target.exists():
            return target
        entries = sorted(set().union(*(_top_level_entries(d, site) for d in dists.values())))
        arc_site = site.relative_to(prefix).as_posix()
        print(f"keylib: packing {len(dists)} distributions for the executors into {target} "
              f"(once per change; no TensorFlow, no PySpark)", file=sys.stderr)
        part = Path(str(target) + ".part")
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            for entry in entries:
                tar.add(str(site / entry), arcname=f"{arc_site}/{entry}", filter=_skip_unused)
        os.replace(part, target)
        for old in build.glob("keylib-env-*.tar"):
            if old != target:
                old.unlink(missing_ok=True)
    return target


# Folders no executor reads: the packages' own test suites (about 60 MB of numpy, scipy,
# pandas, pyarrow, scikit-learn, numba...) and C headers (build time only).
_UNUSED_FOLDERS = frozenset({"tests", "include"})


def _skip_unused(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # Bytecode is rebuilt on import; librosa's numba kernels (*.nbi, *.nbc) are kept.
    if info.name.endswith((".pyc", ".pyo")):
        return None
    if info.isdir() and info.name.rsplit("/", 1)[-1] in _UNUSED_FOLDERS:
        return None
    return info


def _package_files() -> list[Path]:
    # The .keras files are for training and export only: executors run the .onnx.
    return sorted(
        p for p in _PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo", ".keras"}
    )


def code_archive(root: str | Path) -> Path:
    """``keylib/`` (code and served model) zipped under ``ROOT/build/``, when changed."""
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
    and mis-resolves relative symlinks, so a packed interpreter would not run there.
    Executors run the node's base interpreter (the one the venv was made from, same path
    on every node) with the packed site-packages put first on their path by
    ``keylib_code/sitecustomize.py``: the same packages, versions and model; PySpark and
    py4j come from the node's Spark. Prints the archives' sizes on stderr.
    """
    env = env_archive(root)
    code = code_archive(root)
    executor_python = base_python()
    print(f"keylib: executors get {env.name} ({env.stat().st_size / 1e6:.0f} MB packed) and "
          f"{code.name} ({code.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return [
        "--archives", f"{env}#{ENV_ALIAS},{code}#{CODE_ALIAS}",
        # Executors: base Python + the unpacked environment. The driver (client mode) keeps
        # this venv: spark.pyspark.driver.python wins over spark.pyspark.python for it.
        "--conf", f"spark.pyspark.python={executor_python}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", f"spark.executorEnv.PYSPARK_PYTHON={executor_python}",
        "--conf", f"spark.executorEnv.PYTHONPATH=./{CODE_ALIAS}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keylib.spark.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    args_parser = sub.add_parser("submit-args", help="print spark-submit arguments, one per line")
    args_parser.add_argument("--root", default=str(_PACKAGE_DIR.parent))
    args = parser.parse_args(argv)
    try:
        print("\n".join(submit_args(args.root)))
    except OSError as exc:
        print(f"keylib: cannot pack the environment for the cluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
