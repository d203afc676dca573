"""Held-out accuracy by length and by source, keylib against Essentia on the same files.

    .venv/bin/python bench/accuracy.py --set DIR [--set DIR2 ...] [--model keylib/models/keynet-eq.onnx] \
        [--baseline OTHER.onnx [--baseline-cache chroma_v2.parquet]] \
        [--profiles bgate,edma,temperley,krumhansl,shaath] [--limit N] [--out build/bench-accuracy]

Each DIR is a training set made by ``make-training-set`` (its ``manifest.csv`` and
``chroma_cache.parquet``); only its ``split == heldout`` rows are scored: whole sources and
General MIDI soundfonts that training never used (see the README). Several ``--set``
folders (held-out renders with other seeds) are scored as one held-out set, and the
calibration also per folder. Every method sees the same files in the same run:

- keylib's served model (ONNX Runtime, calibrated) on the chroma that extraction computes
  for each file (the cache was computed by the same code);
- the Krumhansl-Schmuckler and Temperley templates on the same chroma;
- Essentia's ``KeyExtractor`` on the audio file itself, decoding included, with each
  profile (Essentia is AGPL: installed on demand by ``bench/peers.py``, never a dependency);
- with ``--baseline``, a second served network (the shipped one, when ``--model`` is a
  candidate), on its own feature version's cache of the same files (``--baseline-cache``).

Prints the weighted MIREX score with the fifth counted upward only ("up", mir_eval 0.8.2 and
the MIREX evaluator) and both ways ("both", madmom), by length bucket (up to 30 s,
30-120 s, whole tracks over 120 s), by source, by sound source (soundfont), and for songs
that are held out both whole and as their 30 s excerpt from 15 s, whole against excerpt on
the same songs. Then keylib's
calibration: expected calibration error over 15 bins and a reliability diagram (PNG), with
what a perfectly calibrated model would read on as many files (the 15-bin ECE of a few
hundred files is biased upwards by sampling alone), and the share of files its tonality
classifier calls ``tonal`` (every held-out file has a key). With ``--baseline``, the model's score
minus the baseline's on the same files, file by file (fifth up), with a bootstrap interval,
overall and by source and sound source: whether a candidate is better or within noise.
Essentia's answers are cached per file in ``OUT/essentia.json`` so that reruns are cheap.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from keylib import features, templates  # noqa: E402
from keylib.keys import KEY_NAMES, parse_key  # noqa: E402
from keylib.mirex import calibration_error, score_matrix  # noqa: E402
from keylib.report import plot_reliability  # noqa: E402
from keylib.serving import track_seconds  # noqa: E402
from keylib.tensors import pitch_classes  # noqa: E402
from keylib.training.scores import LENGTH_BUCKETS, length_bucket, mirex_summary  # noqa: E402
from heldout import load_heldout  # noqa: E402

DEFAULT_PROFILES = ("bgate", "edma", "temperley", "krumhansl", "shaath")


def _scores(refs: np.ndarray, ests: np.ndarray) -> dict:
    s = mirex_summary(refs, ests)
    return {"n": s["n"], "up": s["ascending_fifths"]["weighted"], "both": s["both_fifths"]["weighted"],
            "exact": s["accuracy"]}


def _essentia_answers(paths: list[str], profiles: tuple[str, ...], cache_path: Path) -> dict[str, dict]:
    from peers import essentia_keys

    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    # Answers are kept by the file's real path: a folder of links to the same audio (another
    # feature version's chroma cache beside the same files) reuses them.
    real = {p: str(Path(p).resolve()) for p in paths}
    todo = [p for p in paths if not all(prof in cache.get(real[p], {}) for prof in profiles)]
    t0 = time.perf_counter()
    for i, path in enumerate(todo, 1):
        cache[real[path]] = {**cache.get(real[path], {}), **essentia_keys(path, profiles=profiles)}
        if i % 25 == 0 or i == len(todo):
            cache_path.write_text(json.dumps(cache))
            print(f"  essentia: {i}/{len(todo)} files, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {p: cache[real[p]] for p in paths}


def _null_ece(confidence: np.ndarray, *, draws: int = 500) -> dict:
    """The 15-bin ECE a perfectly calibrated model with these confidences would read: each
    file right with probability equal to its confidence (mean and 5-95% of ``draws``)."""
    rng = np.random.default_rng(0)
    eces = [calibration_error(confidence, rng.random(len(confidence)) < confidence)["ece"] for _ in range(draws)]
    return {"mean": float(np.mean(eces)), "p5": float(np.percentile(eces, 5)), "p95": float(np.percentile(eces, 95))}


def _speed(model, *, n_tracks: int = 512, frames: int = 1050, repeats: int = 5) -> tuple[float, float]:
    """Tracks per second (wall, and per CPU-second) of the served network alone, batched,
    on random 3.5-minute chroma (1,050 frames)."""
    rng = np.random.default_rng(0)
    rows = features.n_rows(model.feature_version)
    chromas = [rng.random((rows, frames), dtype=np.float32) for _ in range(n_tracks)]
    model.predict_probs(chromas[:64])  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        model.predict_probs(chromas)
        wall.append(n_tracks / (time.perf_counter() - t))
        cpu.append(n_tracks / max(time.process_time() - c, 1e-9))
    return float(np.median(wall)), float(np.median(cpu))


def _update_card(model, report: dict, png: Path, *, argv) -> None:
    """Write the benchmark into the model's card and its reliability diagram beside it."""
    import shutil

    card_path = Path(model.info.card_path)
    card = json.loads(card_path.read_text())
    conv = lambda d: {"ascending_fifths": round(d["up"], 4), "both_fifths": round(d["both"], 4),  # noqa: E731
                      "accuracy": round(d["exact"], 4)}
    name = f"keylib {model.version}"
    card["benchmark"] = {
        "script": "bench/accuracy.py " + " ".join(str(a) for a in argv if a != "--update-card"),
        "heldout_clips": report["files"],
        "mirex": {(f"shipped {model.version}" if k == name else k): conv(v["all"]) for k, v in report["methods"].items()},
        "by_length": {k: {b: conv(d) for b, d in v["by_length"].items()} for k, v in report["methods"].items()},
        "by_source": {k: {s: conv(d) for s, d in v["by_source"].items()} for k, v in report["methods"].items()},
        "by_sound_source": {k: {s: conv(d) for s, d in v["by_sound"].items()} for k, v in report["methods"].items()},
        "minor_as_relative_major": {k: v["minor_as_relative_major"] for k, v in report["methods"].items()},
        "paired_whole_vs_excerpt": report.get("paired"),
        "calibration": {"ece_15_bins": round(report["calibration"]["ece"], 4),
                        "ece_if_perfectly_calibrated": round(report["calibration"]["perfectly_calibrated"]["mean"], 4),
                        "ece_by_length": {k: round(v["ece"], 4) for k, v in report["calibration"]["by_length"].items()},
                        "ece_by_set": {k: round(v["ece"], 4) for k, v in report["calibration"]["by_set"].items()},
                        "reliability_diagram": f"{card_path.stem}-reliability.png"},
        "network_tracks_per_s": report["network_tracks_per_s"],
    }
    card_path.write_text(json.dumps(card, indent=1))
    shutil.copyfile(png, card_path.with_name(f"{card_path.stem}-reliability.png"))
    print(f"card updated: {card_path}")


