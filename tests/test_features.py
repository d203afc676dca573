"""The chroma feature function and the audio decoder, on real synthesized audio."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from keylib import audio, features, synth
from keylib.errors import DecodeError, EmptyFileError, TooShortError, UnsupportedFormatError

V2 = features.FEATURE_VERSION_V2  # the librosa-equal chroma band that both versions start with


def _triad(sr: int, midis=(60, 64, 67), seconds=3.0) -> np.ndarray:
    return sum(synth.tone(m, seconds, sr=sr) for m in midis)


def _detuned(y: np.ndarray, cents: float, *, sr: int) -> np.ndarray:
    """``y`` played ``cents`` sharp (flat when negative): resampled as if recorded slower."""
    return soxr.resample(y, sr * 2.0 ** (cents / 1200.0), sr, quality="HQ").astype(np.float32)


def _librosa_chroma(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The v1 recipe as it was written with librosa's own STFT and filterbank: the reference
    that the numpy implementation must reproduce. Returns (spectrogram, chroma, tuning)."""
    import librosa

    spec = np.abs(librosa.stft(y, n_fft=features.N_FFT, hop_length=features.HOP_LENGTH, window="hann", center=True))
    tuning = round(features._estimate_tuning(spec) * 100) / 100
    bank = librosa.filters.chroma(sr=features.SAMPLE_RATE, n_fft=features.N_FFT, n_chroma=12, tuning=tuning,
                                  ctroct=5.0, octwidth=None, norm=None)
    freqs = librosa.fft_frequencies(sr=features.SAMPLE_RATE, n_fft=features.N_FFT)
    bank[:, (freqs < features.FMIN) | (freqs > features.FMAX)] = 0.0
    raw = bank @ spec
    return spec, np.log1p(features.LOG_GAIN * raw / raw.max()) / np.log1p(features.LOG_GAIN), tuning


@pytest.mark.parametrize("cents", [-45, -30, -12, 0, 7, 30, 45])
def test_numpy_chroma_equals_the_librosa_recipe(cents):
    sr = features.SAMPLE_RATE
    y = _detuned(synth.chord_progression(cents % 24, duration_s=12.0, sr=sr, seed=cents + 50), cents, sr=sr)
    spec, expected, tuning = _librosa_chroma(y)
    assert np.array_equal(features._magnitude_spectrogram(y), spec)  # bit for bit
    got, tuning_cents = features.chroma(y, return_tuning=True, feature_version=V2)
    assert tuning_cents == round(100 * tuning)
    assert got.shape == expected.shape
    # the same filterbank values; only the order of float32 sums in the product differs
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("tuning_hundredths", [-50, -23, 0, 1, 31, 49])
def test_filterbank_is_librosas_band_bit_for_bit(tuning_hundredths):
    import librosa

    bank = librosa.filters.chroma(sr=features.SAMPLE_RATE, n_fft=features.N_FFT, n_chroma=12,
                                  tuning=tuning_hundredths / 100, ctroct=5.0, octwidth=None, norm=None)
    freqs = librosa.fft_frequencies(sr=features.SAMPLE_RATE, n_fft=features.N_FFT)
    band = (freqs >= features.FMIN) & (freqs <= features.FMAX)
    lo, hi = features._BAND_BINS
    assert np.flatnonzero(band).tolist() == list(range(lo, hi))
    assert np.array_equal(features._filterbank(tuning_hundredths), bank[:, lo:hi])
    bass = (freqs >= features.BASS_FMIN) & (freqs < features.BASS_FMAX)  # v3's bass band, the same bank
    lo, hi = features._BASS_BINS
    assert np.flatnonzero(bass).tolist() == list(range(lo, hi))
    assert np.array_equal(features._filterbank(tuning_hundredths, features._BASS_BINS), bank[:, lo:hi])


