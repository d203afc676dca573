"""Job planning and running: which pieces, transpositions and splits to render
(:func:`plan_jobs`), rendering one job (:func:`run_job`), a local process pool over all of
them (:func:`make_training_set`) and the writers of ``manifest.csv`` and
``chroma_cache.parquet`` (:func:`write_chroma_cache`).
"""

from __future__ import annotations

import csv
import functools
import glob
import os
import re
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from ...errors import ConfigError
from ...keys import KEY_NAMES, transpose_index
from .atonal import ATONAL_KINDS, atonal_clip
from .instruments import programs_for
from .midi import DRUM_CHANNEL, Note, Piece, write_midi
from .procedural import procedural_piece
from .render import HELDOUT_SOUNDFONTS, RENDER_SR, SOUNDFONT, augment, render_midi, soundfonts_for, trim_silence
from .sources import abc_tunes, chorale_key, corpus_dir, pop909_piece, pop909_songs, score_notes

# Held-out whole songs also get this excerpt (start, length in s), cut from the same render,
# so that excerpt and whole-song scores compare the same music.
HELDOUT_EXCERPT_S = (15.0, 30.0)


@dataclass
class Job:
    """One unit of work for a worker: a piece and its variants (transposition, seed)."""

    kind: str  # procedural | pop909 | chorale | abc
    ref: str  # song id, corpus path, abc path::tune id
    key: int | None
    variants: list[tuple[int, int]]  # (transpose, seed)
    split: str
    source: str
    extra: str = ""  # abc text
    whole: bool = False  # render the whole piece (no 20-40 s cut)
    soundfonts: tuple[str, ...] = ()  # soundfonts to draw from; () = the split's own (soundfonts_for)


def _build_pieces(job: Job) -> list[Piece]:
    pieces = []
    if job.kind == "procedural":
        for transpose, seed in job.variants:
            rng = np.random.default_rng(seed)
            key = transpose_index(job.key, transpose)
            pieces.append(procedural_piece(key, rng, piece=f"{job.ref}", programs_by_role=programs_for(job.split),
                                           split=job.split, whole=job.whole))
        return _with_soundfonts(pieces, job)
    if job.kind == "pop909":
        root, song = job.ref.rsplit("::", 1)
        for transpose, seed in job.variants:
            rng = np.random.default_rng(seed)
            pieces.append(pop909_piece(Path(root), song, job.key, rng, transpose=transpose,
                                       programs_by_role=programs_for(job.split), split=job.split, whole=job.whole))
        return _with_soundfonts(pieces, job)
    # music21 scores
    from music21 import converter, corpus

    if job.kind in ("chorale", "score"):
        score = corpus.parse(job.ref)
        key = chorale_key(score)
        if key is None:
            return []
    else:
        score = converter.parse(job.extra, format="abc")
        key = job.key
        # trust the K: field only when the tune ends on its tonic
        last = None
        for n in score.recurse().notes:
            if not n.isChord or not hasattr(n, "figure"):
                last = n
        if last is None or min(p.pitchClass for p in last.pitches) != key % 12:
            return []
    for transpose, seed in job.variants:
        rng = np.random.default_rng(seed)
        bpm = rng.uniform(60, 100) if job.kind in ("chorale", "score") else rng.uniform(80, 140)
        base = score_notes(score, bpm=bpm)
        if not base:
            return []
        end = max(n.end for n in base)
        length = end if job.whole else min(end, rng.uniform(20, 40))
        start = rng.uniform(0, max(0.0, end - length)) if rng.random() < 0.5 else 0.0
        notes = [Note(max(n.start, start) - start, min(n.end, start + length) - start, n.pitch + transpose, n.velocity, n.channel)
                 for n in base if n.end > start and n.start < start + length]
        roles = programs_for(job.split)
        if job.kind in ("chorale", "score"):
            # one instrument for all voices, or one per voice
            if rng.random() < 0.5:
                p = int(rng.choice(roles["harmony"]))
                programs = {ch: p for ch in range(4)}
            else:
                programs = {ch: int(rng.choice(roles["harmony" if ch < 3 else "bass"])) for ch in range(4)}
        else:
            programs = {0: int(rng.choice(roles["harmony"])), 1: int(rng.choice(roles["bass"])), 2: int(rng.choice(roles["melody"]))}
        pieces.append(Piece(notes, transpose_index(key, transpose), job.source, _piece_name(job.ref),
                            programs, job.split, length))
    return _with_soundfonts(pieces, job)


