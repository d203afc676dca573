"""Hostile input costs one track, in bounded time and memory: special files, files that
decode to gigabytes, decoders that crash or hang, tracks that fail every night."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keylib import audio, synth
from keylib.errors import (
    MissingTrackError, SpecialFileError, TrackCrashedError, TrackTimeoutError, UnsupportedSourceError,
)
from keylib.incremental import select_tracks
from keylib.sandbox import TrackSandbox, _resident_mb
from keylib.storage import io
from keylib.track import ExtractSettings, extract_track

SETTINGS = ExtractSettings()


def _track(path, track_id=None) -> dict:
    return {"track_id": track_id or Path(path).name, "uri": str(path), "fingerprint": None}


@pytest.fixture
def special_files(tmp_path):
    """A FIFO named like audio, a link to /dev/zero, a dangling link, a folder and a socket."""
    os.mkfifo(tmp_path / "x.mp3")
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    (tmp_path / "gone.flac").symlink_to(tmp_path / "never-there.flac")
    (tmp_path / "folder.mp3").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.ogg"))
    yield tmp_path
    sock.close()


@pytest.mark.parametrize("name, status, words", [
    ("x.mp3", "not_a_file", "FIFO"),
    ("zero.wav", "not_a_file", "character device"),
    ("folder.mp3", "not_a_file", "directory"),
    ("sock.ogg", "not_a_file", "socket"),
    ("gone.flac", "missing", "dangling"),
])
def test_special_files_get_a_row_without_being_opened(special_files, name, status, words):
    started = time.monotonic()
    row = extract_track(_track(special_files / name), settings=SETTINGS)
    assert time.monotonic() - started < 5  # a FIFO opened for reading would block for ever
    assert (row["status"], row["chroma"]) == (status, None)
    assert words in row["error"] and name in row["error"]


def test_open_source_checks_before_reading(special_files, tmp_path):
    with pytest.raises(SpecialFileError):
        io.open_source(str(special_files / "zero.wav"), max_bytes=2**20)
    with pytest.raises(MissingTrackError, match="dangling"):
        io.open_source(str(special_files / "gone.flac"), max_bytes=2**20)
    with pytest.raises(UnsupportedSourceError, match="https://"):
        io.open_source("https://example.invalid/a.mp3", max_bytes=2**20)
    clip = synth.write_audio(tmp_path / "c.wav", synth.chord_progression(0, duration_s=2.0), sr=22050)
    assert io.open_source(str(clip), max_bytes=2**20) == clip  # a path: the decoder reads it, not memory
    assert io.content_hash(clip) == io.content_hash(clip.read_bytes())


def test_an_unsupported_extension_is_refused_before_any_read(special_files):
    # a FIFO with an extension keylib does not decode: refused by name, never opened
    os.mkfifo(special_files / "pipe.txt")
    row = extract_track(_track(special_files / "pipe.txt"), settings=SETTINGS)
    assert row["status"] == "unsupported_format"


def _peak_rss_mb_of(code: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its peak resident memory (MB) and its stdout."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big pytest
    # process would report the parent's size.
    proc = subprocess.run([sys.executable, "-c", code + "\nimport re\nstatus = open('/proc/self/status').read()\n"
                           "print('PEAK', int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024)"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    peak = float(proc.stdout.rsplit("PEAK", 1)[1])
    return peak, proc.stdout


@pytest.fixture(scope="module")
def hires_71(tmp_path_factory) -> Path:
    """600 s of 192 kHz 7.1 silence: about a megabyte of FLAC, 3.7 GB as float32."""
    return synth.write_long_audio(tmp_path_factory.mktemp("hires") / "silent71.flac", duration_s=600, sr=192000,
                                  channels=8)


@pytest.mark.slow  # ~15 s: decodes 71 minutes of hi-res audio
def test_a_file_that_decodes_to_gigabytes_is_decoded_in_bounded_memory(hires_71):
    assert hires_71.stat().st_size < 2 * 2**20
    peak, out = _peak_rss_mb_of(
        "from keylib.track import ExtractSettings, extract_track\n"
        f"row = extract_track({{'track_id': 't', 'uri': {str(hires_71)!r}}}, settings=ExtractSettings())\n"
        "print('ROW', row['status'], row['duration_s'], row['source_sample_rate'], row['n_frames'])"
    )
    assert "ROW silent 600.0 192000 3001" in out  # 600 s at 5 frames a second, both ends
    assert peak < 700  # the whole file as float32 would be 3,700 MB (bench/decode_memory.py prints it)


def test_blocks_decode_to_the_same_samples_as_one_read(tmp_path):
    stereo = np.stack([synth.chord_progression(4, duration_s=30.0, sr=48000),
                       0.5 * synth.chord_progression(4, duration_s=30.0, sr=48000, seed=2)], axis=1)
    path = synth.write_audio(tmp_path / "s.flac", stereo, sr=48000)
    import soundfile as sf

    block, sr = sf.read(str(path), dtype="float32", always_2d=True)
    whole = audio._resample(audio._downmix(block), sr)
    for source in (path, path.read_bytes()):
        decoded = audio.decode(source, ext=".flac")
        assert audio.BLOCK_SAMPLES < block.size  # several blocks
        assert np.array_equal(decoded.samples, whole)


def test_ffmpeg_output_is_read_in_blocks_over_the_window(tmp_path):
    # m4a goes through ffmpeg: its AU stream is read block by block, at most the window
    wav = synth.write_long_audio(tmp_path / "long.wav", duration_s=40, sr=96000, channels=6, key_index=3)
    m4a = tmp_path / "long.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "6", str(m4a)],
                   check=True)
    decoded = audio.decode(m4a, ext=".m4a", max_duration_s=10.0)
    assert decoded.source_sample_rate == 96000
    assert decoded.duration_s == pytest.approx(40.0, abs=0.1)
    assert decoded.offset_s == pytest.approx(15.0, abs=0.1)
    assert len(decoded.samples) == pytest.approx(10.0 * 11025, abs=0.05 * 11025)


# ---------------------------------------------------------------- the sandbox


def _work(track):
    if track == "hang":
        time.sleep(60)
    if track == "bloat":
        hoard = np.ones(400 * 2**20 // 8)  # written, so resident at once
        time.sleep(60 + hoard[0])
    if track == "segv":
        import ctypes

        ctypes.string_at(0)
    return track.upper()


def test_sandbox_survives_crash_hang_and_bloat_and_goes_on():
    with TrackSandbox(_work, timeout_s=3, max_memory_mb=10_000) as box:
        assert box.run("a") == "A"
        # The cap over the child's own size: a fork maps its parent's files lazily, so it
        # starts smaller than the parent.
        box.max_memory_mb = _resident_mb(box._pid) + 250
        with pytest.raises(TrackCrashedError, match="SIGSEGV"):
            box.run("segv", name="segv")
        assert box.run("b") == "B"
        started = time.monotonic()
        with pytest.raises(TrackTimeoutError, match="audio.track_timeout_s"):
            box.run("hang")
        assert time.monotonic() - started < 10
        assert box.run("c") == "C"
        with pytest.raises(TrackCrashedError, match="audio.max_track_memory_mb"):
            box.run("bloat")
        assert box.run("d") == "D"
        pid = box._pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # closed: the child is gone


def test_a_killed_child_takes_its_ffmpeg_with_it(tmp_path):
    """A timeout kills the child's whole process group: no decoder is left running."""
    marker = tmp_path / "started"

    def start_grandchild(_):
        proc = subprocess.Popen(["sleep", "300"])
        marker.write_text(str(proc.pid))
        time.sleep(300)

    with TrackSandbox(start_grandchild, timeout_s=1, max_memory_mb=10_000) as box:
        with pytest.raises(TrackTimeoutError):
            box.run("x")
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the grandchild outlived its sandbox")


