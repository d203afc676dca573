"""Key changes over time (:mod:`keylib.segments`): the Viterbi smoothing and the placing
of a change point, with a real (if simple) key estimator as the network: the
Krumhansl-Schmuckler template scores of each window, made probabilities by a softmax.
The shipped network on rendered audio is tested in ``test_whole_songs.py``."""

from __future__ import annotations

import numpy as np
import pytest

from keylib import segments
from keylib.features import FRAME_RATE
from keylib.keys import parse_key
from keylib.templates import PROFILES, template_scores


def template_predict(parts):
    """List of (12, w) chroma -> (n, 24) probabilities from the template scores."""
    scores = np.stack([template_scores(p.mean(axis=1)) for p in parts])
    e = np.exp(20.0 * (scores - scores.max(axis=1, keepdims=True)))
    return e / e.sum(axis=1, keepdims=True)


def key_chroma(key: str, seconds: float, rng) -> np.ndarray:
    """Chroma frames that follow a key's Krumhansl profile, with noise."""
    index = parse_key(key)
    major, minor = PROFILES["krumhansl"]
    profile = np.roll(np.asarray(major if index < 12 else minor, dtype=np.float64), index % 12)
    frames = int(seconds * FRAME_RATE)
    c = profile[:, None] / profile.max() * rng.uniform(0.3, 1.0, (12, frames))
    return c.astype(np.float32)


@pytest.fixture
def medley():
    rng = np.random.default_rng(3)
    return np.concatenate([key_chroma("D major", 30, rng), key_chroma("Bb minor", 30, rng)], axis=1)


@pytest.mark.parametrize("guess_s", [22.0, 27.0, 30.0, 35.0, 38.0])
def test_refine_boundary_finds_the_change(medley, guess_s):
    cut = segments.refine_boundary(medley, template_predict, start=0, cut=int(guess_s * FRAME_RATE),
                                   end=medley.shape[1], left_key=parse_key("D major"),
                                   right_key=parse_key("Bb minor"))
    assert abs(cut / FRAME_RATE - 30.0) <= 1.0


def test_refine_boundary_stays_inside_its_segments(medley):
    cut = segments.refine_boundary(medley, template_predict, start=140, cut=150, end=160,
                                   left_key=parse_key("D major"), right_key=parse_key("Bb minor"))
    assert 140 + FRAME_RATE <= cut <= 160 - FRAME_RATE


def test_key_segments_two_keys_then_one(medley):
    segs = segments.key_segments(medley, template_predict, offset_s=5.0)
    assert [s["key"] for s in segs] == ["D major", "Bb minor"]
    assert abs(segs[0]["end_s"] - 35.0) <= 1.0  # times are the track's: offset included
    assert segs[0]["start_s"] == 5.0 and segs[-1]["end_s"] == pytest.approx(65.0)
    assert segs[0]["end_s"] == segs[1]["start_s"]
    one = segments.key_segments(key_chroma("A minor", 90, np.random.default_rng(4)), template_predict)
    assert [s["key"] for s in one] == ["A minor"]


def test_viterbi_switch_penalty():
    log_probs = np.log(np.full((10, 24), 0.01))
    log_probs[:5, 0] = log_probs[5:, 7] = np.log(0.5)
    log_probs[2, 3] = np.log(0.9)  # one window's blip
    assert list(segments.viterbi(log_probs, switch_penalty=8.0)) == [0] * 5 + [7] * 5
    assert len(set(segments.viterbi(log_probs, switch_penalty=100.0))) == 1


@pytest.fixture
def relative_medley():
    """30 s in C major, then 30 s in its relative minor: the same notes, other weights."""
    rng = np.random.default_rng(0)
    return np.concatenate([key_chroma("C major", 30, rng), key_chroma("A minor", 30, rng)], axis=1)


def window_log_probs(chroma):
    parts, centres = segments.windows(chroma)
    return np.log(template_predict(parts)), centres


def test_split_finds_a_change_the_windows_missed(relative_medley):
    # A switch penalty no window evidence can pay: Viterbi alone gives one segment.
    unsplit = segments.key_segments(relative_medley, template_predict, switch_penalty=1e6, split_evidence=np.inf)
    assert len(unsplit) == 1
    split = segments.key_segments(relative_medley, template_predict, switch_penalty=1e6, offset_s=5.0)
    assert [s["key"] for s in split] == ["C major", "A minor"]
    assert abs(split[0]["end_s"] - 35.0) <= 1.0 and split[0]["end_s"] == split[1]["start_s"]
    assert split[0]["start_s"] == 5.0 and split[1]["end_s"] == pytest.approx(65.0)


def test_split_guess_and_point(relative_medley):
    n = relative_medley.shape[1]
    guess = segments.split_guess(*window_log_probs(relative_medley), key=parse_key("A minor"), n_frames=n)
    assert abs(guess / FRAME_RATE - 30.0) <= 4.0  # 16 s windows straddle the change: a guess
    for far_off in (guess, guess - 5 * FRAME_RATE, guess + 5 * FRAME_RATE):
        cut, left, right = segments.split_point(relative_medley, template_predict, guess=far_off,
                                                key=parse_key("A minor"))
        assert (left, right) == (parse_key("C major"), parse_key("A minor"))
        assert abs(cut / FRAME_RATE - 30.0) <= 1.0
    assert segments.split_point(relative_medley, template_predict, guess=guess, key=parse_key("A minor"),
                                evidence=50.0) is None


def test_split_leaves_one_key_alone():
    one = key_chroma("A minor", 90, np.random.default_rng(1))
    guess = segments.split_guess(*window_log_probs(one), key=parse_key("A minor"), n_frames=one.shape[1])
    assert guess is None or segments.split_point(one, template_predict, guess=guess, key=parse_key("A minor")) is None
    assert len(segments.key_segments(one, template_predict)) == 1


def test_split_guess_keeps_both_sides_long_enough(relative_medley):
    # 40 s sides at least: no cut of a 60 s track has them
    log_probs, centres = window_log_probs(relative_medley)
    assert segments.split_guess(log_probs, centres, key=parse_key("A minor"), n_frames=relative_medley.shape[1],
                                min_part_s=40.0) is None


def test_split_weighs_each_side_by_its_share():
    rng = np.random.default_rng(2)
    short = np.concatenate([key_chroma("A minor", 10, rng), key_chroma("C major", 10, rng)], axis=1)
    cut, _, right = segments.split_point(short, template_predict, guess=10 * FRAME_RATE,
                                         key=parse_key("A minor"), min_part_s=5.0)
    assert right == parse_key("C major") and abs(cut / FRAME_RATE - 10.0) <= 1.0
    # The same 10 s of C major at the end of 80 s in A minor is a passage, not a change
    # (the same sides weighed alike would make it one: 0.5 x 6.9 nats).
    long = np.concatenate([key_chroma("A minor", 80, rng), key_chroma("C major", 10, rng)], axis=1)
    assert segments.split_point(long, template_predict, guess=80 * FRAME_RATE,
                                key=parse_key("A minor"), min_part_s=5.0) is None
