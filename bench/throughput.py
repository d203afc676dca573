"""Benchmark: the whole ``./submit.sh annotate`` against Essentia's KeyExtractor, same files.

    .venv/bin/python bench/throughput.py [--n 300]            # 30 s clips
    .venv/bin/python bench/throughput.py --whole-songs [--n 40]   # whole songs of 3-5 minutes
    .venv/bin/python bench/throughput.py --n 10                # a quick smoke run

The files are 44.1 kHz stereo 192 kbps mp3 (libmp3lame) in all 24 keys, detuned by up to
+-50 cents (bench/clips.py; cached under build/, so reruns reuse them). keylib runs as a
user runs it: ``./submit.sh annotate --input MANIFEST --output OUT`` as a subprocess in
local[2] (JVM and Python start-up, listing, extraction, inference, both commits included)
into a fresh OUT. Essentia (installed on demand by bench/peers.py, never a keylib
dependency) runs ``MonoLoader`` + ``KeyExtractor`` (profile bgate, its default) on each file
in a plain loop in this process, on one core. Prints both wall times, the ratio
keylib/Essentia (target at most 1.0, stretch 0.5), both methods' MIREX scores against the
keys the files were made in, and keylib's ``tuning_cents`` against the detuning applied.
The machine's load average is printed too: on a shared machine both figures move with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clips import make_clips, make_songs, write_manifest  # noqa: E402
from keylib import mirex  # noqa: E402
from keylib.keys import parse_key  # noqa: E402
from keylib.storage.tables import open_table  # noqa: E402

BUILD = ROOT / "build"


def run_keylib(manifest: Path, out: Path) -> tuple[float, str]:
    """Wall seconds of ``./submit.sh annotate`` into a fresh ``out``, and its output."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(ROOT / "submit.sh"), "annotate", "--input", str(manifest), "--output", str(out), "--show", "0"]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"annotate failed with exit code {result.returncode}:\n{output[-3000:]}")
    return wall, output


def read_table(root: Path, columns: list[str]) -> dict[str, dict]:
    """``{track_id: {column: value}}`` of the current rows of a keylib table."""
    table = open_table(str(root)).to_pyarrow_table(columns=["track_id", *columns])
    return {row["track_id"]: row for row in table.to_pylist()}


def run_essentia(paths: list[Path]) -> tuple[float, list[str]]:
    """Wall seconds of Essentia's loop over ``paths`` (after importing it), and its keys."""
    from peers import PEERS_DIR, essentia, essentia_key

    # the folder must exist before peers puts it on sys.path, or Python's path cache hides
    # what pip installs into it during this process
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    essentia()  # installs on first use, then imports: not part of the timed loop
    essentia_key(paths[0])  # warm-up, as keylib's figure has its own start-up in it anyway
    t0 = time.perf_counter()
    keys = [essentia_key(path) for path in paths]
    return time.perf_counter() - t0, keys


def scores(truth: list[str], estimates: list[str | None]) -> str:
    refs = [parse_key(k) for k in truth]
    ests = [parse_key(k) if k else None for k in estimates]
    pairs = [(r, e) for r, e in zip(refs, ests) if e is not None]
    s = mirex.summarize([r for r, _ in pairs], [e for _, e in pairs])
    return (f"MIREX {s['weighted_score']:.3f} (fifth up) / {s['weighted_score_both_fifths']:.3f} (both), "
            f"exact {s['accuracy']:.3f}, {len(truth) - len(pairs)} without a key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="number of files (default 300 clips, 40 songs)")
    parser.add_argument("--whole-songs", action="store_true", help="whole songs of 3-5 minutes instead of 30 s clips")
    parser.add_argument("--skip-essentia", action="store_true", help="keylib only")
    args = parser.parse_args()

    if args.whole_songs:
        n = args.n or 40
        rows, kind = make_songs(BUILD / "bench-songs", n), "whole songs of 3-5 min"
    else:
        n = args.n or 300
        rows, kind = make_clips(BUILD / "bench-clips", n), "30 s clips"
    work = BUILD / "bench-throughput" / f"{'songs' if args.whole_songs else 'clips'}-{n}"
    manifest = write_manifest(rows, work / "manifest.csv")
    paths = [row["path"] for row in rows]
    audio_s = sum(row["seconds"] for row in rows)
    print(f"== {n} {kind} ({audio_s / 60:.0f} min of audio), 44.1 kHz stereo 192 kbps mp3, "
          f"tunings {min(r['tuning_cents'] for r in rows):+.0f} .. {max(r['tuning_cents'] for r in rows):+.0f} cents")
    load_before = os.getloadavg()[0]

    keylib_s, output = run_keylib(manifest, work / "out")
    summaries = [line for line in output.splitlines() if line.startswith("keylib ")]
    keys = read_table(work / "out" / "keys", ["key", "status"])
    chroma = read_table(work / "out" / "chroma", ["tuning_cents"])
    ids = [Path(p).stem for p in paths]
    print(f"\nkeylib  ./submit.sh annotate, local[2], start-up included: {keylib_s:7.1f} s "
          f"({1000 * keylib_s / n:.0f} ms per file, {n / keylib_s:.1f} files/s)")
    for line in summaries:
        print(f"        {line}")
    print(f"        {scores([r['key'] for r in rows], [keys.get(i, {}).get('key') for i in ids])}")
    errors = np.array([chroma[i]["tuning_cents"] - r["tuning_cents"] for i, r in zip(ids, rows)
                       if chroma.get(i, {}).get("tuning_cents") is not None])
    errors = (errors + 50) % 100 - 50  # +49 and -50 cents are the same pitch grid
    print(f"        tuning_cents - applied detuning (mod 100 cents): mean abs {np.abs(errors).mean():.1f}, "
          f"within 5 cents for {np.mean(np.abs(errors) <= 5):.0%} of {len(errors)}")

    if not args.skip_essentia:
        essentia_s, essentia_keys = run_essentia(paths)
        print(f"\nEssentia KeyExtractor, one process, one core:           {essentia_s:7.1f} s "
              f"({1000 * essentia_s / n:.0f} ms per file, {n / essentia_s:.1f} files/s)")
        print(f"        {scores([r['key'] for r in rows], essentia_keys)}")
        ratio = keylib_s / essentia_s
        verdict = "stretch met" if ratio <= 0.5 else "target met" if ratio <= 1.0 else "target missed"
        print(f"\nratio keylib / Essentia (wall time): {ratio:.2f}  (target <= 1.0, stretch 0.5: {verdict})")
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (a shared machine slows both)")


if __name__ == "__main__":
    main()