# ---------------------------------------------------------------- no poison forever


def test_a_repeated_retryable_failure_is_retried_until_its_attempts_are_spent():
    listing = pd.DataFrame({"track_id": ["crash", "timeout", "changed", "read"],
                            "fingerprint": ["1:1", "2:2", "3:9", "4:4"]})
    previous = pd.DataFrame({
        "track_id": ["crash", "timeout", "changed", "read"],
        "fingerprint": ["1:1", "2:2", "3:3", "4:4"],
        "status": ["crashed", "timeout", "crashed", "read_error"],
        "attempts": [3, 2, 3, None],  # None: a row written before attempts were counted
        "feature_version": ["v"] * 4,
    })
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v"}, max_attempts=3)
    assert list(todo["track_id"]) == ["timeout", "changed", "read"]
    # the count goes on for the same file, starts again for a changed one
    assert todo.set_index("track_id")["previous_attempts"].tolist()[0] == 2
    assert pd.isna(todo.set_index("track_id").loc["changed", "previous_attempts"])
    assert skipped.set_index("track_id")["exhausted"].to_dict() == {"crash": True}
    todo, skipped = select_tracks(listing, previous, versions={"feature_version": "v"}, max_attempts=3,
                                  force=True)
    assert len(todo) == 4 and skipped.empty


def test_attempts_count_runs_that_failed_the_same_way(tmp_path):
    uri = str(tmp_path / "nothing.wav")
    first = extract_track({"track_id": "t", "uri": uri}, settings=SETTINGS)
    again = extract_track({"track_id": "t", "uri": uri, "previous_status": "missing", "previous_attempts": 2},
                          settings=SETTINGS)
    other = extract_track({"track_id": "t", "uri": uri, "previous_status": "timeout", "previous_attempts": 2},
                          settings=SETTINGS)
    assert (first["status"], first["attempts"]) == ("missing", 1)
    assert again["attempts"] == 3 and other["attempts"] == 1
