"""One file, fresh processes: ``keylib analyze song.mp3`` against Essentia's KeyExtractor.

    .venv/bin/python bench/analyze.py [--seconds 30] [--runs 5] [--file SONG]

Both sides start from nothing, as a user's one-off command does: ``keylib analyze`` (the
installed console script: imports, model load, decode, chroma, key) and a fresh Python
process running Essentia's ``KeyExtractor`` (decoding included; ``bench/peers.py``'s
``essentia_command``, Essentia installed on demand outside keylib's environment). The
file defaults to a generated 30 s stereo 44.1 kHz 192 kbps mp3. One untimed run of each
warms the disk cache; then the two alternate, and the medians of wall time and of CPU time
(user + system, steadier on a shared machine) and their ratios are printed (target:
keylib / Essentia <= 1.0x). Also prints where keylib's time goes, from
``python -X importtime``. No asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import essentia, essentia_command  # noqa: E402


def make_song(folder: Path, seconds: float) -> Path:
    """A stereo 44.1 kHz 192 kbps mp3 of a generated chord progression (ffmpeg encodes)."""
    import numpy as np

    from keylib import synth

    song = folder / f"song-{seconds:g}s.mp3"
    if song.exists():
        return song
    mono = synth.chord_progression(2, duration_s=seconds, sr=44100, seed=11)
    stereo = np.stack([mono, 0.8 * mono], axis=1)
    wav = synth.write_audio(folder / "song.wav", stereo, sr=44100)
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-ac", "2", "-b:a", "192k",
                        str(song)], check=True)
    else:
        synth.write_audio(song, stereo, sr=44100)
    return song


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and the last output line of a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def import_costs(command: list[str], env: dict, top: int = 6) -> list[tuple[str, float]]:
    """The slowest top-level imports of ``command`` (python -X importtime), in seconds."""
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True,
                          env=env, timeout=300)
    costs = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if cumulative.isdigit() and not name.startswith(" ") and "." not in name:
            costs[name] = max(costs.get(name, 0), int(cumulative) / 1e6)
    return sorted(costs.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated song")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--file", type=Path, default=None, help="analyze this file instead of a generated one")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="keylib-bench-analyze-"))
    song = args.file or make_song(scratch, args.seconds)
    essentia()  # installs Essentia on first use (untimed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    exe = Path(sys.executable).parent / "keylib"
    keylib_cmd = [str(exe), "analyze", str(song)] if exe.exists() else [sys.executable, "-m", "keylib.cli",
                                                                         "analyze", str(song)]
    peer_cmd = essentia_command(song)
    print(f"{song} ({song.stat().st_size / 1e6:.2f} MB); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (other work on the machine skews figures)")
    timed(keylib_cmd, env), timed(peer_cmd, env)  # warm the disk cache
    ours, theirs = [], []
    for _ in range(args.runs):
        *result, our_out = timed(keylib_cmd, env)
        ours.append(result)
        *result, their_out = timed(peer_cmd, env)
        theirs.append(result)
    for name, runs, out in (("keylib analyze", ours, our_out), ("Essentia KeyExtractor", theirs, their_out)):
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"{name + ' (fresh process)':<38} wall {statistics.median(walls):5.2f} s (min {min(walls):.2f}), "
              f"CPU {statistics.median(cpus):5.2f} s (medians of {args.runs})  -> {' '.join(out.split()[-4:])}")
    wall_ratio = statistics.median(w for w, _ in ours) / statistics.median(w for w, _ in theirs)
    cpu_ratio = statistics.median(c for _, c in ours) / statistics.median(c for _, c in theirs)
    print(f"ratio keylib / Essentia: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x (target <= 1.0x; on a loaded "
          f"machine the CPU ratio is the steadier one)")
    probe = [sys.executable, "-m", "keylib.cli", "analyze", str(song)]
    print("keylib's slowest imports (python -X importtime, cumulative): " +
          ", ".join(f"{name} {s:.2f} s" for name, s in import_costs(probe, env)))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
