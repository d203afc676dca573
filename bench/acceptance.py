"""The model-acceptance figures: what the ``acceptance`` tests check, on the material they play.

    .venv/bin/python bench/acceptance.py [--model DIR_OR_ONNX] [--update-card]

For a model (default: the shipped one; a folder holding one ``.onnx`` with its card, or
any of the model's files), on the material of :mod:`keylib.synth`:

- ``sample_catalogue_correct``: the demo's sample catalogue (``make_sample_catalogue``, 24
  keys x mp3 + wav, 8 s), each file decoded and featurized (``keylib.audio.decode``,
  ``keylib.features.chroma``) and served: files whose key is exactly right, of 48
  (tests/test_model.py);
- ``cadences_correct``: the 24 cadences of ``cadences`` (12 s each), served: keys exactly
  right (tests/test_model.py);
- ``annotate_weighted_score`` and ``annotate_correct``: the annotate job's report on
  ``make_flawed_manifest`` (the 4-s clips, one unusable label, one corrupt file; 47
  scored): the weighted MIREX score and exact keys (tests/test_annotate.py);
- ``c_major_confidence``: ``keylib analyze`` (``keylib.cli.analyze_files``) on
  ``write_c_major_cadence``, the 30-s C major mp3: the calibrated probability of C major,
  which the test requires to be the top one (tests/test_cli.py).

Prints the figures. With ``--update-card`` writes them into the model's card as
``acceptance`` (with this command and the card's version); the rest of the card is kept as
it was. The acceptance tests read their thresholds there (tests/conftest.py's
``acceptance`` fixture), so run this after every retrain, after ``bench/accuracy.py
--update-card``. About 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keylib import audio, features, keys, serving, synth  # noqa: E402


def sample_catalogue_correct(model, folder: Path) -> int:
    """As tests/test_model.py's ``test_sample_catalogue_at_the_demo_length``."""
    manifest = synth.make_sample_catalogue(folder)
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    refs, chromas = [], []
    for path, _, key, _ in rows:
        samples = audio.decode((manifest.parent / path).read_bytes(), ext=Path(path).suffix).samples
        refs.append(keys.parse_key(key))
        chromas.append(features.chroma(samples, feature_version=model.feature_version))
    ests = model.predict_keys(chromas)
    wrong = [(path, keys.key_name(int(e))) for (path, *_), ref, e in zip(rows, refs, ests) if e != ref]
    print(f"  sample catalogue: {len(rows) - len(wrong)} of {len(rows)} right; wrong: {wrong}")
    return len(rows) - len(wrong)


def cadences_correct(model) -> int:
    """As tests/test_model.py's ``test_cadences_in_all_24_keys``."""
    ests = model.predict_keys([features.chroma(y, feature_version=model.feature_version)
                               for y in synth.cadences(sr=features.SAMPLE_RATE)])
    wrong = [(keys.key_name(k), keys.key_name(int(e))) for k, e in enumerate(ests) if e != k]
    print(f"  cadences: {keys.N_KEYS - len(wrong)} of {keys.N_KEYS} right; wrong: {wrong}")
    return keys.N_KEYS - len(wrong)


def annotate_figures(model, folder: Path) -> tuple[float, int]:
    """The weighted score and exact keys of tests/test_annotate.py's report, without Spark.

    The annotate job lists the manifest (:func:`keylib.catalogue.list_tracks`), maps
    :func:`keylib.track.extract_track` over the tracks (in a sandboxed child process, the
    same function with the configuration's settings) and
    :func:`keylib.inference.predict_records` over batches of the chroma rows; its report is
    :func:`keylib.evaluate.evaluate_keys` of the keys rows against
    :func:`keylib.evaluate.read_truth` of the manifest. Here the same functions run in this
    process on the same rows. Only the batching differs, and it changes no key: each track
    goes through the network at its own length whatever shares its batch (float rounding
    aside), and the score is a function of the keys alone.
    """
    import pandas as pd

    from keylib.catalogue import list_tracks
    from keylib.config import load_config
    from keylib.evaluate import evaluate_keys, read_truth
    from keylib.inference import predict_records
    from keylib.track import ExtractSettings, extract_track

    manifest = synth.make_flawed_manifest(folder)
    settings = ExtractSettings.from_config(load_config(ROOT / "conf" / "local.toml"),  # the tests' config
                                           feature_version=model.feature_version)
    tracks = [{k: (None if pd.isna(v) else v) for k, v in row.items()}  # as the Spark listing passes them
              for row in list_tracks(str(manifest)).to_dict("records")]
    keys_rows = pd.DataFrame(predict_records([extract_track(t, settings=settings) for t in tracks], model))
    summary = evaluate_keys(keys_rows, read_truth(manifest)).summary
    print(f"  annotate: {summary['scored']} scored, weighted score {summary['weighted_score']:.4f}, "
          f"categories {summary['counts']}")
    return float(summary["weighted_score"]), int(summary["counts"]["correct"])