@pytest.mark.parametrize("cents", [-30, 30])
def test_tuning_cents_reads_a_shifted_clip(cents):
    sr = features.SAMPLE_RATE
    y = synth.chord_progression(4, duration_s=20.0, sr=sr, seed=7)  # E major at A440
    reference, at_a440 = features.chroma(y, return_tuning=True)
    shifted, tuning_cents = features.chroma(_detuned(y, cents, sr=sr), return_tuning=True)
    assert abs(at_a440) <= 2
    assert tuning_cents == pytest.approx(cents, abs=5)
    # folded with its own tuning, the detuned clip has the same pitch-class profile
    profile, shifted_profile = reference.mean(axis=1), shifted.mean(axis=1)
    assert np.argmax(shifted_profile) == np.argmax(profile)
    assert np.corrcoef(profile, shifted_profile)[0, 1] > 0.99


def test_tuning_is_followed_where_it_changes():
    # a medley: a progression at A440, then the same 45 cents sharp (one tuning cannot fold both)
    sr = features.SAMPLE_RATE
    y = synth.chord_progression(4, duration_s=30.0, sr=sr, seed=7)
    alone = features.chroma(y, feature_version=V2)
    medley = np.concatenate([y, _detuned(y, 45, sr=sr)])
    tensor, tuning_cents = features.chroma(medley, return_tuning=True, feature_version=V2)
    spec = features._magnitude_spectrogram(medley)
    lo, hi = features._BAND_BINS
    one_tuning = features._filterbank(int(tuning_cents)) @ spec[lo:hi]
    one_tuning = np.log1p(features.LOG_GAIN * one_tuning / one_tuning.max())  # compressed as chroma() does
    half, block = 150, int(features.TUNING_BLOCK_S * features.FRAME_RATE)  # 30 s; a block either side
    # each half against the same bars of the progression alone
    parts = {"first": (slice(0, half - block), slice(0, half - block)),
             "second": (slice(half + block, 2 * half), slice(block, half))}
    for name, (in_medley, in_alone) in parts.items():
        profile = alone[:, in_alone].mean(axis=1)
        assert np.corrcoef(profile, tensor[:, in_medley].mean(axis=1))[0, 1] > 0.99, name
    # folded with the track's one tuning, the sharp half smears into the neighbouring bins
    second, in_alone = parts["second"]
    assert np.corrcoef(alone[:, in_alone].mean(axis=1), one_tuning[:, second].mean(axis=1))[0, 1] < 0.9


@pytest.mark.parametrize("cents", [-30, 0, 45])
def test_one_tuning_throughout_folds_as_one(cents):
    sr = features.SAMPLE_RATE
    y = _detuned(synth.chord_progression(9, duration_s=60.0, sr=sr, seed=3), cents, sr=sr)
    spec = features._magnitude_spectrogram(y)
    track = int(round(features._estimate_tuning(spec) * 100))
    assert (features._block_tunings(spec, track) == track).all()


def test_tunings_either_side_of_the_wrap_are_one_tuning():
    # +48 then +52 cents (which reads -48): 4 cents apart, so the track keeps one tuning
    sr = features.SAMPLE_RATE
    y = synth.chord_progression(2, duration_s=30.0, sr=sr, seed=5)
    spec = features._magnitude_spectrogram(np.concatenate([_detuned(y, 48, sr=sr), _detuned(y, 52, sr=sr)]))
    track = int(round(features._estimate_tuning(spec) * 100))
    blocks = int(features.TUNING_BLOCK_S * features.FRAME_RATE)
    first, last = (round(features._estimate_tuning(spec[:, a:a + blocks]) * 100) for a in (0, spec.shape[1] - blocks))
    assert abs(first - last) > 90  # the halves read either side of the wrap
    assert (features._block_tunings(spec, track) == track).all()


def test_silence_has_no_tuning():
    tensor, tuning_cents = features.chroma(np.zeros(features.SAMPLE_RATE * 5, dtype=np.float32), return_tuning=True)
    assert tuning_cents is None and not tensor.any()


