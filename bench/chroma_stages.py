"""Benchmark: decode + chroma, stage by stage, today's code against the v1 code it replaced.

    .venv/bin/python bench/chroma_stages.py [--tracks 60] [--loop-only]

On 30 s, 44.1 kHz stereo, 192 kbps mp3 clips in all 24 keys with tunings spread over
+-50 cents (bench/clips.py; cached in build/bench-clips), prints

  (a) a plain loop in one process on one core, milliseconds per track for each stage,
      "v1" (block.mean(axis=1) + nan_to_num downmix; librosa's STFT and one librosa chroma
      filterbank per new tuning, cached as v1 did) next to "now" (keylib.audio and
      keylib.features), interleaved track by track so that a busy machine slows both alike,
      with the largest difference between their chroma tensors;
  (b) the cost of a filterbank for a new tuning, v1 against now, and the first chroma in a
      fresh Python process (what every Spark Python worker pays once);
  (c) the Spark extraction job in local[2] (skipped with --loop-only).
Target: at least 10 tracks/s per core for decode + chroma.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as submit.sh: one task per core
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

from clips import make_clips, write_manifest  # noqa: E402
from keylib import audio, features  # noqa: E402
from keylib.config import load_config  # noqa: E402

STAGES = ("read", "decode", "downmix", "resample", "chroma")


def v1_downmix_resample(block: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """v1's ``_to_feature_rate``: (mono float32 at 11,025 Hz, seconds spent downmixing)."""
    t0 = time.perf_counter()
    mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    t1 = time.perf_counter()
    return np.ascontiguousarray(soxr.resample(mono, sr, features.SAMPLE_RATE, quality="MQ"), dtype=np.float32), t1 - t0


@lru_cache(maxsize=64)
def v1_filterbank(tuning_hundredths: int) -> np.ndarray:
    """v1's filterbank: a whole librosa chroma bank per tuning, masked to the band."""
    import librosa

    fb = librosa.filters.chroma(sr=features.SAMPLE_RATE, n_fft=features.N_FFT, n_chroma=12,
                                tuning=tuning_hundredths / 100.0, ctroct=5.0, octwidth=None, norm=None)
    freqs = librosa.fft_frequencies(sr=features.SAMPLE_RATE, n_fft=features.N_FFT)
    fb[:, (freqs < features.FMIN) | (freqs > features.FMAX)] = 0.0
    return np.ascontiguousarray(fb, dtype=np.float32)


def v1_chroma(y: np.ndarray) -> np.ndarray:
    """v1's ``features.chroma``: librosa's STFT, the shared tuning estimator, v1's bank."""
    import librosa

    spec = np.abs(librosa.stft(y, n_fft=features.N_FFT, hop_length=features.HOP_LENGTH, window="hann", center=True))
    raw = v1_filterbank(int(round(features._estimate_tuning(spec) * 100))) @ spec
    return (np.log1p(features.LOG_GAIN * raw / raw.max()) / np.log1p(features.LOG_GAIN)).astype(np.float32)


def plain_loop(paths: list[Path]) -> tuple[dict[str, dict[str, list[float]]], float]:
    """Per-stage seconds of each track, ``{"v1": {stage: [...]}, "now": {...}}``, and the
    largest absolute difference between v1's and today's chroma."""
    times = {name: {stage: [] for stage in STAGES} for name in ("v1", "now")}
    worst = 0.0
    v1_filterbank.cache_clear()  # a fresh worker: every new tuning costs v1 a bank
    features._filterbank.cache_clear()
    for path in paths:
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        block, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        t2 = time.perf_counter()
        # v1
        mono_v1, downmix_v1 = v1_downmix_resample(block, sr)
        t3 = time.perf_counter()
        chroma_v1 = v1_chroma(mono_v1)
        t4 = time.perf_counter()
        # now
        mono = audio._downmix(block)
        t5 = time.perf_counter()
        mono = audio._resample(mono, sr)
        t6 = time.perf_counter()
        chroma_now = features.chroma(mono)
        t7 = time.perf_counter()
        for name, stage_times in (("v1", (t1 - t0, t2 - t1, downmix_v1, t3 - t2 - downmix_v1, t4 - t3)),
                                  ("now", (t1 - t0, t2 - t1, t5 - t4, t6 - t5, t7 - t6))):
            for stage, dt in zip(STAGES, stage_times):
                times[name][stage].append(dt)
        assert np.array_equal(mono, mono_v1), path  # decoding is unchanged, bit for bit
        worst = max(worst, float(np.abs(chroma_now - chroma_v1).max()))
    return times, worst


