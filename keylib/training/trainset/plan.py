"""The plan of a training set: which pieces, keys, transpositions, splits and soundfonts
(:func:`plan_jobs`, one :class:`Job` per piece), and the pieces a job becomes when it is
rendered (:func:`pieces_of`)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ConfigError
from ...keys import transpose_index
from ..data import is_validation_piece
from . import wavetable
from .atonal import ATONAL_KINDS
from .instruments import programs_for
from .midi import Note, Piece
from .polish import POLISH_SOURCE, composer_split, polish_piece, polish_scores
from .procedural import procedural_piece
from .render import HELDOUT_SOUNDFONTS, VALIDATION_SOUNDFONTS, soundfonts_for
from .sources import abc_tunes, chorale_key, corpus_dir, pop909_piece, pop909_songs, score_notes

__all__ = ["Job", "plan_jobs", "pieces_of"]


@dataclass
class Job:
    """One unit of work for a worker: a piece and its variants (transposition, seed)."""

    kind: str  # procedural | pop909 | chorale | score | abc | polish | atonal
    ref: str  # song id, corpus path, abc path::tune id, kern path
    key: int | None
    variants: list[tuple[int, int]]  # (transpose, seed)
    split: str
    source: str
    extra: str = ""  # abc text
    whole: bool = False  # render the whole piece (no 20-40 s cut)
    soundfonts: tuple[str, ...] = ()  # soundfonts to draw from; () = the split's own (soundfonts_for)


def _check_training_soundfonts(soundfonts: Sequence[str]) -> tuple[str, ...]:
    fonts = tuple(str(f) for f in soundfonts)
    for font in fonts:
        if wavetable.is_wavetable(font):
            continue
        if not Path(font).is_file():
            raise ConfigError(f"soundfont {font!r} does not exist")
        if Path(font).resolve() in {Path(h).resolve() for h in HELDOUT_SOUNDFONTS + VALIDATION_SOUNDFONTS}:
            raise ConfigError(f"soundfont {font!r} is kept for the held-out or validation set; training must not hear it")
    return fonts


def plan_jobs(*, pop909: Path | None, n_procedural: int, n_chorales: int, n_folk: int, n_heldout_folk: int,
              transpositions: int, pop909_renders: int, pop909_holdout_from: int, seed: int,
              pop909_limit: int | None = None, pop909_offset: int = 0, pop909_heldout: bool = True,
              whole: bool = False, n_heldout_classical: int = 0, n_atonal: int = 0,
              only_split: str | None = None, soundfonts: Sequence[str] = (), polish: Path | None = None,
              n_polish: int = 0, n_validation_polish: int = 0, n_heldout_polish: int = 0,
              validation_fraction: float = 0.12, split_seed: int = 7) -> list[Job]:
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

    ``polish`` (a folder of the Polish Music Heritage ``**kern`` scores): ``n_polish``
    training scores of training composers (those with string parts first), and
    ``n_heldout_polish`` scores of held-out composers (:func:`.polish.composer_split`).
    ``only_split="validation"`` renders the validation set training never hears:
    ``n_validation_polish`` scores of validation composers and the POP909 training songs
    that :func:`keylib.training.data.is_validation_piece` keeps for validation, played by
    TiMidity++ (:data:`.render.VALIDATION_SOUNDFONTS`) with the training instruments.
    """
    soundfonts = _check_training_soundfonts(soundfonts)
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []
    # One generator draws every source's pieces and variants, in this order: the plan of a
    # seed stays the same whichever split is kept.
    if pop909 is not None and Path(pop909).is_dir():
        jobs += _pop909_jobs(Path(pop909), rng, renders=pop909_renders, holdout_from=pop909_holdout_from,
                             limit=pop909_limit, offset=pop909_offset, heldout=pop909_heldout)
    for i in range(n_procedural):
        jobs.append(Job("procedural", f"{i:05d}", int(rng.integers(24)), _variants(rng, 1), "train", "procedural"))
    if n_heldout_classical:
        jobs += _classical_jobs(rng, n_heldout_classical)
    if n_chorales:
        jobs += _chorale_jobs(rng, n_chorales, transpositions)
    cdir = corpus_dir()
    if n_folk:
        jobs += _folk_jobs(rng, cdir, n_folk, transpositions)
    if n_heldout_folk:
        jobs += _heldout_folk_jobs(rng, cdir, n_heldout_folk)
    if polish is not None and (n_polish or n_heldout_polish or n_validation_polish):
        jobs += _polish_jobs(Path(polish), rng, n_train=n_polish, n_validation=n_validation_polish,
                             n_heldout=n_heldout_polish, transpositions=transpositions)
    if only_split == "validation":  # the validation pieces of the other sources, by the training rule
        jobs += [Job(j.kind, j.ref, j.key, j.variants, "validation", j.source, j.extra) for j in jobs
                 if j.split == "train" and j.kind == "pop909"
                 and is_validation_piece(j.source, j.ref.rsplit("::", 1)[-1], seed=split_seed, fraction=validation_fraction)]
    for i in range(n_atonal):
        kind = ATONAL_KINDS[i % len(ATONAL_KINDS)]
        jobs.append(Job("atonal", kind, None, _variants(rng, 1), "atonal", f"atonal-{kind}"))
    for job in jobs:
        job.whole = whole
        if job.split == "train":  # the held-out set keeps its own sounds
            job.soundfonts = soundfonts
    return [j for j in jobs if j.split == only_split] if only_split else jobs


