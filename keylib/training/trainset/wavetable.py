"""keylib's own synthesis engine: a MIDI file played by random wavetable voices.

FluidSynth plays recorded samples; this engine builds every sound from numbers, so that
training hears timbres that no sample bank has and a soundfont's sound stops being a
shortcut to the key. Each channel gets a voice drawn for its General MIDI family: struck
and plucked sounds die away and darken, bowed and blown ones sustain with vibrato,
ensembles are doubled a few cents apart, bells carry an inharmonic partial. Spectra,
envelopes and vibrato are drawn at random within each family, and so are what makes
real instruments hard for a chroma: resonances at fixed frequencies (formants), a weak
fundamental (the upper partials then name other pitch classes: the fifth, the third) and
overdrive, which adds the sum and difference tones of a chord. Drums are noise and pitch
sweeps. It is written here because no maintained Python package synthesises General MIDI
(pretty_midi's ``synthesize`` plays sine waves only), and the voices must vary at random.

The same MIDI file always gives the same audio (the draws are seeded by its bytes), so an
interrupted render resumes with the same clips.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .midi import DRUM_CHANNEL, Note, read_midi_notes

# What ``--soundfonts`` names to render with this engine instead of a soundfont file.
ENGINE = "wavetable"
TABLE_SIZE = 2048
MAX_PARTIALS = 24


def is_wavetable(sound_source: str | Path | None) -> bool:
    """Whether ``sound_source`` names this engine rather than a soundfont file."""
    return str(sound_source) == ENGINE


@dataclass(frozen=True)
class Voice:
    """How one channel sounds.

    ``bright`` and ``dark`` are the partial amplitudes (shape ``(MAX_PARTIALS,)``) at the
    onset and once the note has settled; a note crossfades from one to the other with time
    constant ``darken_s``. ``sustain`` 0 makes a struck or plucked sound that decays with
    ``decay_s`` (shorter for higher notes).
    """

    bright: np.ndarray
    dark: np.ndarray
    darken_s: float
    attack_s: float
    decay_s: float
    sustain: float
    release_s: float
    vibrato_hz: float
    vibrato_cents: float
    double_cents: float  # a second copy this far apart (an ensemble); 0 = none
    partner_ratio: float  # an inharmonic partial at this ratio (bells, mallets); 0 = none
    partner_level: float
    formants: tuple[tuple[float, float, float], ...] = ()  # (centre Hz, bandwidth Hz, gain dB)
    drive: float = 0.0  # overdrive of the channel's sum (tanh); 0 = clean


def _spectrum(rng: np.random.Generator, *, tilt: float, odd_only: float = 0.0, pluck: float = 0.0) -> np.ndarray:
    """Partial amplitudes ``k ** -tilt`` with random ripple, optional weak even partials
    and the notches of a string plucked at fraction ``pluck`` of its length."""
    k = np.arange(1, MAX_PARTIALS + 1, dtype=np.float64)
    amps = k ** -tilt * 10 ** (rng.normal(0.0, 4.0, k.size) / 20)
    if odd_only:
        amps[1::2] *= 1.0 - odd_only
    if pluck:
        amps *= np.abs(np.sin(np.pi * k * pluck)) + 0.05
    amps[0] = max(amps[0], 0.3 * amps.max())  # keep the fundamental audible
    return amps / amps.max()


def draw_voice(program: int, rng: np.random.Generator) -> Voice:
    """A random voice for General MIDI ``program`` (its family decides the kind of sound)."""
    family = program // 8
    u = rng.uniform
    struck = {"darken_s": u(0.05, 0.4), "attack_s": u(0.001, 0.01), "sustain": 0.0, "release_s": u(0.05, 0.3),
              "vibrato_hz": 0.0, "vibrato_cents": 0.0}
    held = {"darken_s": u(0.1, 1.0), "attack_s": u(0.02, 0.15), "sustain": u(0.6, 1.0), "release_s": u(0.08, 0.4),
            "vibrato_hz": u(4.5, 6.5), "vibrato_cents": u(0.0, 18.0)}
    if family == 0:  # pianos
        kind, bright, dark = struck, _spectrum(rng, tilt=u(0.8, 1.5)), _spectrum(rng, tilt=u(1.8, 3.0))
        extra = {"decay_s": u(1.5, 4.0), "double_cents": u(0.0, 3.0)}
    elif family == 1:  # chromatic percussion: bells, mallets, music boxes
        kind, bright, dark = struck, _spectrum(rng, tilt=u(1.5, 3.0)), _spectrum(rng, tilt=u(2.5, 4.0))
        extra = {"decay_s": u(0.4, 2.5), "partner_ratio": float(rng.choice([2.76, 3.93, 5.40, 4.0])),
                 "partner_level": u(0.1, 0.5)}
    elif family in (3, 13):  # guitars; ethnic plucked instruments
        pluck = u(0.08, 0.3)
        kind, bright, dark = struck, _spectrum(rng, tilt=u(0.7, 1.3), pluck=pluck), _spectrum(rng, tilt=u(1.6, 2.6), pluck=pluck)
        extra = {"decay_s": u(0.8, 3.0)}
    elif family == 4:  # basses: plucked or held, few partials
        tilt = u(1.5, 3.0)
        kind = struck if rng.random() < 0.6 else held
        bright, dark = _spectrum(rng, tilt=tilt), _spectrum(rng, tilt=tilt + 1.0)
        extra = {"decay_s": u(0.8, 2.5), "vibrato_cents": 0.0}
    elif family in (5, 6):  # strings, ensembles, choirs: bowed, doubled
        kind = dict(held, attack_s=u(0.05, 0.25))
        bright, dark = _spectrum(rng, tilt=u(0.9, 1.4)), _spectrum(rng, tilt=u(1.0, 1.8))
        extra = {"decay_s": 1.0, "double_cents": u(4.0, 14.0) if family == 6 or rng.random() < 0.5 else 0.0}
    elif family == 2:  # organs: steady, drawbar-like spectra
        amps = np.zeros(MAX_PARTIALS)
        for harmonic in (1, 2, 3, 4, 6, 8):
            amps[harmonic - 1] = rng.uniform(0.0, 1.0)
        amps[0] = max(amps[0], 0.5)
        kind, bright, dark = dict(held, attack_s=u(0.005, 0.04), vibrato_cents=u(0, 6)), amps, amps
        extra = {"decay_s": 1.0}
    elif family in (7, 8):  # brass; reeds (clarinet-like odd partials half the time)
        odd = u(0.7, 0.95) if family == 8 and rng.random() < 0.5 else 0.0
        kind = held
        bright, dark = _spectrum(rng, tilt=u(0.6, 1.2), odd_only=odd), _spectrum(rng, tilt=u(1.2, 2.2), odd_only=odd)
        extra = {"decay_s": 1.0}
    elif family == 9:  # pipes and flutes: nearly sine
        kind, bright, dark = held, _spectrum(rng, tilt=u(2.5, 4.0)), _spectrum(rng, tilt=u(3.0, 5.0))
        extra = {"decay_s": 1.0}
    elif family in (10, 11):  # synth leads (saw or square) and pads (slow, doubled)
        odd = 0.95 if rng.random() < 0.5 else 0.0
        spectrum = _spectrum(rng, tilt=u(0.8, 1.2), odd_only=odd)
        kind = held if family == 10 else dict(held, attack_s=u(0.2, 0.8), release_s=u(0.3, 1.0))
        bright, dark = spectrum, _spectrum(rng, tilt=u(1.2, 2.5), odd_only=odd)
        extra = {"decay_s": 1.0, "double_cents": u(5.0, 20.0) if family == 11 else 0.0}
    else:  # effects and the rest: anything
        kind = struck if rng.random() < 0.5 else held
        bright, dark = _spectrum(rng, tilt=u(0.6, 2.5)), _spectrum(rng, tilt=u(1.0, 3.5))
        extra = {"decay_s": u(0.5, 3.0)}
    fields = {"double_cents": 0.0, "partner_ratio": 0.0, "partner_level": 0.0, **kind, **extra}
    if rng.random() < 0.25:  # a weak fundamental (double reeds, low piano and organ stops)
        weak = u(0.05, 0.4)
        bright, dark = bright.copy(), dark.copy()
        bright[0] *= weak
        dark[0] *= weak
    formants: tuple = ()
    if rng.random() < 0.6:  # 1-3 resonances, 250-3500 Hz, 6-18 dB
        centres = [(float(np.exp(u(np.log(250.0), np.log(3500.0)))), u(6.0, 18.0))
                   for _ in range(int(rng.integers(1, 4)))]
        formants = tuple((centre, centre * u(0.15, 0.5), gain) for centre, gain in centres)
    distorted = program in (29, 30) or (family == 10 and rng.random() < 0.5) or rng.random() < 0.05
    return Voice(bright=bright, dark=dark, formants=formants, drive=u(1.5, 6.0) if distorted else 0.0, **fields)


def _formant_gain(freqs: np.ndarray, formants: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """The amplitude gain of ``voice.formants`` at ``freqs`` (Hz): 1 away from them."""
    gain = np.ones_like(freqs)
    for centre, width, gain_db in formants:
        gain += (10 ** (gain_db / 20) - 1) * np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    return gain


def _table(amps: np.ndarray, n_partials: int) -> np.ndarray:
    """One period of the waveform with the first ``n_partials`` partials (band-limited)."""
    phase = np.arange(TABLE_SIZE) / TABLE_SIZE
    k = np.arange(1, n_partials + 1)
    return (amps[:n_partials] @ np.sin(2 * np.pi * np.outer(k, phase))).astype(np.float32)


def _note(note: Note, voice: Voice, *, sr: int, rng: np.random.Generator, tables: dict) -> np.ndarray:
    """The samples of one pitched note, its release included."""
    f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
    held_s = max(note.end - note.start, 0.02)
    decay_s = voice.decay_s * 2 ** (-(note.pitch - 60) / 24)  # higher notes die away sooner
    if voice.sustain == 0.0:
        held_s = min(held_s, 4 * decay_s)  # a struck note is inaudible long before its note-off
    n = int((held_s + voice.release_s) * sr)
    t = np.arange(n, dtype=np.float32) / sr
    env = np.minimum(t / voice.attack_s, 1.0)
    if voice.sustain == 0.0:
        env *= np.exp(-t / decay_s)
    else:
        env *= voice.sustain + (1 - voice.sustain) * np.exp(-t / 0.2)
    release = t > held_s
    env[release] *= np.exp(-(t[release] - held_s) / (voice.release_s / 4))
    # vibrato sets in after a moment, as players do
    depth = voice.vibrato_cents * np.minimum(t / 0.4, 1.0)
    ratio = 2 ** (depth * np.sin(2 * np.pi * voice.vibrato_hz * t + rng.uniform(0, 6.3)) / 1200)
    key = (id(voice), note.pitch)
    if key not in tables:
        n_partials = int(np.clip(0.45 * sr / f0, 1, MAX_PARTIALS))
        shaped = _formant_gain(f0 * np.arange(1, MAX_PARTIALS + 1), voice.formants)
        tables[key] = (_table(voice.bright * shaped, n_partials), _table(voice.dark * shaped, n_partials))
    bright, dark = tables[key]
    fade = np.exp(-t / voice.darken_s)
    out = np.zeros(n, dtype=np.float32)
    copies = [(1.0, 0.0)] if not voice.double_cents else [(0.6, -voice.double_cents / 2), (0.6, voice.double_cents / 2)]
    for level, cents in copies:
        cycles = np.cumsum(f0 * 2 ** (cents / 1200) * ratio) / sr + rng.uniform()
        idx = (cycles * TABLE_SIZE).astype(np.int64) % TABLE_SIZE
        out += level * (fade * bright[idx] + (1 - fade) * dark[idx])
    if voice.partner_ratio and voice.partner_ratio * f0 < 0.45 * sr:
        out += voice.partner_level * np.sin(2 * np.pi * voice.partner_ratio * f0 * t) * np.exp(-t / (decay_s / 3))
    return out * env * (note.velocity / 127) ** 1.5


def _drum(note: Note, *, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A drum hit: General MIDI kick, snare, toms as pitch sweeps and noise, the rest as
    noise bursts, brighter and shorter for hats than for cymbals."""
    from scipy import signal

    pitch = note.pitch
    if pitch in (35, 36, 41, 43, 45, 47, 48, 50):  # kicks and toms: a falling sine
        top, bottom, length = (150.0, 45.0, 0.35) if pitch in (35, 36) else (300.0 - 2 * (50 - pitch), 90.0, 0.4)
        t = np.arange(int(length * sr)) / sr
        freq = bottom + (top - bottom) * np.exp(-t / 0.04)
        return (np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / (length / 4))).astype(np.float32) * note.velocity / 127
    length = {38: 0.25, 40: 0.25, 42: 0.06, 44: 0.08, 46: 0.3, 49: 1.2, 51: 0.8, 57: 1.2}.get(pitch, 0.15)
    cutoff = {38: 1500.0, 40: 1500.0}.get(pitch, 6000.0)
    t = np.arange(int(length * sr)) / sr
    noise = signal.sosfilt(_highpass(min(cutoff, 0.45 * sr), sr), rng.standard_normal(t.size)) * np.exp(-t / (length / 4))
    return (0.5 * noise * note.velocity / 127).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _highpass(cutoff: float, sr: int) -> np.ndarray:
    """A second-order Butterworth high-pass (second-order sections), designed once per
    cutoff rather than once per drum hit."""
    from scipy import signal

    return signal.butter(2, cutoff, "highpass", fs=sr, output="sos")


