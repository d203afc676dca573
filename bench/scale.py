"""Scaling on a Spark standalone cluster: one catalogue annotated with 1 and with 2 workers.

    .venv/bin/python bench/scale.py [--tracks 200] [--duration 20] [--workdir /tmp/keylib-scale]

Starts a real standalone master and N single-core workers on 127.0.0.1 (PySpark's own
distribution), runs ``./submit.sh nightly --master spark://...`` (extract + infer, the
executors get the packed environment) on a fresh output for each N, and prints tracks per
second, the speed-up ratio and per-track costs (core-seconds, bytes of output) from which
the README's million-track sizing is derived.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers import StandaloneCluster, make_model, submit, write_conf  # noqa: E402


def make_catalogue(folder: Path, n: int, duration_s: float) -> Path:
    from keylib.synth import chord_progression, write_audio

    for i in range(n):
        path = folder / f"track{i:04d}.wav"
        if not path.exists():
            write_audio(path, chord_progression(i % 24, duration_s=duration_s, seed=i), sr=22050)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def run(workdir: Path, catalogue: Path, n_workers: int, n_tracks: int, model) -> dict:
    cluster = StandaloneCluster(workdir / f"cluster{n_workers}", n_workers=n_workers, worker_memory="3g")
    out = workdir / f"out{n_workers}"
    shutil.rmtree(out, ignore_errors=True)
    conf = write_conf(workdir / f"scale{n_workers}.toml", master=cluster.url, model=model, tracks_per_partition=4)
    cluster.start()
    try:
        started = time.monotonic()
        code, log = submit("nightly", "--conf", str(conf), "--master", cluster.url,
                           "--input", str(catalogue), "--output", str(out), timeout=1800)
        wall = time.monotonic() - started
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)  # unpacked environments: GBs
    if code != 0:
        raise SystemExit(f"run with {n_workers} worker(s) failed ({code}):\n{log[-4000:]}")
    (manifest_path,) = (out / "_runs").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    stages = manifest["stages"]
    match = re.search(r"listed (\d+), new (\d+)", log)
    assert match and int(match.group(2)) == n_tracks, log[-2000:]
    return {
        "workers": n_workers,
        "wall_s": wall,
        "run_s": manifest["seconds"],
        "extract_s": stages["extract"]["seconds"],
        "infer_s": stages.get("infer", {}).get("seconds"),
        "tracks_per_s": n_tracks / manifest["seconds"],
        "chroma_bytes_per_track": folder_bytes(out / "chroma") / n_tracks,
        "keys_bytes_per_track": folder_bytes(out / "keys") / n_tracks if (out / "keys").exists() else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of audio per track")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/keylib-scale"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(args.workdir / f"catalogue-{args.tracks}x{args.duration:g}s", args.tracks, args.duration)
    from keylib.model import SHIPPED_MODEL

    model = "" if SHIPPED_MODEL.is_file() else make_model(args.workdir)
    results = [run(args.workdir, catalogue, n, args.tracks, model) for n in (1, 2)]
    for r in results:
        print(f"{r['workers']} worker(s): {args.tracks} tracks in {r['run_s']:.1f} s "
              f"(extract {r['extract_s']:.1f} s, infer {r['infer_s'] or 0:.1f} s; wall incl. JVM start "
              f"{r['wall_s']:.1f} s): {r['tracks_per_s']:.2f} tracks/s")
    ratio = results[1]["tracks_per_s"] / results[0]["tracks_per_s"]
    core_s = results[0]["run_s"] / args.tracks  # one worker = one core
    per_track = results[0]["chroma_bytes_per_track"] + results[0]["keys_bytes_per_track"]
    print(f"speed-up 2 vs 1 worker: {ratio:.2f}x")
    print(f"per track ({args.duration:g} s of audio): {core_s:.3f} core-seconds, "
          f"{results[0]['chroma_bytes_per_track'] / 1024:.1f} KiB chroma + "
          f"{results[0]['keys_bytes_per_track'] / 1024:.2f} KiB keys Parquet")
    million_core_h = core_s * 1e6 / 3600
    print(f"1,000,000 tracks like these: {million_core_h:.0f} core-hours "
          f"({million_core_h / 32:.1f} h on 32 executor cores), {per_track * 1e6 / 2**30:.1f} GiB Parquet")
    print(json.dumps({"tracks": args.tracks, "duration_s": args.duration, "results": results, "ratio": ratio}))


if __name__ == "__main__":
    main()