def _variants(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """``n`` (transposition, seed) pairs: distinct transpositions while there are 12 to draw."""
    shifts = rng.permutation(12)[:n] if n <= 12 else rng.integers(0, 12, n)
    return [(int(s), int(rng.integers(1 << 31))) for s in shifts]


def _pop909_jobs(pop909: Path, rng: np.random.Generator, *, renders: int, holdout_from: int, limit: int | None,
                 offset: int, heldout: bool) -> list[Job]:
    """POP909 songs: ids below ``holdout_from`` for training, the others held out."""
    songs = pop909_songs(pop909)
    train = [s for s in songs if int(s[0]) < holdout_from][offset:]
    held = [s for s in songs if int(s[0]) >= holdout_from] if heldout else []
    if limit:
        train, held = train[:limit], held[: max(1, limit // 5)]
    jobs = []
    for song, key in train + held:
        split = "heldout" if int(song) >= holdout_from else "train"
        jobs.append(Job("pop909", f"{pop909}::{song}", key, _variants(rng, renders), split, "pop909"))
    return jobs


def _polish_jobs(root: Path, rng: np.random.Generator, *, n_train: int, n_validation: int, n_heldout: int,
                 transpositions: int) -> list[Job]:
    """Polish Music Heritage scores by composer split; within a split, scores with string
    parts first (the music training lacks most), each group in random order."""
    scores = polish_scores(root)
    jobs = []
    for split, n in (("train", n_train), ("validation", n_validation), ("heldout", n_heldout)):
        mine = [s for s in scores if composer_split(s.composer) == split]
        order = rng.permutation(len(mine))
        mine = sorted((mine[i] for i in order), key=lambda s: not s.strings)[:n]
        jobs += [Job("polish", s.path, s.key, _variants(rng, transpositions if split == "train" else 1), split,
                     POLISH_SOURCE, s.composer) for s in mine]
    return jobs


def _classical_jobs(rng: np.random.Generator, n: int) -> list[Job]:
    """Held-out string-quartet movements from music21's corpus."""
    cdir = corpus_dir()
    paths = sorted(str(p.relative_to(cdir)) for c in ("beethoven", "haydn", "mozart", "schumann_robert")
                   for p in (cdir / c).rglob("*.mxl"))
    return [Job("score", rel, None, _variants(rng, 1), "heldout", "classical-quartets")
            for rel in [paths[i] for i in rng.permutation(len(paths))[:n]]]


def _chorale_jobs(rng: np.random.Generator, n: int, transpositions: int) -> list[Job]:
    """Bach chorales from music21's corpus, for training."""
    from music21 import corpus

    paths = [str(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".krn", ".xml"))]
    rng.shuffle(paths)
    return [Job("chorale", "bach/" + Path(p).name, None, _variants(rng, transpositions), "train", "bach-chorales")
            for p in paths[:n]]


def _folk_jobs(rng: np.random.Generator, cdir: Path, n: int, transpositions: int) -> list[Job]:
    """ABC tunes of Ryan's Mammoth Collection (the first of each file), for training."""
    files = sorted(glob.glob(str(cdir / "ryansMammoth" / "*.abc")))
    rng.shuffle(files)
    tunes = [(f, t) for f in files for t in abc_tunes(Path(f))[:1]]
    return [Job("abc", f"{f}::{tid}", key, _variants(rng, max(1, transpositions // 2)), "train", "folk-ryans", text)
            for f, (tid, text, key) in tunes[:n]]


def _heldout_folk_jobs(rng: np.random.Generator, cdir: Path, n: int) -> list[Job]:
    """Held-out ABC tunes: the Nottingham dataset and O'Neill's (first three files)."""
    held = []
    for f in sorted(glob.glob(str(cdir / "nottingham-dataset" / "*.abc"))):
        held += [("folk-nottingham", f, t) for t in abc_tunes(Path(f))]
    for f in sorted(glob.glob(str(cdir / "oneills1850" / "*.abc")))[:3]:
        held += [("folk-oneills", f, t) for t in abc_tunes(Path(f))]
    jobs = []
    for i in rng.permutation(len(held))[:n]:
        src, f, (tid, text, key) = held[i]
        jobs.append(Job("abc", f"{f}::{tid}", key, _variants(rng, 1), "heldout", src, text))
    return jobs


def pieces_of(job: Job) -> list[Piece]:
    """The pieces of ``job``, one per variant, each with its soundfont (none when a score
    cannot be trusted: a chorale without a clear key, a tune not ending on its tonic)."""
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
    if job.kind == "polish":
        from .polish import PolishScore, score_tracks

        score = PolishScore(job.ref, job.extra, job.key, True)
        tracks = score_tracks(score.path)  # one Verovio conversion for all the variants
        for transpose, seed in job.variants:
            rng = np.random.default_rng(seed)
            pieces.append(polish_piece(score, rng, transpose=transpose, programs_by_role=programs_for(job.split),
                                       split=job.split, tracks=tracks))
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
