"""Candidates compared on validation: the table model selection reads, from the candidates' cards.

    .venv/bin/python bench/candidates.py DIR [DIR ...] [--update-card keylib/models/keynet-eq.json]

Each DIR holds a model written by ``./submit.sh train`` (its ``*.json`` card). Candidates are
grouped by the card's ``feature_version`` and ``architecture``, the network training
started from (``train --init-from``), the hours of training data (another render is
another candidate) and ``--group-by`` (a training setting, default none). Each group is
printed with the mean and the spread (max - min) over its seeds of the validation scores
(MIREX, fifths both ways, and in brackets fifth up as mir_eval counts; the mean of whole
tracks and their 30 s excerpts from 15 s), overall and by the sound source that rendered
the validation tracks: the validation render's engine (TiMidity++ and freepats), which
training never hears, is what candidates are chosen on. Each seed's line is followed,
where its card has them, by the scores by the music's source (fifth up) with the errors a
fifth above and below: a trade of dominant for subdominant errors shows there. Held-out
scores are not read.
With ``--update-card`` the table goes into that card as ``selection``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keylib.training.settings import TrainConfig  # noqa: E402

UNSEEN = "freepats"


def candidate_row(card: dict) -> dict:
    """One candidate's validation figures: overall, on the unseen engine, on the training sounds."""
    val = card["validation"]
    by_sound = val.get("by_sound_source", {})
    seen = {k: v for k, v in by_sound.items() if k != UNSEEN}
    n_seen = sum(v["n"] for v in seen.values())
    return {
        "version": card["version"], "seed": card["training"]["config"]["seed"],
        "best_epoch": card["training"]["best_epoch"],
        "validation": (val["whole"]["both_fifths"]["weighted"] + val["excerpt"]["both_fifths"]["weighted"]) / 2,
        "validation_fifth_up": (val["whole"]["ascending_fifths"]["weighted"]
                                + val["excerpt"]["ascending_fifths"]["weighted"]) / 2,
        "unseen_engine": by_sound.get(UNSEEN, {}).get("mean", float("nan")),
        "unseen_engine_fifth_up": by_sound.get(UNSEEN, {}).get("mean_fifth_up", float("nan")),
        "unseen_n": by_sound.get(UNSEEN, {}).get("n", 0),
        "training_sounds": sum(v["mean"] * v["n"] for v in seen.values()) / n_seen if n_seen else float("nan"),
        "ece": card["calibration"]["validation_ece_after"],
        # by the music's source (cards since 2026.12-7): fifth-up mean, errors a fifth above / below
        "by_source": {source: (v["mean_fifth_up"], v["errors"]["fifth_above"], v["errors"]["fifth_below"])
                      for source, v in val.get("by_source", {}).items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="model folders written by ./submit.sh train")
    p.add_argument("--group-by", default="", help="a [train] setting that also tells candidates apart")
    p.add_argument("--update-card", default=None, help="write the table into this card as 'selection'")
    args = p.parse_args(argv)
    groups: dict[str, list[dict]] = defaultdict(list)
    for d in args.dirs:
        card = json.loads(next(Path(d).glob("*.json")).read_text())
        name = f"{card['feature_version']} {card['architecture']}"
        start = card["training"].get("initialised_from")
        if start:  # a warm start (train --init-from) is a candidate of its own
            name += f" from {start['version']}"
        hours = card.get("data", {}).get("train", {}).get("hours")
        if hours is not None:  # other training data (another render): a candidate of its own
            name += f" on {hours:g} h"
        if args.group_by:
            # a card older than the setting trained with its default
            value = card["training"]["config"].get(args.group_by, getattr(TrainConfig(), args.group_by, None))
            name += f" {args.group_by}={value}"
        groups[name].append(candidate_row(card))
    table = {}
    fields = ("validation", "validation_fifth_up", "unseen_engine", "unseen_engine_fifth_up", "training_sounds")
    print(f"{'candidate':<72}{'seeds':>6}{'validation':>18}{'(fifth up)':>18}{'unseen engine':>18}{'(fifth up)':>18}"
          f"{'training sounds':>18}{'ECE':>7}")
    for name, rows in groups.items():
        entry = {"seeds": [r["seed"] for r in rows], "candidates": rows}
        cells = []
        for field in fields:
            values = [r[field] for r in rows]
            entry[field] = {"mean": sum(values) / len(values), "spread": max(values) - min(values)}
            cells.append(f"{entry[field]['mean']:.4f} ±{entry[field]['spread'] / 2:.4f}")
        entry["ece_mean"] = sum(r["ece"] for r in rows) / len(rows)
        table[name] = entry
        print(f"{name:<72}{len(rows):>6}" + "".join(f"{c:>18}" for c in cells) + f"{entry['ece_mean']:>7.3f}")
        for r in rows:
            print(f"    seed {r['seed']:<4} best epoch {r['best_epoch']:<3} validation {r['validation']:.4f} "
                  f"({r['validation_fifth_up']:.4f})  unseen engine {r['unseen_engine']:.4f} "
                  f"({r['unseen_engine_fifth_up']:.4f}, n={r['unseen_n']})  training sounds {r['training_sounds']:.4f}")
            if r["by_source"]:
                print("        by source, fifth up (errors a fifth above/below): " + ", ".join(
                    f"{source} {up:.4f} ({above}/{below})" for source, (up, above, below) in r["by_source"].items()))
    if args.update_card:
        path = Path(args.update_card)
        card = json.loads(path.read_text())
        card["selection"] = {"command": "bench/candidates.py " + " ".join(args.dirs), "unseen_sound_source": UNSEEN,
                             "score": "MIREX both fifths, mean of whole tracks and 30 s excerpts", "groups": table}
        path.write_text(json.dumps(card, indent=1))
        print(f"card updated: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
