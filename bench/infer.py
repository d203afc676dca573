"""Benchmark: key inference alone and annotate end to end, on generated 30 s mp3 clips.

    .venv/bin/python bench/infer.py [--tracks 60] [--seconds 30] [--model FILE.onnx]

Prints
  (a) where one track's time goes, in one process on one core: decode (incl. resampling),
      features (chroma), model (batched predict_probs) and Parquet (keys rows);
  (b) inference alone through Spark local[2] (read chroma Parquet -> pandas UDF -> keys
      Parquet), tracks per second per core;
  (c) annotate end to end through Spark local[2] (list, extract, infer, commit both
      tables), tracks per second per core. Target: at least 8 tracks/s per core.
Spark figures are the median of 2 timed runs after one warm-up run (workers started, model
loaded). No asserts: it prints figures.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from keylib import audio, features, synth  # noqa: E402
from keylib.config import load_config  # noqa: E402

CORES = 2


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip_{i:03d}.mp3"
        if not path.exists():
            y = synth.chord_progression(i % 24, duration_s=seconds, sr=44100, seed=i)
            synth.write_audio(path, y, sr=44100)
        paths.append(path)
    return paths


def shares(paths: list[Path], model) -> dict[str, float]:
    """Seconds per track for each stage, one process, one core."""
    from keylib.inference import KEYS_COLUMNS, keys_fields

    t = {"decode": 0.0, "features": 0.0, "model": 0.0, "parquet": 0.0}
    tensors = []
    for path in paths:
        t0 = time.perf_counter()
        decoded = audio.decode(path.read_bytes(), ext=".mp3")
        t1 = time.perf_counter()
        tensors.append(features.chroma(decoded.samples, feature_version=model.feature_version))
        t2 = time.perf_counter()
        t["decode"] += t1 - t0
        t["features"] += t2 - t1
    t0 = time.perf_counter()
    probs = model.predict_probs(tensors)
    t["model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = [{"track_id": p.name, **keys_fields(pr)} for p, pr in zip(paths, probs)]
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.Table.from_pylist(rows), Path(tmp) / "keys.parquet")
    t["parquet"] = time.perf_counter() - t0
    assert set(rows[0]) <= set(KEYS_COLUMNS)
    return {k: v / len(paths) for k, v in t.items()}


def timed(fn, runs: int = 2) -> float:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--data", default="/tmp/keylib-bench-infer")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="keylib-bench-"))
    paths = make_clips(Path(args.data), args.tracks, args.seconds)
    model_path = args.model or None  # None: the shipped model

    from keylib.serving import load_model

    model = load_model(model_path, threads=1)  # served as on a worker: ONNX Runtime, one thread
    print(f"model {model.version}; {len(paths)} clips of {args.seconds:.0f} s mp3 (44.1 kHz); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine skews figures)")

    # (a) stages, one core. Warm-up first: librosa sets up lazily.
    shares(paths[:3], model)
    per = shares(paths, model)
    total = sum(per.values())
    print(f"\n== (a) one process, one core: {1 / total:.1f} tracks/s")
    for key, value in per.items():
        print(f"  {key:<9} {1000 * value:7.1f} ms/track  ({100 * value / total:4.1f} %)")
    print(f"  model alone: {1 / per['model']:.0f} tracks/s on one core (target >= 1,000)")

    from keylib.spark.flows import run_annotate, run_extract, run_infer
    from keylib.spark.session import get_session

    config = load_config(None)
    spark = get_session(config, app_name="bench-infer")
    out = scratch / "out"
    # A manifest naming exactly these clips (the data folder may hold more from other runs);
    # no key column, so annotate writes no report and the figures are its one pass.
    manifest = scratch / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    folder = str(manifest)

    # (b) inference alone over a chroma table extracted once
    run_extract(spark, input_uri=folder, output=out / "features", config=config)
    run_infer(spark, features=out / "features" / "chroma", output=out / "warm", config=config, model_path=model_path)
    infer_s = timed(lambda i: run_infer(spark, features=out / "features" / "chroma", output=out / f"infer{i}",
                                        config=config, model_path=model_path))
    rate = len(paths) / infer_s
    print(f"\n== (b) inference alone, Spark local[{CORES}] (chroma Parquet -> UDF -> keys Parquet)")
    print(f"  {infer_s:.1f} s for {len(paths)} tracks: {rate:.1f} tracks/s, {rate / CORES:.1f} tracks/s per core")

    # (c) annotate end to end, fresh output each run (nothing skipped)
    run_annotate(spark, input_uri=folder, output=out / "ann-warm", config=config, model_path=model_path)
    ann_s = timed(lambda i: run_annotate(spark, input_uri=folder, output=out / f"ann{i}", config=config,
                                         model_path=model_path))
    rate = len(paths) / ann_s
    print(f"\n== (c) annotate end to end, Spark local[{CORES}] (list, extract, infer, both tables committed)")
    print(f"  {ann_s:.1f} s for {len(paths)} tracks: {rate:.1f} tracks/s, {rate / CORES:.1f} tracks/s per core "
          f"(target >= 8)")
    print(f"  time outside decode/features/model/Parquet (Spark jobs, scheduling, Arrow, listing): "
          f"{max(0.0, ann_s - total * len(paths) / CORES):.1f} s of {ann_s:.1f} s")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    spark.stop()


if __name__ == "__main__":
    main()
