"""Key changes over time: two-key medleys and one-key tracks of held-out music.

    .venv/bin/python bench/segments.py --set DIR [--set DIR2] [--medleys 60] [--penalties 26,32,40] [--from-s 15]
                                       [--medley-sources one-key|all] [--split-evidence 1.0,inf] [--seed 0]

DIR is a training set made by ``make-training-set`` (repeat ``--set`` to draw from several
held-out renders); only its held-out audio is used
(sources and soundfonts training never saw). A medley joins 30 s of one held-out clip to
30 s of another in a different key (audio concatenated, then decoded to features like any
track), each from the clip's start (intros included) or from ``--from-s`` seconds in.
A half's truth is its clip's labelled key, so by default halves come from music in one
key: pop songs and folk tunes (``--medley-sources one-key``). A string-quartet movement
is labelled with its home key but modulates by design, so 30 s from inside it may be in
another key; ``--medley-sources all`` draws from it too. One-key tracks are the held-out
pop songs and folk tunes of a minute or more. For each switch penalty of the
Viterbi smoothing (:mod:`keylib.segments`), with and without the test of a one-key track
for a change the windows missed (``--split-evidence``: its evidence in nats, ``inf`` = no
test), it prints

- the time-weighted MIREX score of the segments against the medley's two keys (fifth up;
  every 0.1 s of the medley weighs the same),
- the share of medleys whose key change is found within 3 s (a segment boundary within 3 s
  of the true one),
- the share of one-key tracks given exactly one segment, and the CPU time that segmenting
  one of them takes (the network included; run the bench on an idle machine to quote it),

with 90% intervals (the score's mean: normal; the two shares: Wilson).

Targets: time-weighted score >= 0.85, boundary within 3 s in >= 80% of medleys,
one segment for >= 90% of one-key tracks.

With ``--pop909 DIR`` (default: ``conf/train.toml``'s POP909 folder) it also scores the
held-out POP909 songs (id >= ``pop909_holdout_from``) whose ``key_audio.txt`` has more than
one key: each is rendered whole, untransposed, with a held-out soundfont and held-out
instruments (as the held-out set is), and its segments (shipped settings) are compared with
the human key regions: time-weighted MIREX score over the annotated span, the share of
annotated key changes with a segment boundary within 3 s, and segments per song. The
annotations' times are the recording's; the MIDI arrangement follows the recording's beats
(``beat_midi.txt`` starts within a second or two of the first annotated key), so the
annotated times are used as they are and a boundary 1-2 s off may be the alignment's.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from keylib import audio, features, segments  # noqa: E402
from keylib.keys import KEY_NAMES, parse_key  # noqa: E402
from keylib.mirex import weighted_score  # noqa: E402
from keylib.tensors import crop  # noqa: E402
from keylib.training.settings import load_train_config  # noqa: E402
from heldout import load_heldout  # noqa: E402

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


def _mean_interval(values) -> str:
    """90% interval of a mean over medleys (normal approximation: 150 medleys make it fair)."""
    values = np.asarray(values, dtype=float)
    half = 1.645 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean() - half:.3f}-{values.mean() + half:.3f}"


def _interval(successes) -> str:
    """Wilson 90% interval of a share: how far a rate over a few dozen cases can be trusted."""
    n, k, z = len(successes), float(np.sum(successes)), 1.645
    if not n:
        return "-"
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return f"{centre - half:.0%}-{centre + half:.0%}"


def _parse_args(argv) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True, action="append",
                   help="training-set folder whose held-out audio is used; repeat for more held-out renders")
    p.add_argument("--model", default=None)
    p.add_argument("--medleys", type=int, default=60)
    p.add_argument("--seed", type=int, default=0, help="draws the medleys' clips and the one-key tracks")
    p.add_argument("--one-key", type=int, default=80, help="one-key tracks to check")
    p.add_argument("--one-key-min-s", type=float, default=60.0,
                   help="the one-key tracks' least length (s); 120 keeps whole pop songs, as catalogues hold them")
    p.add_argument("--from-s", type=float, default=0.0,
                   help="where in each clip a medley's half starts: 0 = its start, intros included (default); "
                        "15 = where the held-out 30 s excerpts are cut")
    p.add_argument("--medley-sources", choices=("one-key", "all"), default="one-key",
                   help="clips the medleys join: pop songs and folk tunes (default), or also quartet movements")
    p.add_argument("--penalties", default="26,32,40", help="switch penalties to compare (shipped: "
                   f"{segments.SWITCH_PENALTY:g})")
    p.add_argument("--windows", default=str(segments.WINDOW_S), help="window lengths (s) to compare")
    p.add_argument("--split-evidence", default=f"{segments.SPLIT_EVIDENCE},inf",
                   help="evidence (nats) that splits a one-key track in two; inf = no such test")
    p.add_argument("--pop909", default=None, help="POP909 folder for its modulating held-out songs "
                   "(default: conf/train.toml's; '' = skip)")
    return p.parse_args(argv)


def _medleys(pool, model, rng: np.random.Generator, *, count: int, from_s: float) -> list:
    """Two-key medleys: 30 s of one clip of ``pool`` then 30 s of another in a different key.

    Returns
    -------
    list of (np.ndarray, list)
        Each medley's chroma and its truth, ``(start s, end s, key index)`` per half.
    """
    long_enough = pool[[c.shape[1] >= (from_s + HALF_S + 1) * features.FRAME_RATE
                        for c in pool["chroma"]]].reset_index(drop=True)
    medleys = []
    while len(medleys) < count:
        a, b = long_enough.iloc[rng.choice(len(long_enough), 2, replace=False)].itertuples(index=False)
        if a.key_index == b.key_index or a.piece == b.piece:
            continue
        n, start = int(HALF_S * features.SAMPLE_RATE), int(from_s * features.SAMPLE_RATE)
        y = np.concatenate([_samples(a.path)[start:start + n], _samples(b.path)[start:start + n]])
        medleys.append((features.chroma(y, feature_version=model.feature_version), [(0.0, HALF_S, a.key_index), (HALF_S, 2 * HALF_S, b.key_index)]))
    return medleys


def _print_bound(medleys: list, model) -> None:
    """The bound segmentation cannot pass: the true boundary, each half named by the network."""
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


def _compare_settings(medleys: list, one_key, model, args: argparse.Namespace) -> None:
    """One printed row per window, switch penalty and split evidence: the medleys' score and
    boundaries found, the one-key tracks left in one segment, and the CPU time per track."""
    print(f"{'window':>7} {'penalty':>8} {'split':>6} {'time-weighted MIREX':>20} {'boundary within 3 s':>20} "
          f"{'one-key: 1 segment':>19} {'ms/track':>9}")
    grid = [(float(w), float(p), float(e)) for w in args.windows.split(",") for p in args.penalties.split(",")
            for e in args.split_evidence.split(",")]
    for window, penalty, evidence in grid:
        settings = dict(switch_penalty=penalty, window_s=window, split_evidence=evidence)
        scores, hits = [], []
        for chroma, truth in medleys:
            segs = segments.key_segments(chroma, model.predict_probs, **settings)
            duration = chroma.shape[1] / features.FRAME_RATE
            scores.append(_time_weighted(segs, truth, duration))
            bounds = [s["end_s"] for s in segs[:-1]]
            hits.append(any(abs(b - HALF_S) <= 3.0 for b in bounds))
        started = time.process_time()
        single = [len(segments.key_segments(c, model.predict_probs, **settings)) == 1 for c in one_key["chroma"]]
        ms = (time.process_time() - started) / len(one_key) * 1000
        print(f"{window:7.0f} {penalty:8.1f} {evidence:6.2f} {np.mean(scores):20.3f} {np.mean(hits):20.1%} "
              f"{np.mean(single):19.1%} {ms:9.1f}"
              f"   (90% intervals: time-weighted {_mean_interval(scores)}, boundary {_interval(hits)}, "
              f"one segment {_interval(single)})")
    print(f"shipped default: SWITCH_PENALTY = {segments.SWITCH_PENALTY}, windows of {segments.WINDOW_S:.0f} s "
          f"every {segments.HOP_S:.0f} s, SPLIT_EVIDENCE = {segments.SPLIT_EVIDENCE}")


def main(argv=None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from keylib.serving import load_model

    model = load_model(args.model)
    df = load_heldout([Path(r) for r in args.set], model.feature_version)
    rng = np.random.default_rng(args.seed)
    # Pop songs and folk tunes stay in one key; quartet movements and the Polish archive's
    # scores modulate by design (their label is the key they start and end in).
    in_one_key = np.array([s == "pop909" or s.startswith("folk") for s in df["source"]])
    pool = df[in_one_key] if args.medley_sources == "one-key" else df
    medleys = _medleys(pool, model, rng, count=args.medleys, from_s=args.from_s)
    long_enough = np.array([c.shape[1] >= args.one_key_min_s * features.FRAME_RATE for c in df["chroma"]])
    one_key = df[in_one_key & long_enough]
    one_key = one_key.iloc[rng.permutation(len(one_key))[: args.one_key]]
    if not len(one_key) or not medleys:
        raise SystemExit(f"no one-key tracks of at least {args.one_key_min_s:g} s or no medleys in {', '.join(args.set)}")
    sources = "pop songs and folk tunes" if args.medley_sources == "one-key" else "all held-out sources"
    print(f"{len(medleys)} two-key medleys of 2 x {HALF_S:.0f} s (from {args.from_s:.0f} s into each clip; {sources}); "
          f"{len(one_key)} one-key held-out tracks ({', '.join(f'{s} {n}' for s, n in one_key['source'].value_counts().items())}; "
          f"{args.one_key_min_s / 60:.1f} to {max((c.shape[1] for c in one_key['chroma']), default=0) / 5 / 60:.1f} min); model {model.version}")
    _print_bound(medleys, model)
    _compare_settings(medleys, one_key, model, args)
    trainset = load_train_config()["trainset"]
    pop909 = trainset["pop909"] if args.pop909 is None else args.pop909
    if pop909:
        _pop909_modulations(Path(pop909), model, holdout_from=int(trainset["pop909_holdout_from"]),
                            penalties=[float(x) for x in args.penalties.split(",")])
    return 0


def _key_regions(path: Path) -> list[tuple[float, float, int]]:
    """(start s, end s, key index) of a POP909 ``key_audio.txt``."""
    regions = []
    for line in path.read_text().splitlines():
        if line.strip():
            start, end, label = line.split()
            regions.append((float(start), float(end), parse_key(label)))
    return regions


def _pop909_modulations(root: Path, model, *, holdout_from: int, penalties: list[float]) -> None:
    """Segments of the held-out POP909 songs that change key, against their human key regions:
    each song's with the shipped settings printed, then a summary per switch penalty."""
    import tempfile

    import soundfile as sf

    from keylib.training.trainset import (HELDOUT_BY_ROLE, HELDOUT_SOUNDFONTS, RENDER_SR, pop909_piece, render_midi,
                                          write_midi)

    songs = []
    for path in sorted(root.glob("*/key_audio.txt")):
        song = path.parent.name
        if song.isdigit() and int(song) >= holdout_from:
            regions = _key_regions(path)
            if len({k for *_, k in regions}) > 1:
                songs.append((song, regions))
    if not songs:
        print(f"no modulating held-out POP909 songs under {root}")
        return
    penalties = sorted({*penalties, segments.SWITCH_PENALTY})
    tally = {p: {"scores": [], "hits": 0, "changes": 0, "segments": []} for p in penalties}
    print(f"\n{len(songs)} held-out POP909 songs that change key (key_audio.txt), rendered whole with "
          f"held-out soundfonts; shipped segment settings")
    with tempfile.TemporaryDirectory(prefix="keylib-bench-") as tmp:
        for i, (song, regions) in enumerate(songs):
            rng = np.random.default_rng(i)
            piece = pop909_piece(root, song, regions[0][2], rng, transpose=0, programs_by_role=HELDOUT_BY_ROLE,
                                 split="heldout", whole=True)
            soundfont = HELDOUT_SOUNDFONTS[i % len(HELDOUT_SOUNDFONTS)]
            y = render_midi(write_midi(piece.notes, piece.programs, Path(tmp) / "x.mid"), Path(tmp) / "x.wav",
                            soundfont=soundfont)
            sf.write(Path(tmp) / "x.flac", y, RENDER_SR)  # through the decoder, as any track
            chroma = features.chroma(_samples(Path(tmp) / "x.flac"), feature_version=model.feature_version)
            span_end = min(regions[-1][1], chroma.shape[1] / features.FRAME_RATE)
            shifted = [(a - regions[0][0], b - regions[0][0], k) for a, b, k in regions]
            true_changes = [b for (_, b, k), (_, _, k2) in zip(regions, regions[1:]) if k != k2]
            for penalty, t in tally.items():
                segs = segments.key_segments(chroma, model.predict_probs, switch_penalty=penalty)
                shown = [{**s, "start_s": s["start_s"] - regions[0][0], "end_s": s["end_s"] - regions[0][0]}
                         for s in segs]
                t["scores"].append(_time_weighted(shown, shifted, span_end - regions[0][0]))
                t["hits"] += sum(any(abs(s["end_s"] - c) <= 3.0 for s in segs[:-1]) for c in true_changes)
                t["changes"] += len(true_changes)
                t["segments"].append(len(segs))
                if penalty == segments.SWITCH_PENALTY:
                    print(f"  {song}: truth {' | '.join(f'{a:.0f}-{b:.0f} {KEY_NAMES[k]}' for a, b, k in regions)}")
                    found_text = " | ".join(f"{s['start_s']:.0f}-{s['end_s']:.0f} {s['key']}" for s in segs)
                    print(f"  {' ' * len(song)}  found {found_text}  (time-weighted {t['scores'][-1]:.2f})")
    for penalty, t in tally.items():
        print(f"POP909 modulating songs, switch penalty {penalty:g}: time-weighted MIREX {np.mean(t['scores']):.3f}, "
              f"key changes found within 3 s {t['hits']}/{t['changes']} ({t['hits'] / max(t['changes'], 1):.0%}), "
              f"segments per song {np.mean(t['segments']):.1f} (truth {np.mean([len(r) for _, r in songs]):.1f})")


if __name__ == "__main__":
    sys.exit(main())