def _piece_name(ref: str) -> str:
    """A piece's name from its reference: the corpus path without its top folder, or the tune."""
    if "::" in ref:  # file::tune id
        return Path(ref).name
    parts = Path(ref).with_suffix("").parts  # composer/work/movement: movement names repeat
    return "/".join(parts[1:]) if len(parts) > 1 else parts[0]


def _with_soundfonts(pieces: list[Piece], job: Job) -> list[Piece]:
    """Give each piece a soundfont of its split, drawn from the variant's seed."""
    fonts = job.soundfonts or soundfonts_for(job.split)
    for piece, (_, seed) in zip(pieces, job.variants):
        piece.soundfont = fonts[int(np.random.default_rng(seed + 17).integers(len(fonts)))]
    return pieces


def track_id_of(piece: Piece, i: int) -> str:
    tag = zlib.crc32(f"{piece.piece}|{piece.key}|{i}|{sorted(piece.programs.items())}|{piece.soundfont}".encode()) & 0xFFFFFFFF
    return f"{piece.source}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', piece.piece)}-{KEY_NAMES[piece.key].replace(' ', '').replace('#', 's')}-{tag:08x}"


def run_job(job: Job, out_dir: str, with_chroma: bool = True, augment_strength: float = 1.0) -> list[dict]:
    """Render the pieces of ``job``; returns manifest rows (plus ``chroma`` when asked)."""
    from ... import audio, features

    out = Path(out_dir)
    if job.kind == "atonal":
        return _run_atonal(job, out, with_chroma=with_chroma)
    rows = []
    try:
        pieces = _build_pieces(job)
    except Exception as exc:  # a score music21 cannot read is skipped, not fatal
        return [{"error": f"{job.ref}: {type(exc).__name__}: {exc}"}]
    with tempfile.TemporaryDirectory(prefix="keylib-render-") as tmp:
        for i, piece in enumerate(pieces):
            seed = job.variants[min(i, len(job.variants) - 1)][1]
            rng = np.random.default_rng(seed + 7919)
            if not [n for n in piece.notes if n.channel != DRUM_CHANNEL]:
                continue
            mid = write_midi(piece.notes, piece.programs, Path(tmp) / "x.mid")
            y = render_midi(mid, Path(tmp) / "x.wav", soundfont=piece.soundfont or None)
            clips = _whole(y, piece) if job.whole else _cut(y, piece, rng)
            for j, (cut, clip) in enumerate(clips):
                if float(np.max(np.abs(clip), initial=0.0)) < 1e-4:
                    continue
                if cut == "whole" and j == 0 and len(clips) > 1:
                    # the held-out excerpt is cut from this very render after augmentation
                    clip = augment(clip, rng, strength=augment_strength)
                    a, n = (int(x * RENDER_SR) for x in HELDOUT_EXCERPT_S)
                    clips[1] = ("excerpt", clip[a:a + n])
                elif cut != "excerpt":
                    clip = augment(clip, rng, strength=augment_strength)
                tid = track_id_of(piece, i * 10 + j) + ("-x30" if cut == "excerpt" else "")
                rel = f"audio/{piece.split}/{piece.source}/{tid}.flac"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(out / rel), clip, RENDER_SR, format="FLAC", subtype="PCM_16")
                row = {
                    "path": rel, "track_id": tid, "key": KEY_NAMES[piece.key], "source": piece.source,
                    "piece": piece.piece, "instrument": ";".join(str(p) for _, p in sorted(piece.programs.items())),
                    "split": piece.split, "duration_s": round(len(clip) / RENDER_SR, 2),
                    "cut": cut, "soundfont": Path(piece.soundfont or SOUNDFONT).stem,
                }
                if with_chroma:
                    dec = audio.decode((out / rel).read_bytes(), ext=".flac")
                    row["chroma"] = features.chroma(dec.samples)
                rows.append(row)
    return rows