def bank_costs(repeats: int = 20) -> tuple[float, float]:
    """Seconds to build a filterbank for a tuning not seen before: (v1, now)."""
    out = []
    for build in (v1_filterbank, features._filterbank):
        build.cache_clear()
        t0 = time.perf_counter()
        for h in range(-repeats // 2, repeats - repeats // 2):
            build(h)
        out.append((time.perf_counter() - t0) / repeats)
    return out[0], out[1]


def first_chroma_in_fresh_process(code: str) -> float:
    """Wall seconds of a fresh Python process that imports keylib and computes one chroma."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy as np; from keylib import features, audio; "
                    "y = np.random.default_rng(0).standard_normal(330750).astype(np.float32); " + code],
                   check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=60)
    parser.add_argument("--data", default=str(ROOT / "build" / "bench-clips"))
    parser.add_argument("--loop-only", action="store_true", help="skip the Spark job")
    args = parser.parse_args()

    rows = make_clips(Path(args.data), args.tracks)
    paths = [row["path"] for row in rows]
    # warm-up: librosa's first STFT loads numba and scipy (seconds, once per process)
    v1_chroma(np.full(features.SAMPLE_RATE, 0.1, dtype=np.float32))

    # (a) the same steps the job runs, in one process on one core
    runs = [plain_loop(paths) for _ in range(2)]
    worst = max(w for _, w in runs)
    tunings = len({round(row["tuning_cents"]) for row in rows})
    print(f"\n== plain loop, 1 core, {len(paths)} x 30 s stereo 192 kbps mp3, {tunings} distinct tunings "
          f"(ms per track, median of 2 runs; v1 and now interleaved track by track)")
    print(f"  {'stage':<9} {'v1':>8} {'now':>8}")
    totals = {}
    for name in ("v1", "now"):
        totals[name] = statistics.median(sum(sum(r[name][s]) for s in STAGES) / len(paths) for r, _ in runs)
    for stage in STAGES:
        v1, now = (statistics.median(sum(r[name][stage]) / len(paths) for r, _ in runs) for name in ("v1", "now"))
        print(f"  {stage:<9} {1000 * v1:8.1f} {1000 * now:8.1f}")
    decode_resample = {name: statistics.median(
        sum(sum(r[name][s]) for s in ("decode", "downmix", "resample")) / len(paths) for r, _ in runs)
        for name in ("v1", "now")}
    print(f"  {'decode+downmix+resample':<9} {1000 * decode_resample['v1']:8.1f} {1000 * decode_resample['now']:8.1f}")
    print(f"  {'total':<9} {1000 * totals['v1']:8.1f} {1000 * totals['now']:8.1f}   "
          f"-> {1 / totals['v1']:.1f} vs {1 / totals['now']:.1f} tracks/s per core (target >= 10)")
    print(f"  decoded samples identical; largest |chroma now - chroma v1| = {worst:.2e}")

    # (b) costs that v1 paid per tuning and per worker
    v1_bank, now_bank = bank_costs()
    print("\n== fixed costs")
    print(f"  filterbank for a new tuning: v1 {1000 * v1_bank:.1f} ms, now {1000 * now_bank:.2f} ms "
          f"(ratio {v1_bank / now_bank:.0f}x); now at most {features._filterbank.cache_info().maxsize} banks "
          f"per process, all tunings")
    v1_first = first_chroma_in_fresh_process(
        "import sys; sys.path.insert(0, 'bench'); from extract import v1_chroma; v1_chroma(y)")
    now_first = first_chroma_in_fresh_process("features.chroma(y)")
    print(f"  a fresh process's first chroma (imports included): v1 {v1_first:.1f} s, now {now_first:.1f} s")

    if args.loop_only:
        return
    # (c) the Spark job in local[2]: listing, scheduling, Arrow, Parquet included
    from keylib.spark.flows import run_extract
    from keylib.spark.session import get_session

    config = load_config(None)
    spark = get_session(config, app_name="bench-extract")
    with tempfile.TemporaryDirectory() as out:
        manifest = str(write_manifest(rows, Path(out) / "manifest.csv"))
        run_extract(spark, input_uri=manifest, output=Path(out) / "warm", config=config)
        timings = []
        for i in range(2):
            t0 = time.perf_counter()
            summary = run_extract(spark, input_uri=manifest, output=Path(out) / f"r{i}", config=config)
            timings.append(time.perf_counter() - t0)
            assert summary.failed == 0
    spark.stop()
    cores = 2
    spark_rate = summary.listed / statistics.median(timings)
    print(f"\n== Spark extraction job, local[{cores}], {summary.listed} tracks (median of 2 runs after a warm-up run)")
    print(f"  {spark_rate:.1f} tracks/s total, {spark_rate / cores:.1f} tracks/s per core")
    print(f"  ratio Spark per core / plain loop per core: {spark_rate / cores * totals['now']:.2f}")


if __name__ == "__main__":
    main()
