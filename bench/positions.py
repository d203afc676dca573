"""How a network hears labelled tracks by where a window sits in them: is the label the key of
the whole piece, or only of its opening?

    .venv/bin/python bench/positions.py --set DIR [--set DIR ...] [--split validation] \
        [--model keylib/models/keynet-eq.onnx] [--source polish-scores]

Each DIR is a training-set folder (``chroma_cache.parquet`` with its labels, as
``make-training-set`` writes it; ``--cache NAME`` reads another cache file of the folder).
For the tracks of ``--split`` (and ``--source``, if given), the served model names a key for
the whole track, its first 30 s, the 30 s from 45 s and its last 30 s, and each answer is
counted against the track's label (``keylib.mirex.error_kind``): correct, a fifth above (the
dominant), a fifth below (the subdominant), relative, parallel, other. A window that often
hears the dominant where the opening and the end hear the label is music that modulates
there, so crops of it train a network to name the key a fifth below what it hears. That is
why training renders a Polish score's opening and ending
(``keylib.training.trainset.polish.opening_and_ending``). Use a network that did not train
on the tracks (the validation split, or a model trained without the source). Prints
shares and the mean MIREX score (fifth up); asserts nothing.

``--combine WO,WE`` adds a row that names the key from the whole track's log-probabilities
plus WO times its first 30 s's and WE times its last 30 s's: does stressing where a piece
states its key help? (On the validation render 1,0.25 gained 0.012 on 116 tracks of at
least 60 s; on a fresh held-out render it lost 0.032, quartets 0.907 to 0.759:
docs/model.md.) ``--min-s`` keeps only tracks at least that long, so that every row scores
the same tracks.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keylib import mirex  # noqa: E402
from keylib.features import FRAME_RATE  # noqa: E402
from keylib.serving import load_model  # noqa: E402
from keylib.tensors import crop  # noqa: E402
from keylib.training.data import load_dataset  # noqa: E402

WINDOW_S = 30
# (name, start s, end s): see window()
WINDOWS = (("whole", None, None), ("first 30 s", 0, WINDOW_S), ("30 s from 45 s", 45, 45 + WINDOW_S),
           ("last 30 s", -WINDOW_S, None))
KINDS = ("correct", *mirex.ERROR_KINDS)  # keylib.mirex.error_kind: the fifth above and below apart


def window(chroma: np.ndarray, start_s: int | None, end_s: int | None) -> np.ndarray | None:
    """The frames from ``start_s`` to ``end_s`` (seconds; a negative start counts from the end,
    None is the track's end; both None: the whole track) re-normalised as extraction would
    give them alone (:func:`keylib.tensors.crop`), or None when the track is shorter."""
    n = chroma.shape[1]
    if start_s is None:
        return chroma
    start = round(start_s * FRAME_RATE) + (n if start_s < 0 else 0)
    end = n if end_s is None else round(end_s * FRAME_RATE)
    return crop(chroma, end - start, start=start) if 0 <= start < end <= n else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", required=True, help="training-set folder (repeatable)")
    p.add_argument("--cache", default="chroma_cache.parquet", help="chroma cache file in each folder")
    p.add_argument("--split", default="validation", help="the rows' split (default validation)")
    p.add_argument("--source", default=None, help="only this source (default: every source)")
    p.add_argument("--model", default=None, help="served model (.onnx; default: the shipped one)")
    p.add_argument("--min-s", type=float, default=0.0, help="only tracks at least this long (s)")
    p.add_argument("--combine", default=None, metavar="WO,WE",
                   help="add the row whole + WO x first 30 s + WE x last 30 s (log-probabilities)")
    args = p.parse_args(argv)
    try:
        weights = tuple(float(w) for w in args.combine.split(",")) if args.combine else None
    except ValueError:
        weights = None
    if args.combine and (weights is None or len(weights) != 2):
        p.error(f"--combine takes two numbers, WO,WE; got {args.combine!r}")
    model = load_model(args.model, threads=2)
    df = load_dataset([Path(d) / args.cache for d in args.set], feature_version=model.feature_version)
    df = df[df["split"] == args.split]
    if args.source:
        df = df[df["source"] == args.source]
    df = df[[c.shape[1] >= args.min_s * FRAME_RATE for c in df["chroma"]]]
    if not len(df):
        print(f"no tracks of split {args.split!r}" + (f" and source {args.source!r}" if args.source else ""))
        return 1
    print(f"model {model.version} ({model.feature_version}); split {args.split}; shares of the answers")
    print(f"{'source':<20}{'window':<24}{'n':>6}" + "".join(f"{k:>13}" for k in KINDS) + f"{'mirex':>8}")

    def row(source: str, name: str, refs: list[int], ests) -> None:
        counts = Counter(mirex.error_kind(r, int(e)) for r, e in zip(refs, ests))
        score = np.mean([mirex.weighted_score(r, int(e)) for r, e in zip(refs, ests)])
        print(f"{source:<20}{name:<24}{len(refs):>6}" + "".join(f"{counts[k] / len(refs):>13.3f}" for k in KINDS)
              + f"{score:>8.3f}")

    for source, tracks in df.groupby("source"):
        for name, start_s, end_s in WINDOWS:
            pairs = [(int(k), w) for k, c in zip(tracks["key_index"], tracks["chroma"])
                     if (w := window(c, start_s, end_s)) is not None]
            if pairs:
                row(source, name, [k for k, _ in pairs], model.predict_keys([w for _, w in pairs]))
        if weights and (named := combined(model, tracks["key_index"], tracks["chroma"], weights))[0]:
            row(source, f"whole+{weights[0]:g}first+{weights[1]:g}last", *named)
    return 0


def combined(model, keys, chromas, weights: tuple[float, float]) -> tuple[list[int], np.ndarray]:
    """Labels and keys named from the whole track's log-probabilities plus ``weights`` times its
    first and last :data:`WINDOW_S` (tracks at least that long)."""
    kept = [(int(k), c) for k, c in zip(keys, chromas) if c.shape[1] >= WINDOW_S * FRAME_RATE]
    if not kept:
        return [], np.zeros(0, dtype=int)
    whole, first, last = (np.log(np.maximum(model.predict_probs([window(c, a, b) for _, c in kept]), 1e-9))
                          for a, b in ((None, None), (0, WINDOW_S), (-WINDOW_S, None)))
    return [k for k, _ in kept], (whole + weights[0] * first + weights[1] * last).argmax(axis=1)


if __name__ == "__main__":
    raise SystemExit(main())