def c_major_confidence(model_file: Path, folder: Path) -> float:
    """As tests/test_cli.py's ``test_shipped_model_finds_c_major``."""
    from keylib.cli import analyze_files

    [row] = analyze_files([synth.write_c_major_cadence(folder)], model_path=str(model_file))
    confidence = row["probs"][keys.parse_key("C major")]
    print(f"  C major cadence: {row['key']}, confidence {row['confidence']:.4f}; C major {confidence:.4f}")
    if row["key"] != "C major":
        print("  the C major cadence is not named C major: its acceptance test fails whatever the card says")
    return float(confidence)


def measure(model_file: Path) -> dict:
    """The acceptance figures of the served model at ``model_file``."""
    model = serving.load_model(model_file)
    with tempfile.TemporaryDirectory(prefix="keylib-acceptance-") as tmp:
        tmp = Path(tmp)
        figures = {"sample_catalogue_correct": sample_catalogue_correct(model, tmp / "sample"),
                   "cadences_correct": cadences_correct(model)}
        weighted, correct = annotate_figures(model, tmp / "annotate")
        figures.update(annotate_weighted_score=round(weighted, 4), annotate_correct=correct)
        figures["c_major_confidence"] = round(c_major_confidence(model_file, tmp / "cli"), 4)
        return figures


def resolve_model(given: str | None) -> Path:
    """The ``.onnx`` of ``--model``: a folder's one ``.onnx``, or any of a model's files."""
    if given and Path(given).is_dir():
        found = sorted(Path(given).glob("*.onnx"))
        if len(found) != 1:
            sys.exit(f"{given}: expected one .onnx model in the folder, found {[p.name for p in found]}")
        return found[0].resolve()
    return serving.model_info(given).onnx_path


def update_card(card_path: Path, figures: dict, command: str) -> None:
    """Write ``figures`` into the card as ``acceptance``; everything else stays as it was
    (the card's own indent, its keys in their order)."""
    text = card_path.read_text()
    card = json.loads(text)
    lines = text.splitlines()
    indent = len(lines[1]) - len(lines[1].lstrip(" ")) if len(lines) > 1 else 1
    card["acceptance"] = {**figures, "command": command, "model_version": card["version"]}
    trailing = "\n" if text.endswith("\n") else ""
    card_path.write_text(json.dumps(card, indent=indent or None) + trailing)
    print(f"card updated: {card_path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None,
                   help="a model folder (one .onnx with its card) or a model file; default: the shipped model")
    p.add_argument("--update-card", action="store_true",
                   help="record the figures in the model's card as `acceptance`: where the acceptance tests read them")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    model_file = resolve_model(args.model)
    info = serving.model_info(model_file)
    print(f"acceptance figures of {info.version} ({model_file})")
    t0 = time.perf_counter()
    figures = measure(model_file)
    print(f"measured in {time.perf_counter() - t0:.0f} s")
    for name, value in figures.items():
        print(f"{name:<28}{value}")
    if args.update_card:
        python = Path(sys.executable)
        python_name = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else python.name
        command = shlex.join([python_name, "bench/acceptance.py", *(sys.argv[1:] if argv is None else argv)])
        update_card(info.card_path, figures, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