def render(midi_path: Path, *, sr: int) -> np.ndarray:
    """Play a MIDI file with random voices (one per channel); mono float32 at ``sr``,
    peak 0.9. The draws are seeded by the file's bytes."""
    notes, programs = read_midi_notes(midi_path)
    rng = np.random.default_rng(zlib.crc32(Path(midi_path).read_bytes()))
    voices = {ch: draw_voice(program, rng) for ch, program in sorted(programs.items()) if ch != DRUM_CHANNEL}
    levels = {ch: 10 ** (rng.uniform(-8, 0) / 20) for ch in programs}
    end = max((n.end for n in notes), default=0.0)
    size = int((end + 2.0) * sr)
    # an overdriven channel is played apart and then driven: the drive acts on its chords
    buffers = {ch: np.zeros(size, dtype=np.float32) for ch, voice in voices.items() if voice.drive}
    out = np.zeros(size, dtype=np.float32)
    tables: dict = {}
    for note in notes:
        y = (_drum(note, sr=sr, rng=rng) if note.channel == DRUM_CHANNEL
             else _note(note, voices[note.channel], sr=sr, rng=rng, tables=tables))
        a = int(note.start * sr)
        y = y[: max(size - a, 0)]
        target = buffers.get(note.channel, out)
        target[a:a + y.size] += levels[note.channel] * y
    for ch, buffer in buffers.items():
        drive, peak = voices[ch].drive, float(np.max(np.abs(buffer), initial=0.0))
        if peak > 0:
            out += levels[ch] * np.tanh(drive * buffer / peak) / np.tanh(drive)
    peak = float(np.max(np.abs(out), initial=0.0))
    return out * (0.9 / peak) if peak > 0 else out
