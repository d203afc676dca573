"""Benchmark: decode + chroma throughput on generated 30 s mp3 clips.

    .venv/bin/python bench/extract.py [--tracks 50] [--seconds 30]

Prints tracks per second per core for (a) a plain Python loop and (b) the Spark
extraction job in local[2], and where the time goes (read, decode, resample, features,
Parquet). Target (issue 2): at least 10 tracks/s per core for decode + chroma.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as submit.sh: one task per core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from keylib import audio, features, synth
from keylib.config import load_config


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"clip_{i:03d}.mp3"
        if not path.exists():
            y = synth.chord_progression(i % 24, duration_s=seconds, sr=44100, seed=i)
            synth.write_audio(path, y, sr=44100)
        paths.append(path)
    return paths


def plain_loop(paths: list[Path]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("read", "decode", "resample", "features", "parquet")}
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        block, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        t2 = time.perf_counter()
        mono = audio._to_feature_rate(block, sr)  # the decoder's own resampling step
        t3 = time.perf_counter()
        tensor = features.chroma(mono)
        t4 = time.perf_counter()
        rows.append({"track_id": path.name, "chroma": tensor.reshape(-1)})
        for key, dt in zip(("read", "decode", "resample", "features"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(dt)
    t5 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.Table.from_pylist(rows), Path(tmp) / "chroma.parquet")
    times["parquet"] = [(time.perf_counter() - t5) / len(paths)] * len(paths)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--data", default="/tmp/keylib-bench-extract")
    args = parser.parse_args()

    paths = make_clips(Path(args.data), args.tracks, args.seconds)
    # Warm-up: librosa's first STFT compiles/loads lazily (about 2 s, once per process).
    features.chroma(audio.decode(paths[0].read_bytes(), ext=".mp3").samples)

    # (a) the same steps the job runs, in one process on one core
    runs = [plain_loop(paths) for _ in range(2)]
    per_track = {k: statistics.median([sum(r[k]) / len(paths) for r in runs]) for k in runs[0]}
    total = sum(v for k, v in per_track.items() if k != "parquet")
    loop_rate = 1.0 / total
    print(f"\n== plain loop, 1 core, {len(paths)} x {args.seconds:.0f} s mp3 (median of 2 runs)")
    for key, value in per_track.items():
        print(f"  {key:<9} {1000 * value:7.1f} ms/track  ({100 * value / (total + per_track['parquet']):4.1f} %)")
    print(f"  decode + chroma: {loop_rate:.1f} tracks/s per core (target >= 10)")

    # (b) the Spark job in local[2]: listing, scheduling, Arrow, Parquet included
    from keylib.flows import run_extract
    from keylib.spark import get_session

    config = load_config(None)
    spark = get_session(config, app_name="bench-extract")
    with tempfile.TemporaryDirectory() as out:
        run_extract(spark, input_uri=str(paths[0].parent), output=Path(out) / "warm", config=config)
        timings = []
        for i in range(2):
            t0 = time.perf_counter()
            summary = run_extract(spark, input_uri=str(paths[0].parent), output=Path(out) / f"r{i}", config=config)
            timings.append(time.perf_counter() - t0)
            assert summary.failed == 0
    spark.stop()
    cores = 2
    spark_rate = len(paths) / statistics.median(timings)
    print(f"\n== Spark extraction job, local[{cores}] (median of 2 runs after a warm-up run)")
    print(f"  {spark_rate:.1f} tracks/s total, {spark_rate / cores:.1f} tracks/s per core")
    print(f"  ratio Spark per core / plain loop per core: {spark_rate / cores / loop_rate:.2f}")


if __name__ == "__main__":
    main()
