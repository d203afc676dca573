"""keylib's own synthesis engine (``--soundfonts wavetable``): MIDI played by random
wavetable voices, a second engine beside FluidSynth for the training renders."""

from __future__ import annotations

import numpy as np
import pytest

from keylib import audio, features, keys, templates
from keylib.errors import ConfigError
from keylib.tensors import pitch_classes
from keylib.training import trainset
from keylib.training.trainset import render, wavetable

SR = render.RENDER_SR
Note = trainset.Note


def _envelope(y: np.ndarray, *, at_s: float, width_s: float = 0.1) -> float:
    a = int(at_s * SR)
    return float(np.sqrt(np.mean(y[a:a + int(width_s * SR)] ** 2)))


def test_midi_notes_keep_channels_programs_and_drums(tmp_path):
    notes = [Note(0.0, 0.5, 60, 90, 0), Note(0.5, 1.25, 43, 80, 1), Note(0.0, 0.1, 36, 100, trainset.DRUM_CHANNEL)]
    trainset.write_midi(notes, {0: 48, 1: 33}, tmp_path / "a.mid")
    got, programs = trainset.read_midi_notes(tmp_path / "a.mid")
    assert [(n.pitch, n.channel) for n in got] == [(60, 0), (36, 9), (43, 1)]
    assert got[2].start == pytest.approx(0.5) and got[2].end == pytest.approx(1.25)
    assert programs == {0: 48, 1: 33, 9: 0}
    assert [[p for _, _, p, _ in track] for track in trainset.read_midi_tracks(tmp_path / "a.mid")] == [[60], [43]]


def test_a_cadence_played_by_the_engine_is_in_its_key(tmp_path):
    """A D major I-IV-V-I for strings, piano and bass over a drum beat: the rendered chroma's
    template key is D major."""
    chords = [(62, 66, 69), (67, 71, 74), (69, 73, 76), (62, 66, 69)]
    notes = []
    for i, chord in enumerate(chords):
        notes += [Note(2.0 * i, 2.0 * i + 2.0, p, 80, 0) for p in chord]  # strings
        notes += [Note(2.0 * i, 2.0 * i + 1.0, p + 12, 70, 1) for p in chord]  # piano
        notes.append(Note(2.0 * i, 2.0 * i + 2.0, chord[0] - 24, 90, 2))  # bass
        notes += [Note(2.0 * i + b / 2, 2.0 * i + b / 2 + 0.1, 36 if b % 2 == 0 else 42, 100, trainset.DRUM_CHANNEL)
                  for b in range(4)]
    mid = trainset.write_midi(notes, {0: 48, 1: 0, 2: 33}, tmp_path / "d.mid")
    y = render.render_midi(mid, tmp_path / "d.wav", soundfont=wavetable.ENGINE)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert 8.0 <= len(y) / SR <= 10.5 and float(np.abs(y).max()) == pytest.approx(0.9, abs=1e-4)
    chroma = features.chroma(y)
    assert templates.template_key(pitch_classes(chroma)) == keys.parse_key("D major")
    again = render.render_midi(mid, tmp_path / "d.wav", soundfont=wavetable.ENGINE)
    assert np.array_equal(y, again)  # seeded by the file: a resumed render gives the same clip


def test_struck_voices_die_away_and_bowed_ones_sustain(tmp_path):
    held = [Note(0.0, 4.0, 57, 100, 0)]
    piano = render.render_midi(trainset.write_midi(held, {0: 0}, tmp_path / "p.mid"), tmp_path / "x.wav",
                               soundfont=wavetable.ENGINE)
    strings = render.render_midi(trainset.write_midi(held, {0: 48}, tmp_path / "s.mid"), tmp_path / "x.wav",
                                 soundfont=wavetable.ENGINE)
    assert _envelope(piano, at_s=3.5) < 0.2 * _envelope(piano, at_s=0.05)
    assert _envelope(strings, at_s=3.5) > 0.4 * _envelope(strings, at_s=0.5)
    # voices are drawn at random: the same notes for another program sound otherwise
    assert not np.allclose(piano[: len(strings)], strings[: len(piano)], atol=1e-2)


def test_a_voice_is_band_limited():
    """The highest piano key (C8, 4186 Hz) keeps its partials below the Nyquist frequency,
    so nothing folds back below its fundamental."""
    rng = np.random.default_rng(0)
    for program in (0, 40, 56, 80):
        voice = wavetable.draw_voice(program, rng)
        assert voice.bright.shape == voice.dark.shape == (wavetable.MAX_PARTIALS,)
        assert 0.0 < voice.bright.max() <= 1.0 and voice.attack_s > 0 and voice.release_s > 0
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        mid = trainset.write_midi([Note(0.0, 1.0, 108, 100, 0)], {0: 80}, Path(tmp) / "c8.mid")
        y = render.render_midi(mid, Path(tmp) / "x.wav", soundfont=wavetable.ENGINE)
    spectrum = np.abs(np.fft.rfft(y[: SR // 2]))
    freqs = np.fft.rfftfreq(SR // 2, 1 / SR)
    assert spectrum[freqs < 3900].max() < 0.01 * spectrum.max()


def test_the_job_path_renders_with_the_engine_and_names_it(tmp_path):
    """Training plans accept the engine by name (it is no file) and the manifest says which
    sound source played each clip; held-out sounds stay refused."""
    jobs = trainset.plan_jobs(pop909=None, n_procedural=2, n_chorales=0, n_folk=0, n_heldout_folk=0, transpositions=1,
                              pop909_renders=1, pop909_holdout_from=800, seed=3, soundfonts=[wavetable.ENGINE],
                              n_heldout_classical=0, n_atonal=0, only_split="train")
    rows = [r for job in jobs for r in trainset.run_job(job, str(tmp_path))]
    assert rows and all("error" not in r for r in rows)
    assert {r["soundfont"] for r in rows} == {"wavetable"}
    for row in rows:
        decoded = audio.decode((tmp_path / row["path"]).read_bytes(), ext=".flac")
        assert decoded.samples.size > 10 * SR and np.isfinite(row["chroma"]).all()
    with pytest.raises(ConfigError, match="held-out"):
        trainset.plan_jobs(pop909=None, n_procedural=1, n_chorales=0, n_folk=0, n_heldout_folk=0, transpositions=1,
                           pop909_renders=1, pop909_holdout_from=800, seed=3,
                           soundfonts=[wavetable.ENGINE, render.HELDOUT_SOUNDFONTS[0]])


def test_overdrive_adds_the_difference_tones_of_a_chord(tmp_path):
    """A fifth (C4, G4) on an overdriven guitar sounds C3 (their difference tone) as well,
    which a clean piano playing the same fifth does not."""

    def difference_tone(program: int) -> float:
        mid = trainset.write_midi([Note(0.0, 2.0, 60, 100, 0), Note(0.0, 2.0, 67, 100, 0)], {0: program},
                                  tmp_path / f"{program}.mid")
        y = render.render_midi(mid, tmp_path / "x.wav", soundfont=wavetable.ENGINE)[int(0.2 * SR):int(1.2 * SR)]
        spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
        freqs = np.fft.rfftfreq(y.size, 1 / SR)
        return float(spectrum[np.abs(freqs - 130.8) < 4].max() / spectrum.max())

    assert difference_tone(30) > 5 * difference_tone(0) and difference_tone(29) > 5 * difference_tone(0)