def test_extraction_never_imports_librosa(tmp_path):
    # librosa pulls in numba and scipy: seconds of start-up in every Spark Python worker
    path = synth.write_audio(tmp_path / "a.mp3", synth.chord_progression(0, duration_s=3.0, sr=22050), sr=22050)
    code = (
        "import sys; from pathlib import Path; from keylib import audio, features, track; "
        f"t = features.chroma(audio.decode(Path({str(path)!r}).read_bytes(), ext='.mp3').samples); "
        "assert t.shape[0] == features.n_rows(features.FEATURE_VERSION) and t.any(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('librosa', 'numba', 'scipy')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_c_major_triad_peaks_on_c_e_g():
    tensor = features.chroma(_triad(features.SAMPLE_RATE), feature_version=V2)
    profile = tensor.mean(axis=1)
    assert tensor.shape == (12, features.frames_for_duration(3.0))
    assert set(np.argsort(profile)[-3:]) == {0, 4, 7}
    assert profile[[0, 4, 7]].min() > 1.2 * np.delete(profile, [0, 4, 7]).max()


def test_detuned_triad_still_folds_to_c_e_g():
    # 40 cents sharp: tuning correction must keep the notes in their own bins.
    tensor = features.chroma(_triad(features.SAMPLE_RATE, midis=(60.4, 64.4, 67.4)), feature_version=V2)
    assert set(np.argsort(tensor.mean(axis=1))[-3:]) == {0, 4, 7}


@pytest.mark.parametrize("cents", [-45, -20, 0, 13, 38])
def test_tuning_estimate_matches_librosa(cents):
    import librosa

    rng = np.random.default_rng(cents + 100)
    y = _triad(features.SAMPLE_RATE, midis=tuple(m + cents / 100 for m in rng.integers(45, 75, 4)), seconds=5.0)
    spec = np.abs(librosa.stft(y, n_fft=features.N_FFT, hop_length=features.HOP_LENGTH))
    expected = librosa.estimate_tuning(S=spec, sr=features.SAMPLE_RATE, n_fft=features.N_FFT,
                                       fmin=features.FMIN, fmax=features.FMAX, bins_per_octave=12)
    assert features._estimate_tuning(spec) == pytest.approx(expected, abs=1e-9)
    assert features._estimate_tuning(spec) == pytest.approx(cents / 100, abs=0.03)


def test_silence_gives_zeros_not_nan():
    tensor = features.chroma(np.zeros(features.SAMPLE_RATE * 30, dtype=np.float32), feature_version=V2)
    assert tensor.shape[0] == 12 and np.all(tensor == 0) and np.all(np.isfinite(tensor))


def test_chroma_is_level_invariant_and_bounded():
    y = _triad(features.SAMPLE_RATE)
    loud, quiet = features.chroma(y), features.chroma(y * 1e-3)
    assert np.allclose(loud, quiet, atol=1e-3)
    assert loud.min() >= 0 and loud.max() <= 1.0 + 1e-6


def test_chroma_rejects_wrong_rate():
    with pytest.raises(ValueError, match="11025"):
        features.chroma(np.zeros(1000, dtype=np.float32), sr=44100)


@pytest.mark.parametrize("ext", [".mp3", ".wav", ".flac", ".ogg"])
def test_decode_formats_to_feature_rate(tmp_path, ext):
    y = synth.chord_progression(9, duration_s=3.0, sr=22050)
    path = synth.write_audio(tmp_path / f"a{ext}", y, sr=22050)
    decoded = audio.decode(path.read_bytes(), ext=ext)
    assert decoded.source_sample_rate == 22050
    assert decoded.duration_s == pytest.approx(3.0, abs=0.1)
    assert decoded.samples.dtype == np.float32
    assert len(decoded.samples) == pytest.approx(3.0 * features.SAMPLE_RATE, rel=0.05)


def _ffmpeg_m4a(tmp_path, y: np.ndarray, *, sr: int):
    """An .m4a written by ffmpeg with its default settings: AAC in MP4, index at the end."""
    assert shutil.which("ffmpeg"), "ffmpeg is not installed (./submit.sh setup installs it)"
    wav = synth.write_audio(tmp_path / "src.wav", y, sr=sr)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), str(m4a)], check=True)
    data = m4a.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0  # the index after the audio: needs seeking
    return wav, data


