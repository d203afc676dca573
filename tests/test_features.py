"""The chroma feature function and the audio decoder, on real synthesized audio."""

from __future__ import annotations

import numpy as np
import pytest

from keylib import audio, features, synth
from keylib.errors import DecodeError, EmptyFileError, TooShortError, UnsupportedFormatError


def _triad(sr: int, midis=(60, 64, 67), seconds=3.0) -> np.ndarray:
    return sum(synth.tone(m, seconds, sr=sr) for m in midis)


def test_c_major_triad_peaks_on_c_e_g():
    tensor = features.chroma(_triad(features.SAMPLE_RATE))
    profile = tensor.mean(axis=1)
    assert tensor.shape == (12, features.frames_for_duration(3.0))
    assert set(np.argsort(profile)[-3:]) == {0, 4, 7}
    assert profile[[0, 4, 7]].min() > 1.2 * np.delete(profile, [0, 4, 7]).max()


def test_detuned_triad_still_folds_to_c_e_g():
    # 40 cents sharp: tuning correction must keep the notes in their own bins.
    tensor = features.chroma(_triad(features.SAMPLE_RATE, midis=(60.4, 64.4, 67.4)))
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
    tensor = features.chroma(np.zeros(features.SAMPLE_RATE * 30, dtype=np.float32))
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


def test_decode_m4a_through_ffmpeg(tmp_path):
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (./submit.sh setup installs it)")
    wav = synth.write_audio(tmp_path / "a.wav", synth.chord_progression(2, duration_s=3.0, sr=22050), sr=22050)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), str(m4a)], check=True)
    decoded = audio.decode(m4a.read_bytes(), ext=".m4a")
    assert decoded.duration_s == pytest.approx(3.0, abs=0.2)


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


def test_very_short_clip_is_too_short(tmp_path):
    path = synth.write_audio(tmp_path / "blip.wav", synth.tone(60, 0.1, sr=22050), sr=22050)
    with pytest.raises(TooShortError, match="0.10 s"):
        audio.decode(path.read_bytes(), ext=".wav", min_duration_s=1.0)