def _run_atonal(job: Job, out: Path, *, with_chroma: bool) -> list[dict]:
    """Clips without a key (``key`` empty, ``split`` = ``atonal``): the negatives of the
    tonality classifier."""
    from ... import audio, features

    rows = []
    with tempfile.TemporaryDirectory(prefix="keylib-render-") as tmp:
        for i, (_, seed) in enumerate(job.variants):
            rng = np.random.default_rng(seed)
            try:
                y = atonal_clip(job.ref, rng, tmp=Path(tmp), split=job.split)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                return [{"error": f"atonal {job.ref}: {exc}"}]
            if float(np.max(np.abs(y), initial=0.0)) < 1e-4:
                continue
            y = augment(y, rng, strength=0.5)
            tid = f"atonal-{job.ref}-{seed:08x}"[:48]
            rel = f"audio/atonal/{job.ref}/{tid}.flac"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out / rel), y, RENDER_SR, format="FLAC", subtype="PCM_16")
            row = {"path": rel, "track_id": tid, "key": "", "source": f"atonal-{job.ref}", "piece": tid,
                   "instrument": "", "split": "atonal", "duration_s": round(len(y) / RENDER_SR, 2),
                   "cut": "whole", "soundfont": ""}
            if with_chroma:
                row["chroma"] = features.chroma(audio.decode((out / rel).read_bytes(), ext=".flac").samples)
            rows.append(row)
    return rows


