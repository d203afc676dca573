"""Training-set generator: labelled audio rendered from MIDI with FluidSynth.

Sources (each becomes a ``source`` value in the manifest):

- ``pop909``: real pop songs (piano arrangements with human key labels) from a POP909
  folder; one-key songs only, an excerpt of up to :data:`POP909_RENDER_S` seconds is
  rendered with random General MIDI instruments (and a drum part on the annotated beats)
  and cut into clips of 20-40 s. A block of song ids (>= ``pop909_holdout_from``) is
  held out (``split = heldout``) and rendered with instruments training never uses.
- ``procedural``: pieces generated here in every key: diatonic progressions ending in
  cadences, bass lines, melodies from the scale (minor with the raised leading tone on
  the dominant), drums, random instruments, tempi and lengths of 20-40 s.
- ``bach-chorales``: music21's Bach chorales whose final bass note is the tonic of the
  key signature's major or relative minor (that fixes the mode; modal chorales are skipped).
- ``folk-ryans`` (training) and ``folk-nottingham`` / ``folk-oneills`` (held out): ABC
  tunes whose ``K:`` field states the mode (bare letter or ``maj`` = major, ``m``/``min``
  = minor, modal tunes skipped) and whose last note is that tonic. Nottingham tunes carry
  chord symbols, which are played as an accompaniment.
- ``polish-scores``: real compositions of the 17th to early 20th century (symphonies,
  chamber and church music, songs, piano and organ pieces) with stated keys, played with the
  score's own instruments or random ones; whole composers are kept for validation or held out.

Every clip is augmented at random (level, equalisation, noise, reverb, detuning by up to
40 cents) and written as mono FLAC; its chroma is computed with :func:`keylib.audio.decode`
and :func:`keylib.features.chroma` (the code inference uses) into ``chroma_cache.parquet``,
which has the columns of the extraction job's ``chroma/`` Parquet plus ``key``, ``source``,
``piece`` and ``split``. ``manifest.csv`` has ``path``, ``track_id``, ``key``, ``source``,
``piece``, ``instrument``, ``split``, so the extraction job can also turn it into Parquet.

Modules, one concern each:

- :mod:`.midi`: :class:`Note`, :class:`Piece`, MIDI files in and out.
- :mod:`.instruments`: General MIDI programs per role, for training and held out.
- :mod:`.render`: soundfonts, FluidSynth and TiMidity++ rendering, augmentation.
- :mod:`.wavetable`: keylib's own synthesis engine (random wavetable voices per GM family).
- :mod:`.procedural`: the procedural composer and drum parts.
- :mod:`.sources`: POP909, music21 scores (chorales, quartets) and ABC tunes.
- :mod:`.polish`: the Polish Music Heritage ``**kern`` scores (CC BY 4.0), split by composer.
- :mod:`.atonal`: clips without a key.
- :mod:`.plan`: which pieces, keys, transpositions, splits and soundfonts; a job's pieces.
- :mod:`.make`: rendering a job into clips, the whole set and its ``manifest.csv``.
- :mod:`.chroma_cache`: ``chroma_cache.parquet``, written or recomputed.
- :mod:`.journal`: each rendered job's rows, kept as it finishes, so a stopped render resumes.
- :mod:`.pool`: the local process pool.
"""

from .atonal import ATONAL_KINDS, atonal_clip
from .chroma_cache import refresh_chroma_cache, write_chroma_cache
from .instruments import HELDOUT_BY_ROLE, HELDOUT_PROGRAMS, TRAIN_PROGRAMS
from .make import HELDOUT_EXCERPT_S, make_training_set, run_job, track_id_of
from .midi import DRUM_CHANNEL, Note, Piece, read_midi_notes, read_midi_tracks, write_midi
from .plan import Job, plan_jobs
from .polish import POLISH_SOURCE, polish_piece, polish_root, polish_scores
from .procedural import procedural_piece
from .render import HELDOUT_SOUNDFONTS, RENDER_SR, SOUNDFONT, TRAIN_SOUNDFONTS, augment, render_midi
from .sources import POP909_RENDER_S, abc_tunes, chorale_key, pop909_piece, pop909_songs, score_notes

__all__ = [
    "ATONAL_KINDS",
    "DRUM_CHANNEL",
    "HELDOUT_BY_ROLE",
    "HELDOUT_EXCERPT_S",
    "HELDOUT_PROGRAMS",
    "HELDOUT_SOUNDFONTS",
    "Job",
    "Note",
    "POP909_RENDER_S",
    "POLISH_SOURCE",
    "Piece",
    "RENDER_SR",
    "SOUNDFONT",
    "TRAIN_PROGRAMS",
    "TRAIN_SOUNDFONTS",
    "abc_tunes",
    "atonal_clip",
    "augment",
    "chorale_key",
    "make_training_set",
    "plan_jobs",
    "polish_piece",
    "polish_root",
    "polish_scores",
    "pop909_piece",
    "pop909_songs",
    "procedural_piece",
    "read_midi_notes",
    "read_midi_tracks",
    "refresh_chroma_cache",
    "render_midi",
    "run_job",
    "score_notes",
    "track_id_of",
    "write_chroma_cache",
    "write_midi",
]