def test_decode_m4a_with_its_index_at_the_end(tmp_path):
    stereo = np.stack([synth.chord_progression(2, duration_s=6.0, sr=22050, seed=3),
                       synth.chord_progression(2, duration_s=6.0, sr=22050, seed=4)], axis=1)
    wav, data = _ffmpeg_m4a(tmp_path, stereo, sr=22050)
    decoded = audio.decode(data, ext=".m4a")
    assert decoded.duration_s == pytest.approx(6.0, abs=0.1)
    assert decoded.source_sample_rate == 22050 and decoded.offset_s == 0.0
    # the same mono 11,025 Hz signal as the lossless original, up to AAC's loss
    reference = audio.decode(wav.read_bytes(), ext=".wav").samples
    n = min(len(reference), len(decoded.samples))
    assert abs(len(reference) - len(decoded.samples)) < 0.05 * features.SAMPLE_RATE
    assert np.corrcoef(reference[:n], decoded.samples[:n])[0, 1] > 0.98


def test_long_m4a_is_decoded_over_its_central_window(tmp_path):
    _, data = _ffmpeg_m4a(tmp_path, synth.chord_progression(7, duration_s=12.0, sr=22050), sr=22050)
    decoded = audio.decode(data, ext=".m4a", max_duration_s=4.0)
    assert decoded.duration_s == pytest.approx(12.0, abs=0.1)
    assert decoded.offset_s == pytest.approx(4.0, abs=0.1)
    assert len(decoded.samples) == pytest.approx(4.0 * features.SAMPLE_RATE, abs=0.05 * features.SAMPLE_RATE)


def test_stereo_mp3_decodes_as_channel_mean_then_soxr(tmp_path):
    # the recipe as written before the column-sum downmix: mean over channels, soxr MQ
    y = synth.chord_progression(9, duration_s=5.0, sr=44100)
    stereo = np.stack([y, 0.5 * np.roll(y, 300)], axis=1)
    data = synth.write_audio(tmp_path / "s.mp3", stereo, sr=44100).read_bytes()
    block, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    expected = soxr.resample(np.nan_to_num(block.mean(axis=1)), sr, features.SAMPLE_RATE, quality="MQ")
    assert block.shape[1] == 2
    assert np.array_equal(audio.decode(data, ext=".mp3").samples, expected.astype(np.float32))
    three = np.concatenate([block, block[:, :1] * 0.25], axis=1)
    three[10, 1] = np.nan
    assert np.array_equal(audio._downmix(three), np.nan_to_num(three.mean(axis=1)))


def test_long_track_is_analysed_over_its_central_window(tmp_path):
    y = synth.chord_progression(0, duration_s=12.0, sr=22050)
    path = synth.write_audio(tmp_path / "long.wav", y, sr=22050)
    decoded = audio.decode(path.read_bytes(), ext=".wav", max_duration_s=4.0)
    assert decoded.duration_s == pytest.approx(12.0, abs=0.01)
    assert decoded.offset_s == pytest.approx(4.0, abs=0.01)
    assert len(decoded.samples) == pytest.approx(4.0 * features.SAMPLE_RATE, abs=2)


@pytest.mark.parametrize(
    "data, ext, error",
    [
        (b"", ".mp3", EmptyFileError),
        (b"this is a text file, not audio\n" * 50, ".mp3", DecodeError),
        (b"RIFF" + bytes(range(256)) * 20, ".wav", DecodeError),
        (b"whatever", ".xyz", UnsupportedFormatError),
    ],
)
def test_bad_bytes_raise_readable_errors(data, ext, error):
    with pytest.raises(error) as info:
        audio.decode(data, ext=ext)
    assert str(info.value)


