"""Decode audio bytes to mono float32 at the feature rate, with clear errors for bad audio.

libsndfile (through soundfile) decodes mp3, wav, flac, ogg and aiff from memory; m4a/AAC,
and anything libsndfile refuses, goes through the ``ffmpeg`` command when it is installed
(reading a temporary file: MP4 needs a seekable input). Every format is then mixed to
mono and resampled by the same code.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import soundfile as sf
import soxr

from .errors import DecodeError, EmptyFileError, TooShortError, UnsupportedFormatError
from .features import SAMPLE_RATE

__all__ = [
    "AUDIO_EXTENSIONS",
    "DecodedAudio",
    "check_format",
    "decode",
    "extension_of",
    "is_silent",
]

AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".m4a"})
# Formats libsndfile cannot read: straight to ffmpeg.
_FFMPEG_ONLY = frozenset({".m4a"})
# An AU header (ffmpeg's output) is 24 bytes plus an annotation field.
_AU_HEADER_BYTES = 24
# Samples (over all channels) decoded per block: 8 MB of float32, whatever the file's rate
# and channel count.
BLOCK_SAMPLES = 2**21
# Peak below -60 dBFS: nothing audible to take a key from.
SILENCE_PEAK = 10 ** (-60 / 20)


@dataclass(frozen=True)
class DecodedAudio:
    """Mono samples at :data:`keylib.features.SAMPLE_RATE`.

    Attributes
    ----------
    samples : np.ndarray, shape (n,), float32
        The analysed window of the track (all of it unless longer than ``max_duration_s``).
    duration_s : float
        Duration of the whole track, not only the analysed window.
    source_sample_rate : int
        The file's own sample rate.
    offset_s : float
        Where the analysed window starts in the track.
    """

    samples: np.ndarray
    duration_s: float
    source_sample_rate: int
    offset_s: float = 0.0


def extension_of(uri: str) -> str:
    """Lower-case extension of a path or URI (``".mp3"``), ``""`` when it has none.

    Only an ``http(s)://`` URL has a query string; in a file name or an S3 key ``?`` is a
    character like any other.
    """
    if uri.startswith(("http://", "https://")):
        uri = uri.split("?", 1)[0].split("#", 1)[0]
    return PurePosixPath(uri).suffix.lower()


def check_format(ext: str) -> str:
    """``ext`` in lower case when keylib decodes it, else :class:`UnsupportedFormatError`."""
    ext = ext.lower()
    if ext not in AUDIO_EXTENSIONS:
        raise UnsupportedFormatError(
            f"unsupported audio format {ext or '(no extension)'!r}; "
            f"supported: {', '.join(sorted(AUDIO_EXTENSIONS))}"
        )
    return ext


def is_silent(samples: np.ndarray) -> bool:
    """True when the peak level is below -60 dBFS (or there are no samples)."""
    return samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


def decode(
    source: bytes | str | os.PathLike,
    *,
    ext: str,
    max_duration_s: float = 600.0,
    min_duration_s: float = 1.0,
) -> DecodedAudio:
    """Decode audio into mono float32 samples at the feature sample rate, in bounded memory.

    The file is decoded block by block (about :data:`BLOCK_SAMPLES` samples over all
    channels), each block mixed to mono and fed to a streaming resampler, so memory follows
    the analysis window at the feature rate (600 s: 26 MB), not the file's own rate,
    channel count or length: a 10-minute 192 kHz 7.1 master never exists whole as float32.

    Parameters
    ----------
    source : bytes or path-like
        The file's bytes, or the path of a local file (read by the decoder itself: the
        bytes need not be held in memory).
    ext : str
        Its extension (``".mp3"``), which picks the decoder.
    max_duration_s : float
        Analysis window: a longer track is analysed over its central ``max_duration_s``
        seconds (a DJ mix or an audiobook need not be decoded whole to find its key).
    min_duration_s : float
        Tracks shorter than this raise :class:`TooShortError`.

    Raises
    ------
    EmptyFileError, UnsupportedFormatError, DecodeError, TooShortError
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise EmptyFileError("file is empty (0 bytes)")
    elif os.path.getsize(source) == 0:
        raise EmptyFileError("file is empty (0 bytes)")
    ext = check_format(ext)
    if ext in _FFMPEG_ONLY:
        audio = _decode_ffmpeg(source, ext=ext, max_duration_s=max_duration_s)
    else:
        try:
            audio = _decode_soundfile(source, max_duration_s=max_duration_s)
        except DecodeError as sf_error:
            if shutil.which("ffmpeg") is None:
                raise
            try:
                audio = _decode_ffmpeg(source, ext=ext, max_duration_s=max_duration_s)
            except DecodeError:
                raise sf_error from None
    if audio.duration_s < min_duration_s:
        raise TooShortError(
            f"audio is {audio.duration_s:.2f} s long, shorter than the minimum {min_duration_s:g} s"
        )
    return audio