def _cut(y: np.ndarray, piece: Piece, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Clips of 20-40 s from a render (pop909 renders give two)."""
    y = trim_silence(y)
    if y.size == 0:
        return []
    sr = RENDER_SR
    if len(y) > 45 * sr:
        n1 = int(rng.uniform(20, 32) * sr)
        rest = y[n1:]
        return [("excerpt", y[:n1]), ("excerpt", rest[: int(40 * sr)])]
    return [("excerpt", y)]


def _whole(y: np.ndarray, piece: Piece) -> list[tuple[str, np.ndarray]]:
    """The whole render; a held-out one long enough also gives its 30 s excerpt (filled in
    by :func:`run_job` after augmentation, so both are the same audio)."""
    y = trim_silence(y)
    if y.size == 0:
        return []
    start, length = HELDOUT_EXCERPT_S
    if piece.split == "heldout" and len(y) >= (start + length + 15) * RENDER_SR:
        return [("whole", y), ("excerpt", y[:0])]
    return [("whole", y)]


def _check_training_soundfonts(soundfonts: Sequence[str]) -> tuple[str, ...]:
    fonts = tuple(str(f) for f in soundfonts)
    for font in fonts:
        if not Path(font).is_file():
            raise ConfigError(f"soundfont {font!r} does not exist")
        if Path(font).resolve() in {Path(h).resolve() for h in HELDOUT_SOUNDFONTS}:
            raise ConfigError(f"soundfont {font!r} is kept for the held-out set; training must not hear it")
    return fonts


def plan_jobs(*, pop909: Path | None, n_procedural: int, n_chorales: int, n_folk: int, n_heldout_folk: int,
              transpositions: int, pop909_renders: int, pop909_holdout_from: int, seed: int,
              pop909_limit: int | None = None, pop909_offset: int = 0, pop909_heldout: bool = True,
              whole: bool = False, n_heldout_classical: int = 0, n_atonal: int = 0,
              only_split: str | None = None, soundfonts: Sequence[str] = ()) -> list[Job]:
    """The work list: which pieces, which transpositions, which split.

    ``only_split`` (``"train"``, ``"heldout"`` or ``"atonal"``) keeps only that split's
    jobs of the same plan (the same pieces, transpositions and seeds as the full plan): the
    held-out set alone, for the benchmarks, costs a seventh of a full render.

    With ``whole`` every piece is rendered from start to end (songs of several minutes), as
    catalogues hold them; held-out whole songs also give their 30 s excerpt. Held-out
    classical music comes from music21's string quartets (Beethoven, Haydn, Mozart,
    Schumann), a source training never sees. ``soundfonts`` replaces the training
    soundfonts (a second render with other timbres); the held-out set keeps its own, and a
    held-out soundfont or a missing file is a :class:`~keylib.errors.ConfigError`.
    """
    soundfonts = _check_training_soundfonts(soundfonts)
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []

    def variants(n: int) -> list[tuple[int, int]]:
        shifts = rng.permutation(12)[:n] if n <= 12 else rng.integers(0, 12, n)
        return [(int(s), int(rng.integers(1 << 31))) for s in shifts]

    if pop909 is not None and Path(pop909).is_dir():
        songs = pop909_songs(Path(pop909))
        train = [s for s in songs if int(s[0]) < pop909_holdout_from][pop909_offset:]
        held = [s for s in songs if int(s[0]) >= pop909_holdout_from] if pop909_heldout else []
        if pop909_limit:
            train, held = train[:pop909_limit], held[: max(1, pop909_limit // 5)]
        for song, key in train + held:
            split = "heldout" if int(song) >= pop909_holdout_from else "train"
            jobs.append(Job("pop909", f"{pop909}::{song}", key, variants(pop909_renders), split, "pop909"))
    for i in range(n_procedural):
        jobs.append(Job("procedural", f"{i:05d}", int(rng.integers(24)), variants(1), "train", "procedural"))
    if n_heldout_classical:
        cdir = corpus_dir()
        paths = sorted(str(p.relative_to(cdir)) for c in ("beethoven", "haydn", "mozart", "schumann_robert")
                       for p in (cdir / c).rglob("*.mxl"))
        for rel in [paths[i] for i in rng.permutation(len(paths))[:n_heldout_classical]]:
            jobs.append(Job("score", rel, None, variants(1), "heldout", "classical-quartets"))
    if n_chorales:
        from music21 import corpus

        paths = [str(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".krn", ".xml"))]
        rng.shuffle(paths)
        for p in paths[:n_chorales]:
            rel = "bach/" + Path(p).name
            jobs.append(Job("chorale", rel, None, variants(transpositions), "train", "bach-chorales"))
    cdir = corpus_dir()
    if n_folk:
        files = sorted(glob.glob(str(cdir / "ryansMammoth" / "*.abc")))
        rng.shuffle(files)
        tunes = [(f, t) for f in files for t in abc_tunes(Path(f))[:1]]
        for f, (tid, text, key) in tunes[:n_folk]:
            jobs.append(Job("abc", f"{f}::{tid}", key, variants(max(1, transpositions // 2)), "train", "folk-ryans", text))
    if n_heldout_folk:
        held = []
        for f in sorted(glob.glob(str(cdir / "nottingham-dataset" / "*.abc"))):
            held += [("folk-nottingham", f, t) for t in abc_tunes(Path(f))]
        oneills = sorted(glob.glob(str(cdir / "oneills1850" / "*.abc")))[:3]
        for f in oneills:
            held += [("folk-oneills", f, t) for t in abc_tunes(Path(f))]
        order = rng.permutation(len(held))
        for i in order[:n_heldout_folk]:
            src, f, (tid, text, key) = held[i]
            jobs.append(Job("abc", f"{f}::{tid}", key, variants(1), "heldout", src, text))
    for i in range(n_atonal):
        kind = ATONAL_KINDS[i % len(ATONAL_KINDS)]
        jobs.append(Job("atonal", kind, None, variants(1), "atonal", f"atonal-{kind}"))
    for job in jobs:
        job.whole = whole
        if job.split == "train":  # the held-out set keeps its own sounds
            job.soundfonts = soundfonts
    return [j for j in jobs if j.split == only_split] if only_split else jobs


def make_training_set(out_dir: Path, *, workers: int = 2, with_chroma: bool = True, progress: bool = True,
                      **plan) -> Path:
    """Render the planned jobs (:func:`plan_jobs`) in a local process pool; write
    manifest.csv (+ chroma_cache.parquet).

    Returns the manifest's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(**plan)
    # expensive jobs first so the pool's tail is short
    order = {"score": 0, "chorale": 1, "abc": 2, "pop909": 3, "procedural": 4, "atonal": 5}
    jobs.sort(key=lambda j: order[j.kind])
    rows: list[dict] = []
    errors: list[str] = []
    fn = functools.partial(run_job, out_dir=str(out_dir), with_chroma=with_chroma)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
        bar.start()
        task = bar.add_task("rendering", total=len(jobs))
    try:
        for res in _pool_map(fn, jobs, workers=workers, ordered=False):
            for row in res:
                if "error" in row:
                    errors.append(row["error"])
                else:
                    rows.append(row)
            if bar is not None:
                bar.update(task, advance=1, description=f"rendering ({len(rows)} clips)")
    finally:
        if bar is not None:
            bar.stop()
    rows.sort(key=lambda r: r["track_id"])
    manifest, cache = out_dir / "manifest.csv", out_dir / "chroma_cache.parquet"
    only_split = plan.get("only_split")
    # One split rendered into a folder that holds others: their rows stay (nothing lost).
    kept = _other_splits(manifest, only_split) if only_split else []
    cols = ["path", "track_id", "key", "source", "piece", "instrument", "split", "duration_s", "cut", "soundfont"]
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(kept + rows)
    if with_chroma and rows:
        write_chroma_cache(rows, cache, out_dir, replace_split=only_split)
    if errors:
        (out_dir / "errors.txt").write_text("\n".join(errors) + "\n")
    return manifest


