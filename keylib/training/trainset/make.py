"""Making a training set: each planned job rendered into labelled FLAC clips
(:func:`run_job`), all of them in a local process pool, and ``manifest.csv`` and
``chroma_cache.parquet`` written (:func:`make_training_set`)."""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from ...features import FEATURE_VERSION
from ...keys import KEY_NAMES
from .atonal import atonal_clip
from .chroma_cache import write_chroma_cache
from .journal import RenderJournal, job_id
from .midi import DRUM_CHANNEL, Piece, write_midi
from .plan import Job, pieces_of, plan_jobs
from .pool import pool_map
from .render import RENDER_SR, SOUNDFONT, augment, playable_programs, render_midi, trim_silence

__all__ = ["HELDOUT_EXCERPT_S", "track_id_of", "run_job", "make_training_set"]

# Held-out whole songs also get this excerpt (start, length in s), cut from the same render,
# so that excerpt and whole-song scores compare the same music.
HELDOUT_EXCERPT_S = (15.0, 30.0)


def track_id_of(piece: Piece, i: int) -> str:
    """A clip's track id: source, piece, key and a hash of what makes the clip (piece, key,
    clip number, programs, soundfont)."""
    tag = zlib.crc32(f"{piece.piece}|{piece.key}|{i}|{sorted(piece.programs.items())}|{piece.soundfont}".encode()) & 0xFFFFFFFF
    return f"{piece.source}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', piece.piece)}-{KEY_NAMES[piece.key].replace(' ', '').replace('#', 's')}-{tag:08x}"


# The scratch folders of the jobs this process is rendering (see _scratch).
_SCRATCH: set[str] = set()


@contextlib.contextmanager
def _scratch():
    """A temporary folder for a job's MIDI and WAV files, removed when the job ends and also
    when the process is stopped by SIGTERM (``kill``, or the pool stopping its workers): an
    interrupted render left one folder per worker in /tmp before."""
    _remove_scratch_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="keylib-render-") as tmp:
        _SCRATCH.add(tmp)
        try:
            yield tmp
        finally:
            _SCRATCH.discard(tmp)


def _remove_scratch_on_sigterm() -> None:
    """Install (once per process, from its main thread) a SIGTERM handler that removes the
    scratch folders, then does what the signal did before: the handler there was, or dying
    of it."""
    if threading.current_thread() is not threading.main_thread():
        return
    before = signal.getsignal(signal.SIGTERM)
    if before is signal.SIG_IGN or getattr(before, "_keylib_scratch", False):
        return

    def remove_and_go_on(signum, frame):
        for tmp in list(_SCRATCH):
            shutil.rmtree(tmp, ignore_errors=True)
        if callable(before):
            before(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    remove_and_go_on._keylib_scratch = True
    signal.signal(signal.SIGTERM, remove_and_go_on)


def run_job(job: Job, out_dir: str, with_chroma: bool = True, augment_strength: float = 1.0) -> list[dict]:
    """Render the pieces of ``job``; returns manifest rows (plus ``chroma`` when asked)."""
    from ... import audio, features

    out = Path(out_dir)
    if job.kind == "atonal":
        return _run_atonal(job, out, with_chroma=with_chroma)
    rows = []
    try:
        pieces = pieces_of(job)
    except Exception as exc:  # a score music21 cannot read is skipped, not fatal
        return [{"error": f"{job.ref}: {type(exc).__name__}: {exc}"}]
    with _scratch() as tmp:
        for i, piece in enumerate(pieces):
            seed = job.variants[min(i, len(job.variants) - 1)][1]
            rng = np.random.default_rng(seed + 7919)
            if not [n for n in piece.notes if n.channel != DRUM_CHANNEL]:
                continue
            mid = write_midi(piece.notes, playable_programs(piece.programs, piece.soundfont), Path(tmp) / "x.mid")
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
    with _scratch() as tmp:
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


def make_training_set(out_dir: Path, *, workers: int = 2, with_chroma: bool = True, progress: bool = True,
                      **plan) -> Path:
    """Render the planned jobs (:func:`plan_jobs`) in a local process pool; write
    manifest.csv (+ chroma_cache.parquet), and errors.txt for the jobs that failed.

    Each job's rows go to the folder's render journal (:mod:`.journal`) as the job
    finishes: the same call run again into the same folder after a stop (a crash, Ctrl-C)
    renders only the jobs not journaled. The journal goes once manifest and cache are
    written. A worker process that dies costs its job (an error row), not the render.

    Returns the manifest's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(**plan)
    # expensive jobs first so the pool's tail is short
    order = {"polish": 0, "score": 0, "chorale": 1, "abc": 2, "pop909": 3, "procedural": 4, "atonal": 5}
    jobs.sort(key=lambda j: order[j.kind])
    journal = RenderJournal(out_dir, chroma=FEATURE_VERSION if with_chroma else None)
    rows, errors = _render(jobs, out_dir, journal, workers=workers, with_chroma=with_chroma, progress=progress)
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
    journal.finish({job_id(j) for j in jobs})
    return manifest


def _render(jobs: list[Job], out_dir: Path, journal: RenderJournal, *, workers: int, with_chroma: bool,
            progress: bool) -> tuple[list[dict], list[str]]:
    """The rows and errors of ``jobs``: those journaled read back, the others rendered and
    journaled as they finish (all but failed ones, which run again next time)."""
    rows: list[dict] = []
    errors: list[str] = []
    todo = []
    for job in jobs:
        done = journal.rows_of(job_id(job))
        if done is None:
            todo.append(job)
        else:
            rows += done
    fn = functools.partial(_run_identified, out_dir=str(out_dir), with_chroma=with_chroma)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
        bar.start()
        task = bar.add_task("rendering", total=len(jobs), completed=len(jobs) - len(todo))
    try:
        for jid, res in pool_map(fn, todo, workers=workers, ordered=False, on_crash=_lost_job):
            failed = [row["error"] for row in res if "error" in row]
            if not failed:
                journal.append(jid, res)
            errors += failed
            rows += [row for row in res if "error" not in row]
            if bar is not None:
                bar.update(task, advance=1, description=f"rendering ({len(rows)} clips)")
    finally:
        if bar is not None:
            bar.stop()
    return rows, errors


def _run_identified(job: Job, out_dir: str, with_chroma: bool) -> tuple[str, list[dict]]:
    """:func:`run_job` in a worker, its rows with the job's id."""
    return job_id(job), run_job(job, out_dir, with_chroma=with_chroma)


def _lost_job(job: Job, message: str) -> tuple[str, list[dict]]:
    """A job whose worker died twice: an error row."""
    return job_id(job), [{"error": f"{job.kind} {job.ref} ({job.split}): {message}"}]


def _other_splits(manifest: Path, split: str) -> list[dict]:
    """The rows of ``manifest`` (if it exists) whose split is not ``split``."""
    if not manifest.exists():
        return []
    with manifest.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] != split]
