"""Scaling on a Spark standalone cluster: one catalogue annotated with 1 and with 2 workers.

    .venv/bin/python bench/scale.py [--tracks 400] [--duration 20] [--workdir /tmp/keylib-scale]

Starts a real standalone master and N single-core workers on 127.0.0.1 (PySpark's own
distribution), runs ``./submit.sh nightly --master spark://...`` (extract + infer; the
executors get the lean packed environment of :mod:`keylib.spark.cluster`) on a fresh output for
each N, and prints tracks per second, the speed-up ratio (target >= 1.7x), each
executor's time before its first task (from Spark's event log: registration, archive
fetch and unpack, Python start, imports), where the time goes when the ratio falls short,
and per-track costs (core-seconds, bytes of output) from which the README's
million-track sizing is derived.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers import StandaloneCluster, submit, write_conf  # noqa: E402


def make_catalogue(folder: Path, n: int, duration_s: float) -> Path:
    from keylib.synth import chord_progression, write_audio

    for i in range(n):
        path = folder / f"track{i:04d}.wav"
        if not path.exists():
            write_audio(path, chord_progression(i % 24, duration_s=duration_s, seed=i), sr=22050)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def read_event_log(folder: Path) -> dict:
    """Per-executor start-up and busy time from a Spark event log (JSON lines)."""
    app_start, added, tasks = None, {}, {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith((".", "appstatus")):
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("Event")
            if kind == "SparkListenerApplicationStart":
                app_start = event["Timestamp"] / 1000
            elif kind == "SparkListenerExecutorAdded":
                added[event["Executor ID"]] = event["Timestamp"] / 1000
            elif kind == "SparkListenerTaskEnd":
                info = event["Task Info"]
                tasks.setdefault(info["Executor ID"], []).append(
                    (info["Launch Time"] / 1000, info["Finish Time"] / 1000))
    executors = {}
    for ex, spans in sorted(tasks.items()):
        spans.sort()
        durations = sorted(end - start for start, end in spans)
        executors[ex] = {
            "registered_s": added.get(ex, spans[0][0]) - app_start,
            "first_task_at_s": spans[0][0] - app_start,
            "first_task_s": spans[0][1] - spans[0][0],
            "median_task_s": durations[len(durations) // 2],
            "busy_s": sum(durations),
            "tasks": len(spans),
            "last_task_end_s": spans[-1][1] - app_start,
        }
    return executors


def run(workdir: Path, catalogue: Path, n_workers: int, n_tracks: int) -> dict:
    cluster = StandaloneCluster(workdir / f"cluster{n_workers}", n_workers=n_workers, worker_memory="3g")
    out = workdir / f"out{n_workers}"
    shutil.rmtree(out, ignore_errors=True)
    conf = write_conf(workdir / f"scale{n_workers}.toml", master=cluster.url, tracks_per_partition=4)
    # Spark's event log through spark-defaults.conf (spark-submit reads SPARK_CONF_DIR).
    conf_dir, events = workdir / f"spark-conf{n_workers}", workdir / f"events{n_workers}"
    for folder in (conf_dir, events):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    (conf_dir / "spark-defaults.conf").write_text(
        f"spark.eventLog.enabled true\nspark.eventLog.dir file://{events}\n"
        "spark.eventLog.compress false\nspark.eventLog.rolling.enabled false\n")
    try:
        cluster.start(timeout=300)  # a loaded machine can take minutes to start the JVMs
        started = time.monotonic()
        code, log = submit("nightly", "--conf", str(conf), "--master", cluster.url,
                           "--input", str(catalogue), "--output", str(out), timeout=1800,
                           env={"SPARK_CONF_DIR": str(conf_dir)})
        wall = time.monotonic() - started
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)  # unpacked environments
    if code != 0:
        raise SystemExit(f"run with {n_workers} worker(s) failed ({code}):\n{log[-4000:]}")
    (manifest_path,) = (out / "_runs").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    stages = manifest["stages"]
    match = re.search(r"listed (\d+), new (\d+)", log)
    assert match and int(match.group(2)) == n_tracks, log[-2000:]
    packed = re.search(r"executors get (\S+) \((\d+) MB packed\)", log)
    return {
        "workers": n_workers,
        "wall_s": wall,
        "run_s": manifest["seconds"],
        "extract_s": stages["extract"]["seconds"],
        "infer_s": stages.get("infer", {}).get("seconds"),
        "tracks_per_s": n_tracks / manifest["seconds"],
        "chroma_bytes_per_track": folder_bytes(out / "chroma") / n_tracks,
        "keys_bytes_per_track": folder_bytes(out / "keys") / n_tracks if (out / "keys").exists() else 0,
        "env_mb": int(packed.group(2)) if packed else None,
        "executors": read_event_log(events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=400)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of audio per track")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/keylib-scale"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(args.workdir / f"catalogue-{args.tracks}x{args.duration:g}s", args.tracks, args.duration)
    print(f"{args.tracks} tracks of {args.duration:g} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} before (other work on the machine skews figures)")
    results = [run(args.workdir, catalogue, n, args.tracks) for n in (1, 2)]
    for r in results:
        print(f"\n{r['workers']} worker(s): {args.tracks} tracks in {r['run_s']:.1f} s "
              f"(extract {r['extract_s']:.1f} s, infer {r['infer_s'] or 0:.1f} s; wall incl. JVM start "
              f"{r['wall_s']:.1f} s): {r['tracks_per_s']:.2f} tracks/s; executor env {r['env_mb']} MB packed")
        for ex, e in r["executors"].items():
            print(f"  executor {ex}: registered {e['registered_s']:.1f} s after the application started, "
                  f"first task launched at {e['first_task_at_s']:.1f} s and took {e['first_task_s']:.1f} s "
                  f"(median task {e['median_task_s']:.2f} s: first-task set-up ~"
                  f"{max(0.0, e['first_task_s'] - e['median_task_s']):.1f} s); "
                  f"{e['tasks']} tasks, busy {e['busy_s']:.1f} s")
    ratio = results[1]["tracks_per_s"] / results[0]["tracks_per_s"]
    print(f"\nspeed-up 2 vs 1 worker: {ratio:.2f}x (target >= 1.7x)")
    if ratio < 1.7:
        two = results[1]
        busy = sum(e["busy_s"] for e in two["executors"].values())
        first_at = max(e["first_task_at_s"] for e in two["executors"].values())
        setup = sum(max(0.0, e["first_task_s"] - e["median_task_s"]) for e in two["executors"].values())
        print(f"where the rest goes (2 workers, {two['run_s']:.1f} s of run): executors busy "
              f"{busy:.1f} of {2 * two['run_s']:.1f} core-seconds; the last executor's first task "
              f"started {first_at:.1f} s after the application; first-task set-up {setup:.1f} core-s; "
              f"the remainder is the driver (listing, planning, commits) and scheduling gaps; "
              f"load average now {os.getloadavg()[0]:.1f}")
    core_s = results[0]["run_s"] / args.tracks  # one worker = one core
    per_track = results[0]["chroma_bytes_per_track"] + results[0]["keys_bytes_per_track"]
    print(f"per track ({args.duration:g} s of audio): {core_s:.3f} core-seconds, "
          f"{results[0]['chroma_bytes_per_track'] / 1024:.1f} KiB chroma + "
          f"{results[0]['keys_bytes_per_track'] / 1024:.2f} KiB keys Parquet")
    million_core_h = core_s * 1e6 / 3600
    print(f"1,000,000 tracks like these: {million_core_h:.0f} core-hours "
          f"({million_core_h / 32:.1f} h on 32 executor cores), {per_track * 1e6 / 2**30:.1f} GiB Parquet")
    print(json.dumps({"tracks": args.tracks, "duration_s": args.duration, "results": results, "ratio": ratio}))


if __name__ == "__main__":
    main()