def refresh_chroma_cache(out_dir: Path, *, workers: int = 2, progress: bool = True) -> Path:
    """Recompute ``chroma_cache.parquet`` from a training-set folder's audio with this
    keylib's features (after a :data:`keylib.features.FEATURE_VERSION` change): the
    manifest's rows, each decoded and folded as :func:`run_job` does. Renders nothing.

    Returns the cache's path. Raises :class:`~keylib.errors.InputError` when the folder has
    no manifest or a listed file cannot be decoded (a training set is rendered whole, so a
    missing file means a broken folder, not a track to skip).
    """
    from ...errors import InputError

    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if not manifest.exists():
        raise InputError(f"{manifest} not found: not a training-set folder")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fn = functools.partial(_chroma_of_file, root=str(out_dir))
    results = _pool_map(fn, [r["path"] for r in rows], workers=workers, ordered=True)
    if progress:
        from rich.progress import track

        results = track(results, total=len(rows), description="chroma")
    for chroma, row in zip(results, rows):  # results first: the pool is drained and closed
        row["chroma"] = chroma
    return write_chroma_cache(rows, out_dir / "chroma_cache.parquet", out_dir)


def _pool_map(fn, items: list, *, workers: int, ordered: bool):
    """``fn`` over ``items`` in a pool of ``workers`` processes (in this one for 1), as they
    finish or, when ``ordered``, in order; each worker is replaced after 200 tasks."""
    import multiprocessing as mp

    if workers <= 1:
        yield from map(fn, items)
        return
    ctx = mp.get_context("spawn" if os.environ.get("KEYLIB_SPAWN") else "fork")
    pool = ctx.Pool(workers, maxtasksperchild=200)
    try:
        yield from (pool.imap(fn, items, chunksize=4) if ordered else pool.imap_unordered(fn, items, chunksize=1))
    except BaseException:  # an error, or the caller stopped early: the rest is not wanted
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _chroma_of_file(rel: str, root: str) -> np.ndarray:
    from ... import audio, features
    from ...errors import InputError, TrackError

    path = Path(root) / rel
    try:
        return features.chroma(audio.decode(path.read_bytes(), ext=path.suffix).samples)
    except (OSError, TrackError) as exc:
        raise InputError(f"{path}: cannot read its audio ({exc})") from exc


def _other_splits(manifest: Path, split: str) -> list[dict]:
    """The rows of ``manifest`` (if it exists) whose split is not ``split``."""
    if not manifest.exists():
        return []
    with manifest.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] != split]


def write_chroma_cache(rows: list[dict], path: Path, root: Path, *, replace_split: str | None = None) -> Path:
    """Chroma rows in the extraction job's column layout (+ key, source, piece, split).

    With ``replace_split``, ``rows`` replace only that split's rows of the cache at ``path``
    (if there is one): its other splits' rows are kept, ahead of ``rows``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ...features import FEATURE_VERSION

    table = pa.table({
        "track_id": [r["track_id"] for r in rows],
        "uri": [str(Path(root) / r["path"]) for r in rows],
        "n_frames": [int(r["chroma"].shape[1]) for r in rows],
        "chroma": [r["chroma"].reshape(-1).astype(np.float32) for r in rows],
        "status": ["ok"] * len(rows),
        "feature_version": [FEATURE_VERSION] * len(rows),
        "key": [r["key"] for r in rows],
        "source": [r["source"] for r in rows],
        "piece": [r["piece"] for r in rows],
        "split": [r["split"] for r in rows],
        "instrument": [r["instrument"] for r in rows],
        "cut": [r.get("cut", "excerpt") for r in rows],
        "soundfont": [r.get("soundfont", "") for r in rows],
        "duration_s": [float(r["duration_s"]) for r in rows],
    })
    if replace_split is not None and Path(path).exists():
        old = pq.read_table(str(path))
        old = old.filter(pc.not_equal(old["split"], replace_split)).select(table.column_names).cast(table.schema)
        table = pa.concat_tables([old, table])
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    pq.write_table(table, str(tmp))
    os.replace(tmp, path)  # the old cache stays whole until the new one is
    return path