def _parse_args(argv) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True, action="append",
                   help="training-set folder (manifest.csv, chroma_cache.parquet); repeat for more held-out renders")
    p.add_argument("--model", default=None, help="served model (.onnx); default: the shipped one")
    p.add_argument("--baseline", default=None,
                   help="another served model (.onnx) scored on the same files and compared file by file")
    p.add_argument("--baseline-cache", default="chroma_cache.parquet",
                   help="the baseline's chroma cache file in each --set folder (when its feature version "
                        "differs from the model's)")
    p.add_argument("--profiles", default=",".join(DEFAULT_PROFILES), help="Essentia KeyExtractor profiles")
    p.add_argument("--no-essentia", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="score at most N held-out files (smoke runs)")
    p.add_argument("--out", default=str(ROOT / "build" / "bench-accuracy"))
    p.add_argument("--update-card", action="store_true",
                   help="record these figures in the model's card (benchmark) and put the reliability "
                        "diagram beside it: how the shipped card and README figures are made")
    return p.parse_args(argv)


def _held_out_files(df, roots: list[Path]) -> SimpleNamespace:
    """The scored files' truth and groups, with a line on where they come from.

    Returns
    -------
    SimpleNamespace
        ``refs`` (key indices), ``buckets`` (length bucket names), ``bucket_names`` (those
        present, in :data:`LENGTH_BUCKETS` order), ``sources``, ``render`` (folder index)
        ``sounds`` (soundfont) and ``paths``.
    """
    seconds = track_seconds(df["chroma"])
    buckets = np.array([length_bucket(x) for x in seconds])
    sounds = df["soundfont"] if "soundfont" in df else ["?"] * len(df)
    files = SimpleNamespace(paths=[str(p) for p in df["path"]], render=np.asarray(df["render"]),
                            refs=np.asarray(df["key_index"]), buckets=buckets, sources=np.asarray(df["source"]),
                            sounds=np.asarray(sounds, dtype=str),
                            bucket_names=[name for name, _, _ in LENGTH_BUCKETS if name in set(buckets)])
    sources = files.sources
    print(f"{len(df)} held-out files from {', '.join(map(str, roots))}: " + ", ".join(
        f"{s} {int((sources == s).sum())}" for s in sorted(set(sources))))
    print("soundfonts: " + ", ".join(sorted(set(df["soundfont"]))) if "soundfont" in df else "")
    return files


