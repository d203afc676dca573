#!/usr/bin/env bash
# keylib: the one entry point. Every Spark job runs through here, locally and on a cluster.
#
#   ./submit.sh demo                      set up (first time) and annotate the sample catalogue
#   ./submit.sh test [pytest args]        set up (first time) and run the test suite
#   ./submit.sh setup                     install system packages (if root) and the virtualenv
#   ./submit.sh JOB [--conf conf/F.toml] [--master spark://H:P] [job args]
#   ./submit.sh --help                    list the jobs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${KEYLIB_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.keylib-setup"
# Spark's classes as a JVM class-data archive: a driver JVM that maps it starts in half the time.
CLASS_ARCHIVE="$VENV/spark-classes.jsa"
SYSTEM_PACKAGES=(openjdk-17-jre-headless fluidsynth fluid-soundfont-gm csound-soundfont timgm6mb-soundfont
                 opl3-soundfont musescore-general-soundfont-small fluidr3mono-gm-soundfont ffmpeg espeak-ng)

say() { printf 'keylib: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  [ "${v%%.*}" -ge 17 ] 2>/dev/null
}

missing_system_packages() {
  local missing=()
  java_ok || missing+=(openjdk-17-jre-headless)
  command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
  # General MIDI soundfonts: training renders with the first two, the held-out set with the others.
  [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
  [ -f /usr/share/sounds/sf2/sf_GMbank.sf2 ] || missing+=(csound-soundfont)
  [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || missing+=(timgm6mb-soundfont)
  [ -f /usr/share/sounds/sf2/OPL-3_FM_128M.sf2 ] || missing+=(opl3-soundfont)
  # Two more for training renders with other timbres (make-training-set --soundfonts).
  [ -f /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 ] || missing+=(musescore-general-soundfont-small)
  [ -f /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 ] || missing+=(fluidr3mono-gm-soundfont)
  # Another engine and sound source for the validation render only (--only-split validation).
  command -v timidity >/dev/null 2>&1 || missing+=(timidity)
  [ -f /etc/timidity/freepats.cfg ] || missing+=(freepats)
  # espeak-ng speaks the speech clips of the tonality classifier's training and tests.
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
  echo "${missing[@]:-}"
}

find_python() {
  local candidate
  for candidate in "${KEYLIB_PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

setup() {
  local missing
  missing="$(missing_system_packages)"
  if [ -n "${missing// /}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing system packages: $missing"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # shellcheck disable=SC2086
      apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      die "missing system packages: $missing. Install them (Debian/Ubuntu: sudo apt-get install $missing) and run again."
    fi
  fi
  java_ok || die "Spark needs Java 17 or newer; 'java -version' does not show it."
  local python
  python="$(find_python)" || die "keylib needs Python 3.11 or 3.12 (set KEYLIB_PYTHON=/path/to/python)."
  rm -f "$CLASS_ARCHIVE"  # made for the Spark being replaced; written again below
  if [ ! -x "$PY" ]; then
    say "creating the virtual environment in $VENV with $python"
    "$python" -m venv "$VENV"
  fi
  say "installing keylib and its dependencies into $VENV (first time: a few minutes)"
  local log="$VENV/setup.log"
  if ! { "$PY" -m pip install -q --upgrade pip && "$PY" -m pip install -q -e "$ROOT[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip install failed; the whole log is in $log"
  fi
  # A smoke check that serving imports and runs (keylib's own numpy chroma: no numba cache to warm).
  "$PY" -c 'import numpy as np; from keylib import features; features.chroma(np.ones(22050, dtype=np.float32))'
  say "writing the JVM class archive of Spark's classes (once per environment, about 30 s)"
  "$PY" -m keylib.spark.session class-archive "$CLASS_ARCHIVE" ||
    say "no JVM class archive (jobs work, each starting a few seconds slower)"
  sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1 >"$STAMP"
  say "setup done"
}

ensure_setup() {
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -x "$PY" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] ||
     [ -n "$(missing_system_packages | tr -d ' ')" ]; then
    setup
  fi
}

spark_env() {
  export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
  export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
  # Spark runs one task per core; BLAS threads inside each task would only fight over them.
  export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  export MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export KEYLIB_CLASS_ARCHIVE="${KEYLIB_CLASS_ARCHIVE-$CLASS_ARCHIVE}"  # used only while the file exists
}

list_jobs() {
  echo "usage: ./submit.sh JOB [--conf conf/FILE.toml] [--master URL] [job arguments]"
  echo "       ./submit.sh demo | test [pytest args] | setup"
  echo
  echo "jobs:"
  local f name doc
  for f in "$ROOT"/jobs/*.py; do
    name="$(basename "$f" .py)"
    case "$name" in _*) continue ;; esac
    doc="$(sed -n 's/^"""\(.*\)$/\1/p' "$f" | head -1)"
    printf '  %-20s %s\n' "${name//_/-}" "$doc"
  done
  echo
  echo "'./submit.sh JOB --help' lists a job's arguments."
}

submit_job() {
  local job="$1"; shift
  local file="$ROOT/jobs/${job//-/_}.py"
  [ -f "$file" ] || { list_jobs >&2; die "unknown job '$job'"; }
  local conf="" master="" args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --conf) conf="$2"; args+=(--conf "$2"); shift 2 ;;
      --conf=*) conf="${1#--conf=}"; args+=("$1"); shift ;;
      --master) master="$2"; shift 2 ;;
      --master=*) master="${1#--master=}"; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  ensure_setup
  spark_env
  local submit_args=()
  mapfile -t submit_args < <("$PY" -m keylib.config submit-args ${conf:+"$conf"}) || exit 2
  [ ${#submit_args[@]} -gt 0 ] || exit 2
  if [ -n "$master" ]; then
    submit_args+=(--master "$master")   # the last --master wins in spark-submit
    if [[ "$master" == spark://* ]]; then
      # Executors on a cluster get this project's packed environment (see README, cluster).
      local cluster_args=()
      mapfile -t cluster_args < <("$PY" -m keylib.spark.cluster submit-args --root "$ROOT") || exit 2
      submit_args+=("${cluster_args[@]}")
    fi
  fi
  exec "$VENV/bin/spark-submit" "${submit_args[@]}" "$file" "${args[@]}"
}

run_demo() {
  ensure_setup
  spark_env
  local sample="$ROOT/data/sample" out="$ROOT/out/sample"
  "$PY" -m keylib.synth "$sample"
  "$0" annotate --input "$sample/manifest.csv" --output "$out" "$@"
}

run_tests() {
  ensure_setup
  spark_env
  cd "$ROOT"
  local rc=0
  "$PY" -m pytest "$@" || rc=$?
  if [ "$rc" = 5 ]; then
    say "pytest collected no tests: that is a failure, not a pass"
    exit 1
  fi
  exit "$rc"
}

case "${1:-}" in
  ""|-h|--help|help) list_jobs ;;
  setup) shift; setup ;;
  demo) shift; run_demo "$@" ;;
  test) shift; run_tests "$@" ;;
  *) job="$1"; shift; submit_job "$job" "$@" ;;
esac