def test_a_regular_file_of_non_audio_is_not_called_missing(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_bytes(b"this is a text file, not audio\n" * 50)
    with pytest.raises(DecodeError) as from_path:
        audio.decode(str(path), ext=".mp3")
    with pytest.raises(DecodeError) as from_bytes:
        audio.decode(path.read_bytes(), ext=".mp3")
    assert str(from_path.value) == str(from_bytes.value) == "not decodable audio: Format not recognised."


def test_very_short_clip_is_too_short(tmp_path):
    path = synth.write_audio(tmp_path / "blip.wav", synth.tone(60, 0.1, sr=22050), sr=22050)
    with pytest.raises(TooShortError, match="0.10 s"):
        audio.decode(path.read_bytes(), ext=".wav", min_duration_s=1.0)


# --------------------------------------------------------------------------- v3: the bass band

V3 = features.FEATURE_VERSION_V3


def _sine(hz: float, seconds: float = 4.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine at the feature rate, faded in and out over 0.5 s (no clicks to spread energy
    over every band)."""
    sr = features.SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.5)
    return (amplitude * fade * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_feature_versions_registry():
    assert features.FEATURE_VERSIONS == {V2: 12, V3: 24} and features.FEATURE_VERSION in features.FEATURE_VERSIONS
    assert features.n_rows(V3) == 24
    with pytest.raises(ValueError, match="chroma-stft-11k-5fps-v2"):
        features.chroma(_sine(440.0), feature_version="chroma-nonsense")


def test_v3_has_24_rows_and_a_high_note_lights_the_full_rows_only():
    y = _sine(880.0)  # A5: far above the bass band
    v2 = features.chroma(y, feature_version=V2)
    v3, tuning = features.chroma(y, feature_version=V3, return_tuning=True)
    assert v3.shape == (24, features.frames_for_duration(4.0)) and v3.dtype == np.float32
    assert tuning == features.chroma(y, return_tuning=True)[1]
    assert int(np.argmax(v3[:12].mean(axis=1))) == 9 and v3[:12].max() == pytest.approx(1.0)
    assert v3[12:].max() < 0.05
    # No bass: the shared peak is the full band's, so rows 0-11 are v2's chroma.
    np.testing.assert_allclose(v3[:12], v2, atol=1e-6)


def test_a_low_note_lights_its_pitch_class_in_the_bass_rows():
    a2 = features.chroma(_sine(110.0), feature_version=V3)  # A2: in both bands
    assert int(np.argmax(a2[:12].mean(axis=1))) == 9
    assert int(np.argmax(a2[12:].mean(axis=1))) == 9 and a2[12:].max() > 0.9
    a1 = features.chroma(_sine(55.0), feature_version=V3)  # A1: below the full band, in the bass band
    assert int(np.argmax(a1[12:].mean(axis=1))) == 9 and a1[12:].max() == pytest.approx(1.0)
    assert a1[:12].max() < 0.1


def test_v3_bands_share_one_peak():
    # A quiet bass note under a loud high one: the bass rows keep their lower level.
    y = _sine(55.0, amplitude=0.05) + _sine(880.0, amplitude=0.5)
    v3 = features.chroma(y, feature_version=V3)
    assert v3[:12].max() == pytest.approx(1.0)
    assert 0.2 < v3[12:].max() < 0.9
    assert int(np.argmax(v3[12:].mean(axis=1))) == 9


def test_v3_silence_gives_zeros():
    tensor, tuning = features.chroma(np.zeros(features.SAMPLE_RATE * 2, np.float32), feature_version=V3,
                                     return_tuning=True)
    assert tensor.shape == (24, features.frames_for_duration(2.0)) and not tensor.any() and tuning is None


def test_v3_follows_the_tuning_in_the_bass_band_too():
    # 40 cents sharp A1 + A3: the estimated tuning keeps A in the bass rows' A bin.
    y = _sine(55.0 * 2 ** (0.4 / 12)) + _sine(220.0 * 2 ** (0.4 / 12))
    v3, tuning = features.chroma(y, feature_version=V3, return_tuning=True)
    assert tuning == pytest.approx(40, abs=3)
    assert int(np.argmax(v3[12:].mean(axis=1))) == 9 and int(np.argmax(v3[:12].mean(axis=1))) == 9
