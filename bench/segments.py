"""Key changes over time: two-key medleys and one-key tracks of held-out music.

    .venv/bin/python bench/segments.py --set DIR [--medleys 60] [--penalties 4,8,12,16,24]

DIR is a training set made by ``make-training-set``; only its held-out audio is used
(sources and soundfonts training never saw). A medley joins 30 s of one held-out clip to
30 s of another in a different key (audio concatenated, then decoded to features like any
track); one-key tracks are the held-out whole songs and pieces. For each switch penalty of
the Viterbi smoothing (:mod:`keylib.segments`) it prints

- the time-weighted MIREX score of the segments against the medley's two keys (fifth up;
  every 0.1 s of the medley weighs the same),
- the share of medleys whose key change is found within 3 s (a segment boundary within 3 s
  of the true one),
- the share of one-key tracks given exactly one segment.

Targets (issue 12): time-weighted score >= 0.85, boundary within 3 s in >= 80% of medleys,
one segment for >= 90% of one-key tracks. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keylib import audio, features, segments  # noqa: E402
from keylib.keys import KEY_NAMES, parse_key  # noqa: E402
from keylib.mirex import weighted_score  # noqa: E402
from keylib.tensors import crop  # noqa: E402
from keylib.train import load_dataset  # noqa: E402

HALF_S = 30.0


def _samples(path: Path) -> np.ndarray:
    return audio.decode(path.read_bytes(), ext=path.suffix).samples


def _time_weighted(segs: list[dict], truth: list[tuple[float, float, int]], duration: float) -> float:
    grid = np.arange(0.05, duration, 0.1)
    score = 0.0
    for t in grid:
        ref = next((k for a, b, k in truth if a <= t < b), truth[-1][2])
        est = next((parse_key(s["key"]) for s in segs if s["start_s"] <= t < s["end_s"]), parse_key(segs[-1]["key"]))
        score += weighted_score(ref, est)
    return score / len(grid)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--medleys", type=int, default=60)
    p.add_argument("--one-key", type=int, default=80, help="one-key tracks to check")
    p.add_argument("--penalties", default="4,8,12,16,24")
    p.add_argument("--windows", default=str(segments.WINDOW_S), help="window lengths (s) to compare")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from keylib.serving import load_model

    model = load_model(args.model)
    root = Path(args.set)
    df = load_dataset([root / "chroma_cache.parquet"])
    df = df[df["split"] == "heldout"].reset_index(drop=True)
    path_of = lambda r: root / "audio" / "heldout" / r.source / f"{r.track_id}.flac"  # noqa: E731
    rng = np.random.default_rng(0)
    long_enough = df[[c.shape[1] >= (HALF_S + 1) * features.FRAME_RATE for c in df["chroma"]]].reset_index(drop=True)
    medleys = []
    while len(medleys) < args.medleys:
        a, b = long_enough.iloc[rng.choice(len(long_enough), 2, replace=False)].itertuples(index=False)
        if a.key_index == b.key_index or a.piece == b.piece:
            continue
        n = int(HALF_S * features.SAMPLE_RATE)
        y = np.concatenate([_samples(path_of(a))[:n], _samples(path_of(b))[:n]])
        medleys.append((features.chroma(y), [(0.0, HALF_S, a.key_index), (HALF_S, 2 * HALF_S, b.key_index)]))
    # One-key tracks: pop songs and folk tunes (a classical movement modulates by design).
    one_key = df[[c.shape[1] >= 60 * features.FRAME_RATE and not s.startswith("classical")
                  for c, s in zip(df["chroma"], df["source"])]]
    one_key = one_key.iloc[rng.permutation(len(one_key))[: args.one_key]]
    print(f"{len(medleys)} two-key medleys of 2 x {HALF_S:.0f} s; {len(one_key)} one-key held-out pop songs and folk tunes "
          f"(60 s to {max(c.shape[1] for c in one_key['chroma']) / 5 / 60:.1f} min); model {model.version}")
    # The bound segmentation cannot pass: the true boundary, each half named by the network.
    half = int(HALF_S * features.FRAME_RATE)
    bound = []
    for chroma, truth in medleys:
        probs = model.predict_probs([crop(chroma, half, start=0), crop(chroma, chroma.shape[1] - half, start=half)])
        segs = [{"start_s": 0.0, "end_s": HALF_S, "key": KEY_NAMES[int(probs[0].argmax())]},
                {"start_s": HALF_S, "end_s": chroma.shape[1] / features.FRAME_RATE,
                 "key": KEY_NAMES[int(probs[1].argmax())]}]
        bound.append(_time_weighted(segs, truth, chroma.shape[1] / features.FRAME_RATE))
    print(f"true boundary, each half's key from the network: time-weighted MIREX {np.mean(bound):.3f} "
          "(what segmentation can reach with this network)")
    print(f"{'window':>7} {'penalty':>8} {'time-weighted MIREX':>20} {'boundary within 3 s':>20} {'one-key: 1 segment':>19}")
    grid = [(float(w), float(p)) for w in args.windows.split(",") for p in args.penalties.split(",")]
    for window, penalty in grid:
        scores, hits = [], []
        for chroma, truth in medleys:
            segs = segments.key_segments(chroma, model.predict_probs, switch_penalty=penalty, window_s=window)
            duration = chroma.shape[1] / features.FRAME_RATE
            scores.append(_time_weighted(segs, truth, duration))
            bounds = [s["end_s"] for s in segs[:-1]]
            hits.append(any(abs(b - HALF_S) <= 3.0 for b in bounds))
        single = [len(segments.key_segments(c, model.predict_probs, switch_penalty=penalty, window_s=window)) == 1
                  for c in one_key["chroma"]]
        print(f"{window:7.0f} {penalty:8.1f} {np.mean(scores):20.3f} {np.mean(hits):20.1%} {np.mean(single):19.1%}")
    print(f"shipped default: SWITCH_PENALTY = {segments.SWITCH_PENALTY}, windows of {segments.WINDOW_S:.0f} s "
          f"every {segments.HOP_S:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
