"""Benchmark: peak memory of one process decoding hi-res and multichannel masters.

    .venv/bin/python bench/decode_memory.py [--minutes 10]

Files (made once under build/bench-hires/, block by block by keylib.synth.write_long_audio):

- ``silent71.flac``: 10 minutes of 192 kHz 24-bit 7.1 silence (about a megabyte on disk,
  3.7 GB as float32): the catalogue's "tiny file that decodes to gigabytes";
- ``music192.flac``: 10 minutes of 192 kHz 24-bit stereo music in A minor (the key a
  master is made in), and ``music44.flac``, the same music at 44.1 kHz 16-bit.

Each file is analysed in a fresh Python process, as a worker's sandbox child analyses a
track: ``keylib.track.extract_track`` (stat, hash, decode, chroma) and the shipped model's
key. The baseline, in the same run, is the decoding keylib had before bounded decoding: the
analysis window read whole at the file's own rate and channel count, then mixed down and
resampled (``soundfile.read`` + downmix + soxr) before the same chroma and model. Prints
each process's peak resident memory (``VmHWM``; ``ru_maxrss`` would carry the parent's
across exec), the ratio now / before, wall seconds
and the keys. Target: at most 1 GB each, the key of music192 unchanged (it is the key of
music44 and of the truth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from keylib.synth import write_long_audio  # noqa: E402

BUILD = ROOT / "build" / "bench-hires"
KEY_INDEX = 21  # A minor (keylib.keys order: 12 majors, then 12 minors from C)

_NOW = """
from keylib.track import ExtractSettings, extract_track
row = extract_track({"track_id": "t", "uri": PATH}, settings=ExtractSettings())
chroma = row["chroma"]
status, duration = row["status"], row["duration_s"]
"""
_BEFORE = """
import numpy as np, soundfile as sf
from keylib import audio, features
with sf.SoundFile(PATH) as f:
    start, count = audio._window(f.frames, f.samplerate, 600.0)
    f.seek(start)
    block = f.read(frames=count, dtype="float32", always_2d=True)
    sr = f.samplerate
samples = audio._resample(audio._downmix(block), sr)
del block
chroma = features.chroma(samples).reshape(-1)
status, duration = ("silent" if audio.is_silent(samples) else "ok"), len(samples) / features.SAMPLE_RATE
"""
_KEY = """
import json, re, numpy as np
from keylib.keys import KEY_NAMES
from keylib.serving import load_model
key = None
if status == "ok":
    frame = np.asarray(chroma, dtype=np.float32).reshape(12, -1)
    key = KEY_NAMES[int(load_model(None, threads=1).predict_keys([frame])[0])]
print("RESULT", json.dumps({"status": status, "key": key, "duration_s": duration,
      "peak_mb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024}))
"""


def measure(path: Path, way: str) -> dict:
    code = f"PATH = {str(path)!r}\n" + (_NOW if way == "now" else _BEFORE) + _KEY
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        # The baseline may be killed by the kernel on a small machine: that is its figure.
        return {"status": f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}",
                "key": None, "peak_mb": float("nan"), "wall_s": wall}
    result = json.loads(proc.stdout.rsplit("RESULT", 1)[1])
    result["wall_s"] = wall
    return result


def make_files(minutes: float) -> dict[str, Path]:
    BUILD.mkdir(parents=True, exist_ok=True)
    specs = {
        "silent71.flac": dict(sr=192000, channels=8, subtype="PCM_24", key_index=None),
        "music192.flac": dict(sr=192000, channels=2, subtype="PCM_24", key_index=KEY_INDEX),
        "music44.flac": dict(sr=44100, channels=2, subtype="PCM_16", key_index=KEY_INDEX),
    }
    files = {}
    for name, spec in specs.items():
        path = BUILD / f"{minutes:g}min-{name}"
        if not path.exists():
            print(f"writing {path.name} ...", flush=True)
            tmp = path.with_suffix(".part.flac")
            write_long_audio(tmp, duration_s=60 * minutes, **spec)
            tmp.rename(path)
        files[name] = path
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    files = make_files(args.minutes)
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    header = f"{'file':<16} {'on disk':>9} {'float32':>9} {'before MB':>10} {'now MB':>8} {'now/before':>10} " \
             f"{'before s':>8} {'now s':>6}  key before / now"
    print(header)
    print("-" * len(header))
    import soundfile as sf

    for name, path in files.items():
        info = sf.info(str(path))
        float32_mb = info.frames * info.channels * 4 / 2**20
        before, now = measure(path, "before"), measure(path, "now")
        print(f"{name:<16} {path.stat().st_size / 2**20:>7.1f}MB {float32_mb:>7.0f}MB {before['peak_mb']:>10.0f} "
              f"{now['peak_mb']:>8.0f} {now['peak_mb'] / before['peak_mb']:>10.2f} {before['wall_s']:>8.1f} "
              f"{now['wall_s']:>6.1f}  {before['key'] or before['status']} / {now['key'] or now['status']}")
    from keylib.keys import KEY_NAMES

    print(f"truth of the music files: {KEY_NAMES[KEY_INDEX]}")


if __name__ == "__main__":
    main()
