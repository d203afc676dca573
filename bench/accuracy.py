"""Accuracy and speed of the key estimators, side by side on the same held-out chroma.

    .venv/bin/python bench/accuracy.py --features /work/data/tsA/chroma_cache.parquet \
        [--features MORE] [--manifest M.csv] [--split heldout] [--model M.onnx] \
        [--reference R.onnx] [--json OUT.json]

Scores (weighted MIREX, fifths counted upward only and both ways; exact accuracy;
categories; per source) for: the shipped model, the reference CNN, and the
Krumhansl-Schmuckler and Temperley templates on the same chroma. Then the speed of the
served networks alone (ONNX Runtime, batched ``predict_probs`` on one CPU thread) in tracks per second, for
tracks of 3.5 minutes, median of several runs. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keylib import templates  # noqa: E402
from keylib.serving import MODELS_DIR, SHIPPED_MODEL, load_model  # noqa: E402
from keylib.train import load_dataset, mirex_summary  # noqa: E402

REFERENCE_MODEL = MODELS_DIR / "keycnn-ref.onnx"  # the reference CNN, for this comparison only


def _row(name: str, refs, ests, sources) -> dict:
    s = mirex_summary(refs, ests)
    out = {"method": name, "n": s["n"], "mirex_up": s["ascending_fifths"]["weighted"],
           "mirex_both": s["both_fifths"]["weighted"], "accuracy": s["accuracy"],
           "categories": s["both_fifths"]["categories"], "by_source": {}}
    for src in sorted(set(sources)):
        m = sources == src
        ss = mirex_summary(refs[m], ests[m])
        out["by_source"][src] = {"n": ss["n"], "mirex_up": ss["ascending_fifths"]["weighted"],
                                 "mirex_both": ss["both_fifths"]["weighted"]}
    return out


def _speed(model, n_tracks: int = 512, frames: int = 1050, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    chromas = [rng.random((12, frames), dtype=np.float32) for _ in range(n_tracks)]
    model.predict_probs(chromas[:64])  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        model.predict_probs(chromas)
        wall.append(n_tracks / (time.perf_counter() - t))
        cpu.append(n_tracks / max(time.process_time() - c, 1e-9))
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", action="append", required=True)
    p.add_argument("--manifest", action="append", default=[])
    p.add_argument("--split", default="heldout", help="rows to score: heldout | train | all")
    p.add_argument("--model", default=str(SHIPPED_MODEL))
    p.add_argument("--reference", default=str(REFERENCE_MODEL))
    p.add_argument("--json", default=None)
    p.add_argument("--speed-tracks", type=int, default=512)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    df = load_dataset(args.features, args.manifest)
    if args.split != "all":
        df = df[df["split"] == args.split].reset_index(drop=True)
    if not len(df):
        print(f"no rows with split {args.split!r}")
        return 3
    refs = np.asarray(df["key_index"])
    sources = np.asarray(df["source"])
    chromas = list(df["chroma"])
    print(f"{len(df)} clips ({args.split}); sources: " +
          ", ".join(f"{s} {int((sources == s).sum())}" for s in sorted(set(sources))))

    rows = []
    models = {}
    shipped = load_model(args.model, threads=1)
    models["shipped " + shipped.version] = shipped
    if args.reference and Path(args.reference).is_file():
        ref = load_model(args.reference, threads=1)
        models["reference " + ref.version] = ref
    for name, m in models.items():
        rows.append(_row(name, refs, m.predict_keys(chromas), sources))
    for prof in ("krumhansl", "temperley"):
        ests = np.array([templates.template_key(c, profile=prof) for c in chromas])
        rows.append(_row(f"template {prof}", refs, ests, sources))

    print()
    print(f"{'method':<40} {'n':>5} {'MIREX up':>9} {'MIREX both':>11} {'exact':>7}  correct/fifth/relative/parallel/other")
    for r in rows:
        c = r["categories"]
        print(f"{r['method']:<40} {r['n']:>5} {r['mirex_up']:>9.3f} {r['mirex_both']:>11.3f} {r['accuracy']:>7.3f}  "
              f"{c['correct']}/{c['fifth']}/{c['relative']}/{c['parallel']}/{c['other']}")
    print()
    print("by source (MIREX, fifths both ways):")
    srcs = sorted(set(sources))
    print(f"{'method':<40} " + " ".join(f"{s[:16]:>16}" for s in srcs))
    for r in rows:
        print(f"{r['method']:<40} " + " ".join(f"{r['by_source'][s]['mirex_both']:>16.3f}" for s in srcs))
    base = next(r for r in rows if r["method"] == "template krumhansl")
    print(f"\nshipped / Krumhansl-Schmuckler (MIREX both): {rows[0]['mirex_both'] / max(base['mirex_both'], 1e-9):.2f}x")

    print("\nspeed: served network alone, batched predict_probs (incl. step pooling), 1 ONNX Runtime thread,")
    print("3.5-min tracks (1,050 frames); per CPU-second = per core, whatever else runs on the machine")
    speed = {}
    for name, m in models.items():
        wall, cpu = _speed(m, n_tracks=args.speed_tracks if name.startswith("shipped") else 64,
                           repeats=5 if name.startswith("shipped") else 2)
        speed[name] = {"wall_tracks_per_s": wall, "tracks_per_cpu_s": cpu}
        print(f"  {name:<40} {wall:10.0f} tracks/s wall  {cpu:10.0f} tracks per CPU-second (medians)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "tracks_per_second": speed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