def _answers(model, df, files: SimpleNamespace, args, out: Path,
             baseline: tuple[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every method's key for every file; ``baseline``: (name, probabilities) of another
    served network on the same files, listed second.

    Returns
    -------
    probs : np.ndarray
        keylib's calibrated probabilities, one row per file.
    methods : dict
        Method name to its key indices: keylib, the baseline, the two templates, then each
        Essentia profile.
    """
    t0 = time.perf_counter()
    probs = model.predict_probs(list(df["chroma"]))
    print(f"keylib {model.version}: {len(df)} files in {time.perf_counter() - t0:.2f} s (network only)")
    methods = {f"keylib {model.version}": probs.argmax(1)}
    if baseline is not None:
        methods[baseline[0]] = baseline[1].argmax(1)
    for prof in ("krumhansl", "temperley"):
        methods[f"template {prof} (keylib chroma)"] = np.array(
            [templates.template_key(pitch_classes(c), profile=prof) for c in df["chroma"]])
    if not args.no_essentia:
        paths = files.paths
        profiles = tuple(x for x in args.profiles.split(",") if x)
        t0 = time.perf_counter()
        answers = _essentia_answers(paths, profiles, out / "essentia.json")
        print(f"essentia: {len(paths)} files, {time.perf_counter() - t0:.0f} s (cached answers reused)")
        for prof in profiles:
            methods[f"essentia KeyExtractor {prof}"] = np.array([parse_key(answers[p][prof]) for p in paths])
    return probs, methods


def _score_method(ests: np.ndarray, files: SimpleNamespace) -> dict:
    """One method's scores over all files, by length bucket, by source and by sound source."""
    refs = files.refs
    entry = {"all": _scores(refs, ests)}
    for field, groups, names in (("by_length", files.buckets, files.bucket_names),
                                 ("by_source", files.sources, sorted(set(files.sources))),
                                 ("by_sound", files.sounds, sorted(set(files.sounds)))):
        entry[field] = {name: _scores(refs[groups == name], ests[groups == name]) for name in names}
    return entry


def _print_scores(entries: dict[str, dict], files: SimpleNamespace) -> None:
    """The weighted MIREX tables (both conventions): by length bucket, by source, by sound source."""
    buckets, sources, bucket_names = files.buckets, files.sources, files.bucket_names
    print("\nweighted MIREX, fifth up / fifths both ways (n files per column)")
    header = f"{'method':<44}{'all':>14}" + "".join(f"{b:>22}" for b in bucket_names)
    print(header)
    print(f"{'':<44}{len(files.refs):>14}" + "".join(f"{int((buckets == b).sum()):>22}" for b in bucket_names))
    cell = lambda d: f"{d['up']:.3f} / {d['both']:.3f}"  # noqa: E731
    for name, entry in entries.items():
        print(f"{name:<44}{cell(entry['all']):>14}" + "".join(f"{cell(entry['by_length'][b]):>22}" for b in bucket_names))

    for field, title, groups in (("by_source", "source", sources), ("by_sound", "sound source", files.sounds)):
        print(f"\nby {title}, fifth up / fifths both ways")
        names = sorted(set(groups))
        print(f"{'method':<44}" + "".join(f"{s[:20]:>22}" for s in names))
        print(f"{'':<44}" + "".join(f"{int((groups == s).sum()):>22}" for s in names))
        for name, entry in entries.items():
            print(f"{name:<44}" + "".join(f"{cell(entry[field][s]):>22}" for s in names))


def _relative_major(methods: dict[str, np.ndarray], files: SimpleNamespace) -> dict[str, dict]:
    """Minor-key files each method names as their relative major, by source, printed.

    What a chroma without register confuses most. Returns, per method and source, the
    counts of minor files and of those so named, over all files and over whole files.
    """
    refs, sources = files.refs, files.sources
    minor = refs >= 12
    relative_major = (refs % 12 + 3) % 12
    whole = files.buckets == LENGTH_BUCKETS[-1][0]
    counts = {}
    print("\nminor-key files named as their relative major (whole files over 120 s / all), by source")
    for name, ests in methods.items():
        wrong = minor & (ests == relative_major)
        counts[name] = cells = {
            s: {"minor": int((minor & (sources == s)).sum()), "named_relative_major": int((wrong & (sources == s)).sum()),
                "whole_minor": int((minor & whole & (sources == s)).sum()),
                "whole_named_relative_major": int((wrong & whole & (sources == s)).sum())}
            for s in sorted(set(sources[minor]))}
        print(f"{name:<44}" + "  ".join(f"{s} {c['whole_named_relative_major']}/{c['whole_minor']} "
                                        f"({c['named_relative_major']}/{c['minor']})" for s, c in cells.items()))
    return counts


def _paired(df, methods: dict[str, np.ndarray], refs: np.ndarray, keylib_name: str) -> dict | None:
    """The same songs whole and as their 30 s excerpt from 15 s of the same render, printed.

    Returns
    -------
    dict or None
        ``n`` (songs) and each method's ``whole`` and ``excerpt`` scores; None when no song
        is held out both ways.
    """
    song = list(zip(df["render"], df["source"], df["piece"]))
    whole_of = {k: i for i, (k, c) in enumerate(zip(song, df["cut"])) if c == "whole"}
    pairs = [(whole_of[k], i) for i, (k, c) in enumerate(zip(song, df["cut"])) if c == "excerpt" and k in whole_of]
    if not pairs:
        return None
    whole_i, ex_i = (np.array(x) for x in zip(*pairs))
    print(f"\nsame songs, whole against their 30 s excerpt from 15 s ({len(pairs)} songs; MIREX up / both)")
    paired: dict = {"n": len(pairs)}
    for name, ests in methods.items():
        w, e = _scores(refs[whole_i], ests[whole_i]), _scores(refs[ex_i], ests[ex_i])
        paired[name] = {"whole": w, "excerpt": e}
        print(f"{name:<44} whole {w['up']:.3f} / {w['both']:.3f}   excerpt {e['up']:.3f} / {e['both']:.3f}")
    essentia_best = max((k for k in methods if k.startswith("essentia")),
                        key=lambda k: paired[k]["whole"]["up"], default=None)
    if essentia_best:
        ours = paired[keylib_name]["whole"]["up"]
        theirs = paired[essentia_best]["whole"]["up"]
        print(f"whole songs: keylib - best Essentia profile ({essentia_best.split()[-1]}) = "
              f"{ours - theirs:+.3f} (fifth up)")
    return paired


def _baseline(path: str, cache: str, roots: list[Path], df) -> tuple[str, np.ndarray]:
    """(name, calibrated probabilities) of the ``--baseline`` network on the files of ``df``,
    in ``df``'s order, read from its own feature version's ``cache`` in each folder."""
    import pandas as pd
    from keylib.serving import load_model

    model = load_model(path)
    try:
        other = load_heldout(roots, model.feature_version, cache=cache)
    except ValueError as exc:  # the cache holds another feature version
        raise SystemExit(f"--baseline: {exc}; or give --baseline-cache, a cache of that version") from None
    other = other.set_index(["render", "track_id"]).reindex(pd.MultiIndex.from_arrays([df["render"], df["track_id"]]))
    missing = other["chroma"].isna().to_numpy()
    if missing.any():
        raise SystemExit(f"--baseline: {int(missing.sum())} of the files have no {model.feature_version} chroma in "
                         f"{cache} (first: {df['track_id'][np.flatnonzero(missing)[0]]}); give --baseline-cache")
    if not np.array_equal(other["key_index"].to_numpy(), df["key_index"].to_numpy()):
        raise SystemExit(f"--baseline: {cache} labels some files with another key than the model's cache")
    return f"keylib {model.version} (baseline)", model.predict_probs(list(other["chroma"]))


def _compare(ests: np.ndarray, base: np.ndarray, df, files: SimpleNamespace, *, draws: int = 2000) -> dict:
    """The model's weighted score minus the baseline's, file by file on the same files (fifth
    up), printed overall, by source and by sound source, with a 95% bootstrap interval;
    ``files`` lists each file they score differently (in ``accuracy.json``).

    The bootstrap draws pieces, not files: a song held out whole and as its excerpt, or in
    two renders, is one draw, so the interval is not narrowed by files that move together.
    An interval that holds 0 is a difference another draw of music could undo.
    """
    scores = score_matrix()
    diff = scores[files.refs, ests] - scores[files.refs, base]
    piece = np.unique([f"{s}|{p}" for s, p in zip(df["source"], df["piece"])], return_inverse=True)[1]
    rng = np.random.default_rng(0)
    groups = ([("all", np.ones(len(diff), bool))] + [(f"source {s}", files.sources == s) for s in sorted(set(files.sources))]
              + [(f"sound {s}", files.sounds == s) for s in sorted(set(files.sounds))])
    print("\nmodel minus baseline on the same files, MIREX fifth up: difference (95% bootstrap over pieces), "
          "files better / worse")
    out = {}
    for label, m in groups:
        d, pieces = diff[m], np.unique(piece[m], return_inverse=True)[1]
        sums, counts = np.bincount(pieces, weights=d), np.bincount(pieces)
        draw = rng.integers(0, len(sums), size=(draws, len(sums)))
        lo, hi = np.percentile(sums[draw].sum(1) / counts[draw].sum(1), [2.5, 97.5])
        out[label] = {"n": int(m.sum()), "pieces": int(len(sums)), "difference": float(d.mean()),
                      "interval_95": [float(lo), float(hi)], "better": int((d > 0).sum()), "worse": int((d < 0).sum())}
        print(f"  {label:<30} {int(m.sum()):>5} files {len(sums):>5} pieces  {d.mean():+.3f} ({lo:+.3f} to {hi:+.3f})"
              f"  {int((d > 0).sum())} / {int((d < 0).sum())}")
    out["files"] = [{"track_id": df["track_id"][i], "set": int(df["render"][i]), "source": files.sources[i],
                     "sound": files.sounds[i], "key": KEY_NAMES[files.refs[i]], "model": KEY_NAMES[ests[i]],
                     "baseline": KEY_NAMES[base[i]], "difference": float(diff[i])} for i in np.flatnonzero(diff)]
    return out


def _calibration(probs: np.ndarray, files: SimpleNamespace, roots: list[Path], png: Path, title: str) -> dict:
    """keylib's calibration, printed: ECE over 15 bins, its reliability diagram (``png``),
    the perfectly calibrated reference, and the same by length bucket and by folder."""
    refs = files.refs
    conf = probs.max(1)
    cal = calibration_error(conf, probs.argmax(1) == refs)
    plot_reliability(cal, png, title=title)
    print(f"\ncalibration: ECE {cal['ece']:.3f} over 15 bins, mean confidence {conf.mean():.3f}, "
          f"accuracy {(probs.argmax(1) == refs).mean():.3f}; reliability diagram {png}")
    cal["perfectly_calibrated"] = _null_ece(conf)
    print("  a perfectly calibrated model with these confidences would read ECE {mean:.3f} "
          "(90% of draws {p5:.3f}-{p95:.3f})".format(**cal["perfectly_calibrated"]))
    right = probs.argmax(1) == refs
    groups = {"by_length": [(b, files.buckets == b) for b in files.bucket_names],
              "by_set": [(root.name, files.render == i) for i, root in enumerate(roots)] if len(roots) > 1 else []}
    for field, parts in groups.items():
        cal[field] = {}
        for name, m in parts:
            part = {"n": int(m.sum()), "confidence": float(conf[m].mean()), "accuracy": float(right[m].mean()),
                    "ece": calibration_error(conf[m], right[m])["ece"], "perfectly_calibrated": _null_ece(conf[m])}
            cal[field][name] = part
            print(f"  {name:<18} {part['n']:>4} files: confidence {part['confidence']:.3f}, accuracy "
                  f"{part['accuracy']:.3f}, ECE {part['ece']:.3f} (perfectly calibrated: "
                  f"{part['perfectly_calibrated']['mean']:.3f})")
    return cal


def _tonality(model, df, probs: np.ndarray, files: SimpleNamespace) -> dict | None:
    """The share of held-out files (all of them have a key) that the model's tonality
    classifier calls ``tonal``, overall and by source; None for a card without one."""
    from keylib.tonality import is_tonal

    params = model.card.get("tonality")
    if not params:
        return None
    tonal = np.array([is_tonal(c, p, params) for c, p in zip(df["chroma"], probs)])
    out = {"all": float(tonal.mean()),
           "by_source": {s: float(tonal[files.sources == s].mean()) for s in sorted(set(files.sources))}}
    print(f"\ntonality: {out['all']:.1%} of the held-out files are tonal = true; by source: "
          + ", ".join(f"{s} {v:.1%}" for s, v in out["by_source"].items()))
    return out


def main(argv=None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from keylib.serving import load_model

    roots = [Path(r) for r in args.set]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    df = load_heldout(roots, model.feature_version)
    if args.limit:
        df = df.iloc[np.random.default_rng(0).permutation(len(df))[: args.limit]].reset_index(drop=True)
    if not len(df):
        print(f"no held-out rows in {', '.join(map(str, roots))}")
        return 3
    files = _held_out_files(df, roots)
    baseline = _baseline(args.baseline, args.baseline_cache, roots, df) if args.baseline else None
    probs, methods = _answers(model, df, files, args, out, baseline)

    report: dict = {"files": int(len(df)), "model": model.version,
                    "methods": {name: _score_method(ests, files) for name, ests in methods.items()}}
    _print_scores(report["methods"], files)
    for name, counts in _relative_major(methods, files).items():
        report["methods"][name]["minor_as_relative_major"] = counts
    paired = _paired(df, methods, files.refs, f"keylib {model.version}")
    if paired is not None:
        report["paired"] = paired
    png = out / "reliability.png"
    report["calibration"] = _calibration(probs, files, roots, png, f"keylib {model.version}, {len(df)} held-out files")
    report["tonal"] = _tonality(model, df, probs, files)
    if baseline is not None:
        name, base_probs = baseline
        base_cal = calibration_error(base_probs.max(1), base_probs.argmax(1) == files.refs)
        print(f"  {name}: ECE {base_cal['ece']:.3f}, mean confidence {base_probs.max(1).mean():.3f}")
        report["baseline"] = {"name": name, "ece": base_cal["ece"],
                              "difference": _compare(methods[f"keylib {model.version}"], methods[name], df, files)}
    wall, per_cpu = _speed(model)
    report["network_tracks_per_s"] = {"wall": wall, "per_cpu_second": per_cpu}
    print(f"\nspeed: the served network alone (ONNX Runtime, 1 thread), 3.5-min tracks batched: "
          f"{wall:,.0f} tracks/s wall, {per_cpu:,.0f} tracks per CPU-second (medians of 5)")
    (out / "accuracy.json").write_text(json.dumps(report, indent=1))
    print(f"figures: {out / 'accuracy.json'}")
    if args.update_card:
        _update_card(model, report, png, argv=sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