def _window(total_frames: int, sr: int, max_duration_s: float) -> tuple[int, int]:
    """(start, n_frames) of the central analysis window, in source frames."""
    limit = int(max_duration_s * sr)
    if total_frames <= limit:
        return 0, total_frames
    return (total_frames - limit) // 2, limit


class _MonoStream:
    """Blocks of (n, channels) float32 at ``sr`` in, mono float32 at SAMPLE_RATE out.

    Each block is mixed down (:func:`_downmix`) and resampled by one soxr stream, which
    gives the same samples, bit for bit, as resampling the whole signal at once.
    """

    def __init__(self, sr: int):
        self.sr = sr
        self.frames = 0
        self.truncated = False  # reading stopped at the window's end, not at the stream's
        self._parts: list[np.ndarray] = []
        self._stream = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="MQ") \
            if sr != SAMPLE_RATE else None

    def add(self, block: np.ndarray) -> None:
        self.frames += block.shape[0]
        mono = _downmix(block)
        self._parts.append(self._stream.resample_chunk(mono) if self._stream else mono)

    def samples(self) -> np.ndarray:
        if self._stream is not None:
            self._parts.append(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        mono = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
        return np.ascontiguousarray(mono, dtype=np.float32)


def _block_frames(channels: int) -> int:
    return max(1, BLOCK_SAMPLES // max(1, channels))


def _decode_soundfile(source: bytes | str | os.PathLike, *, max_duration_s: float) -> DecodedAudio:
    stream = None
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as f:
            sr = int(f.samplerate)
            total = int(f.frames)
            if sr <= 0 or f.channels <= 0:
                raise DecodeError(f"not decodable audio: header says {sr} Hz, {f.channels} channels")
            start, count = _window(total, sr, max_duration_s)
            if start:
                f.seek(start)
            stream = _MonoStream(sr)
            for block in f.blocks(blocksize=_block_frames(f.channels), frames=count, dtype="float32",
                                  always_2d=True):
                stream.add(block)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        if stream is None or stream.frames == 0:
            reason = _reason(exc)
            if "possibly a pipe" in reason and not isinstance(source, (bytes, bytearray)) and os.path.isfile(source):
                # What libsndfile says of a regular file whose bytes it cannot place (from bytes
                # it says "Format not recognised."): the file exists, its content is the fault.
                reason = "Format not recognised."
            raise DecodeError(f"not decodable audio: {reason}") from None
        # A file damaged after its first blocks: keep what was decoded, as for a truncated file.
    if stream.frames == 0:
        raise DecodeError("not decodable audio: no audio frames in the file")
    # Truncated files decode fewer frames than the header promises: trust what was read.
    duration_s = total / sr if start else stream.frames / sr
    return DecodedAudio(
        samples=stream.samples(),
        duration_s=float(duration_s),
        source_sample_rate=sr,
        offset_s=start / sr,
    )


def _decode_ffmpeg(source: bytes | str | os.PathLike, *, ext: str, max_duration_s: float) -> DecodedAudio:
    """Decode with the ``ffmpeg`` command, then downmix and resample as for every format.

    ffmpeg reads a file, not a pipe: MP4 (``.m4a``) keeps its index (the moov atom) at the
    end of the file unless written with ``+faststart``, so its reader must seek (bytes go
    to a temporary file first). ``ffprobe`` gives the duration first, so that a long track
    is decoded over its central window only; ffmpeg writes float32 at the file's own rate
    and channels (an AU stream, whose header carries both), which keylib reads block by
    block from the pipe and downmixes and resamples exactly as for libsndfile's formats.
    """
    if shutil.which("ffmpeg") is None:
        raise DecodeError("this format needs ffmpeg, which is not installed (apt-get install ffmpeg)")
    with contextlib.ExitStack() as stack:
        if isinstance(source, (bytes, bytearray)):
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="keylib-", suffix=ext))
            tmp.write(source)
            tmp.flush()
            path = tmp.name
        else:
            path = os.fspath(source)
        duration_s = _probe_duration(path)
        start_s, limit_s = 0.0, 3 * max_duration_s  # a cap for when the duration is unknown
        if duration_s is not None and duration_s > max_duration_s:
            start_s, limit_s = (duration_s - max_duration_s) / 2, max_duration_s
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-ss", f"{start_s:.6f}", "-t", f"{limit_s:.6f}", "-i", path,
            "-vn", "-c:a", "pcm_f32be", "-f", "au", "pipe:1",
        ]
        # stderr to a file: a pipe nobody reads while the audio streams could fill and block ffmpeg.
        errors = stack.enter_context(tempfile.TemporaryFile(prefix="keylib-ffmpeg-"))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        stack.callback(_reap, proc)
        stream = _read_au(proc.stdout, limit_s=limit_s)
        proc.stdout.close()
        returncode = proc.wait()
        if stream is None or stream.frames == 0 or (returncode != 0 and not stream.truncated):
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise DecodeError(f"not decodable audio: {message[-1] if message else 'ffmpeg found no audio'}")
    frames_s = stream.frames / stream.sr
    return DecodedAudio(samples=stream.samples(), duration_s=float(duration_s if start_s else frames_s),
                        source_sample_rate=stream.sr, offset_s=start_s)


