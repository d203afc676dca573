"""``keylib``: the console command for single files, no Spark.

    keylib analyze FILE... [--json] [--model FILE.keras]

Each file goes through the same path as the Spark jobs (decode -> THE chroma function ->
the shipped model -> keys row), so its key equals the catalogue's. Exit code 0 when every
file got a key (or is silent), 1 when any file failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "analyze_files"]


def analyze_files(paths: Sequence[str | Path], *, model_path: str | None = None,
                  max_duration_s: float = 600.0, min_duration_s: float = 1.0) -> list[dict[str, Any]]:
    """Key of each audio file.

    Parameters
    ----------
    paths : sequence of str or Path
        Audio files (mp3, wav, flac, ogg, aiff; m4a with ffmpeg).
    model_path : str, optional
        A ``.keras`` model with its card; ``None`` = the shipped model.

    Returns
    -------
    list of dict
        One per file, in order: ``file``, ``key``, ``tonic``, ``mode``, ``confidence``,
        ``margin``, ``camelot``, ``open_key``, ``probs`` (24, :mod:`keylib.keys` order),
        ``duration_s``, ``model_version``, ``feature_version``, ``status``, ``error``.
    """
    from . import audio, features
    from .errors import STATUS_OK, STATUS_SILENT, TrackError
    from .inference import empty_fields, keys_fields
    from .model import load_model

    model = load_model(model_path)
    rows: list[dict[str, Any]] = []
    tensors, todo = [], []
    for path in paths:
        row = {"file": str(path), **empty_fields(), "duration_s": None, "model_version": model.version,
               "feature_version": features.FEATURE_VERSION, "status": STATUS_OK, "error": None}
        rows.append(row)
        try:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            decoded = audio.decode(p.read_bytes(), ext=audio.extension_of(str(p)),
                                   max_duration_s=max_duration_s, min_duration_s=min_duration_s)
            row["duration_s"] = round(decoded.duration_s, 3)
            if audio.is_silent(decoded.samples):
                row["status"], row["error"] = STATUS_SILENT, "no audible signal: no key to find"
                continue
            tensors.append(features.chroma(decoded.samples))
            todo.append(row)
        except TrackError as exc:
            row["status"], row["error"] = exc.status, str(exc)
        except OSError as exc:
            row["status"], row["error"] = "missing" if isinstance(exc, FileNotFoundError) else "read_error", str(exc)
    if tensors:
        for row, probs in zip(todo, model.predict_probs(tensors)):
            row.update(keys_fields(probs))
    return rows


def _print_table(rows: list[dict[str, Any]], seconds: float) -> None:
    width = max(len("file"), *(len(r["file"]) for r in rows))
    print(f"{'file':<{width}}  {'key':<9}  {'conf':>5}  {'camelot':>7}")
    for r in rows:
        if r["key"]:
            print(f"{r['file']:<{width}}  {r['key']:<9}  {r['confidence']:5.2f}  {r['camelot']:>7}")
        else:
            print(f"{r['file']:<{width}}  {'-':<9}  {'':>5}  {'':>7}  {r['status']}: {r['error']}")
    print(f"{len(rows)} file(s) in {seconds:.2f} s", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keylib", description="Musical key of audio files (no Spark).")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="print each file's key, confidence and Camelot code")
    analyze.add_argument("files", nargs="+", metavar="FILE")
    analyze.add_argument("--json", action="store_true", help="one JSON object per file, in a list")
    analyze.add_argument("--probs", action="store_true", help="include the 24 probabilities in --json")
    analyze.add_argument("--model", default=None, help="a .keras model with its .json card (default: shipped)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .errors import STATUS_OK, STATUS_SILENT, ModelError

    started = time.perf_counter()
    try:
        rows = analyze_files(args.files, model_path=args.model)
    except ModelError as exc:
        print(f"keylib analyze: model error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        if not args.probs:
            for r in rows:
                r.pop("probs", None)
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, time.perf_counter() - started)
    return 0 if all(r["status"] in (STATUS_OK, STATUS_SILENT) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
