"""``keylib``: the console command for single files and for reading results, no Spark.

    keylib analyze FILE... [--json] [--segments] [--model FILE.onnx]
    keylib keys OUT [--format csv|json|parquet] [--out FILE] [--conf FILE.toml]

Each file goes through the same path as the Spark jobs (decode -> THE chroma function ->
the served model -> keys row), so its key equals the catalogue's. No Spark and no
TensorFlow are imported: the model runs in ONNX Runtime (:mod:`keylib.serving`). Exit code 0 when every
file got a key (or is silent), 1 when any file failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "analyze_files", "read_keys_table", "KEYS_EXPORT_COLUMNS"]


def analyze_files(paths: Sequence[str | Path], *, model_path: str | None = None,
                  max_duration_s: float = 600.0, min_duration_s: float = 1.0) -> list[dict[str, Any]]:
    """Key of each audio file.

    Parameters
    ----------
    paths : sequence of str or Path
        Audio files (mp3, wav, flac, ogg, aiff; m4a with ffmpeg).
    model_path : str, optional
        A model (``.onnx``, or its ``.keras``/``.json`` sibling) with its card; ``None`` =
        the shipped model.

    Returns
    -------
    list of dict
        One per file, in order: ``file``, ``key``, ``tonic``, ``mode``, ``confidence``,
        ``margin``, ``probs`` (24, :mod:`keylib.keys` order), ``camelot``, ``open_key``,
        ``tonal``, ``tuning_cents``, ``segments``, ``duration_s``, ``model_version``,
        ``feature_version``, ``status``, ``error``.
    """
    from .track import ExtractSettings, extract_track
    from .inference import KEYS_COLUMNS, predict_records
    from .serving import load_model

    model = load_model(model_path)
    # The catalogue's own per-track steps and the model's features, so that a file's key and
    # status here equal its row in keys/ (no hashing: nothing is stored).
    settings = ExtractSettings(max_duration_s=max_duration_s, min_duration_s=min_duration_s, hash_content=False,
                               feature_version=model.feature_version)
    chroma_rows = [
        extract_track({"track_id": str(path), "uri": str(path)}, settings=settings) for path in paths
    ]
    keys = predict_records(chroma_rows, model)
    fields = [c for c in KEYS_COLUMNS if c not in ("track_id", "uri", "identity", "extracted_at", "inferred_at")]
    rows = []
    for chroma_row, key_row in zip(chroma_rows, keys):
        row = {"file": chroma_row["track_id"], **{c: _plain(key_row[c]) for c in fields}}
        duration = chroma_row["duration_s"]
        row["duration_s"] = None if duration is None else round(duration, 3)
        rows.append(row)
    return rows


def _plain(value: Any) -> Any:
    """pandas/numpy scalars and NaN as plain Python values (JSON-ready)."""
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, str)) else value


def _print_table(rows: list[dict[str, Any]], seconds: float, *, segments: bool = False) -> None:
    width = max(len("file"), *(len(r["file"]) for r in rows))
    print(f"{'file':<{width}}  {'key':<9}  {'conf':>5}  {'camelot':>7}  {'tonal':>5}  {'tuning':>7}")
    for r in rows:
        if r["key"]:
            tonal = {True: "yes", False: "no"}.get(r.get("tonal"), "-")
            tuning = "-" if r.get("tuning_cents") is None else f"{r['tuning_cents']:+.0f} c"
            print(f"{r['file']:<{width}}  {r['key']:<9}  {r['confidence']:5.2f}  {r['camelot']:>7}  {tonal:>5}  {tuning:>7}")
            for s in (r.get("segments") or []) if segments else []:
                print(f"{'':<{width}}    {s['start_s']:7.1f} - {s['end_s']:7.1f} s  {s['key']:<9}  {s['confidence']:5.2f}")
        else:
            print(f"{r['file']:<{width}}  {'-':<9}  {'':>5}  {'':>7}  {r['status']}: {r['error']}")
    print(f"{len(rows)} file(s) in {seconds:.2f} s", file=sys.stderr)


KEYS_EXPORT_COLUMNS = ["track_id", "uri", "key", "confidence", "camelot", "open_key", "status", "error",
                       "model_version", "inferred_at"]


def read_keys_table(output: str, *, s3_settings=None):
    """The current keys, one row per track, sorted by ``track_id`` (no Spark).

    Parameters
    ----------
    output : str
        An output root (``OUT``, whose ``keys`` table is read) or the keys table itself;
        a local path or ``s3://bucket/prefix``.

    Returns
    -------
    pd.DataFrame
        Columns :data:`KEYS_EXPORT_COLUMNS`.

    Raises
    ------
    InputError
        there is no keys table there. StorageError: the store cannot be reached.
    """
    from .errors import InputError
    from .storage.tables import read_rows, table_exists
    from .storage.locations import resolve_output, table_uri

    root = table_uri(output, "keys")
    if not table_exists(root, s3_settings=s3_settings):
        root = resolve_output(output)
    frame = read_rows(root, columns=KEYS_EXPORT_COLUMNS, s3_settings=s3_settings)
    if frame is None:
        raise InputError(f"no keys table at {output} (run annotate or nightly first)")
    return frame.sort_values("track_id").reset_index(drop=True)


def _add_keys_command(sub) -> None:
    keys = sub.add_parser("keys", help="print or export the current keys of an output (local or s3://)")
    keys.add_argument("output", metavar="OUT", help="output root of annotate/nightly, or its keys table")
    keys.add_argument("--format", choices=("csv", "json", "parquet"), default="csv", help="default: csv")
    keys.add_argument("--out", default=None, metavar="FILE",
                      help="write here (a path or s3:// URI) instead of standard output")
    keys.add_argument("--conf", default=None, help="configuration file for [s3] (endpoint, region)")


def keys_command(args: argparse.Namespace) -> int:
    """``keylib keys``: 0 done, 2 bad usage or configuration, 3 no keys table there,
    5 the store cannot be reached."""
    import io

    from .config import load_config
    from .errors import ConfigError, InputError, StorageError
    from .outcome import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, EXIT_STORAGE
    from .storage.locations import filesystem

    try:
        s3_settings = load_config(args.conf)["s3"] if args.conf else {}
        frame = read_keys_table(args.output, s3_settings=s3_settings)
        if args.format == "parquet":
            if args.out is None and sys.stdout.isatty():
                print("keylib keys: --format parquet needs --out FILE (or a pipe)", file=sys.stderr)
                return EXIT_CONFIG
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            data = buffer.getvalue()
        elif args.format == "json":
            data = (frame.to_json(orient="records", date_format="iso", indent=1) + "\n").encode()
        else:
            data = frame.to_csv(index=False).encode()
        if args.out is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            fs, path = filesystem(args.out, s3_settings)
            with fs.open_output_stream(path) as out:
                out.write(data)
            print(f"keylib keys: {len(frame)} tracks -> {args.out}", file=sys.stderr)
    except ConfigError as exc:
        print(f"keylib keys: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InputError as exc:
        print(f"keylib keys: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"keylib keys: storage error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keylib", description="Musical key of audio files (no Spark).")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="print each file's key, confidence and Camelot code")
    analyze.add_argument("files", nargs="+", metavar="FILE")
    analyze.add_argument("--json", action="store_true", help="one JSON object per file, in a list")
    analyze.add_argument("--probs", action="store_true", help="include the 24 probabilities in --json")
    analyze.add_argument("--segments", action="store_true",
                         help="print the key's changes over time (always in --json)")
    analyze.add_argument("--model", default=None, help="a .onnx model (or its .keras sibling) with its .json card (default: shipped)")
    _add_keys_command(sub)
    args = parser.parse_args(argv)
    if args.command == "keys":
        return keys_command(args)

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
        _print_table(rows, time.perf_counter() - started, segments=args.segments)
    return 0 if all(r["status"] in (STATUS_OK, STATUS_SILENT) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