def _read_au(pipe, *, limit_s: float) -> "_MonoStream | None":
    """Read an AU stream of big-endian float32 (ffmpeg's ``pcm_f32be``) block by block, at
    most ``limit_s`` seconds of it; ``None`` when it has no valid header.

    The AU header is six big-endian 32-bit words (magic, data offset, data size, encoding,
    rate, channels); Python's ``sunau`` module that read it is gone since 3.13.
    """
    header = _read_exactly(pipe, _AU_HEADER_BYTES)
    if len(header) < _AU_HEADER_BYTES or header[:4] != b".snd":
        return None
    offset, _, encoding, sr, channels = struct.unpack(">5I", header[4:24])
    if encoding != 6 or sr <= 0 or channels <= 0 or offset < _AU_HEADER_BYTES:
        return None
    _read_exactly(pipe, offset - _AU_HEADER_BYTES)  # the annotation field
    stream = _MonoStream(sr)
    remaining = int(limit_s * sr) + sr  # ffmpeg's -t is the bound; this one holds if it does not
    frame_bytes = 4 * channels
    while remaining > 0:
        data = _read_exactly(pipe, min(remaining, _block_frames(channels)) * frame_bytes)
        n = len(data) // frame_bytes
        if n == 0:
            break
        block = np.frombuffer(data[: n * frame_bytes], dtype=">f4").astype(np.float32).reshape(n, channels)
        stream.add(block)
        remaining -= n
    else:
        stream.truncated = True  # stopped reading: ffmpeg may end on a broken pipe
    return stream


def _read_exactly(pipe, n: int) -> bytes:
    """Up to ``n`` bytes from a pipe (fewer only at its end)."""
    chunks, got = [], 0
    while got < n:
        chunk = pipe.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _reap(proc: subprocess.Popen) -> None:
    """Stop ffmpeg if it still runs (the window was read, or decoding failed)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _probe_duration(path: str) -> float | None:
    """The container's duration in seconds (``ffprobe``), ``None`` when it does not say."""
    if shutil.which("ffprobe") is None:
        return None
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
        duration = float(proc.stdout.strip())
    except (subprocess.TimeoutExpired, ValueError):
        return None
    return duration if duration > 0 and np.isfinite(duration) else None


def _downmix(block: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) float32 channel mean, NaN and inf as silence.

    Sums whole channel columns instead of ``block.mean(axis=1)``: numpy reduces an
    (n, 2) array row by row, 2 values at a time, about 20 times slower than adding two
    columns, for the same float32 values bit for bit (fewer than 8 channels are summed in
    order, then divided by their count).
    """
    channels = block.shape[1]
    mono = np.array(block[:, 0], dtype=np.float32)
    for c in range(1, channels):
        mono += block[:, c]
    if channels > 1:
        mono /= np.float32(channels)
    if not np.isfinite(mono).all():  # a check is cheap; the copy nan_to_num makes is not
        np.nan_to_num(mono, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return mono


def _resample(mono: np.ndarray, sr: int) -> np.ndarray:
    """(n,) float32 at ``sr`` -> (m,) float32 at SAMPLE_RATE (soxr, medium quality)."""
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="MQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libsndfile prefixes messages with the opaque stream name; keep the reason only.
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text
