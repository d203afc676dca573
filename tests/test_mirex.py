"""The MIREX metric against mir_eval 0.8.2 on all 576 ordered key pairs, and its summary."""

import itertools

import mir_eval
import numpy as np
import pytest

from keylib import mirex
from keylib.keys import KEY_NAMES, parse_key

PAIRS = list(itertools.product(range(24), range(24)))


def test_weighted_score_agrees_with_mir_eval_on_all_576_pairs():
    assert len(PAIRS) == 576
    mismatches = [
        (KEY_NAMES[r], KEY_NAMES[e])
        for r, e in PAIRS
        if mirex.weighted_score(r, e, descending_fifths=False)
        != mir_eval.key.weighted_score(KEY_NAMES[r], KEY_NAMES[e])
    ]
    assert mismatches == []


def test_descending_fifths_differs_only_on_fifths_below():
    changed = [
        (r, e)
        for r, e in PAIRS
        if mirex.weighted_score(r, e, descending_fifths=True) != mirex.weighted_score(r, e)
    ]
    # One fifth below per reference key.
    assert len(changed) == 24
    for r, e in changed:
        assert r // 12 == e // 12
        assert (e - r) % 12 == 5
        assert mirex.weighted_score(r, e, descending_fifths=True) == 0.5
        assert mirex.weighted_score(r, e) == 0.0


@pytest.mark.parametrize(
    ("ref", "est", "expected"),
    [
        ("C major", "C major", "correct"),
        ("C major", "G major", "fifth"),
        ("C major", "F major", "other"),
        ("C major", "A minor", "relative"),
        ("A minor", "C major", "relative"),
        ("C major", "C minor", "parallel"),
        ("A minor", "E minor", "fifth"),
        ("C major", "E minor", "other"),
    ],
)
def test_category_examples(ref, est, expected):
    assert mirex.category(parse_key(ref), parse_key(est)) == expected


def test_descending_fifth_category():
    assert mirex.category(parse_key("C major"), parse_key("F major"), descending_fifths=True) == "fifth"
    assert mirex.category(parse_key("A minor"), parse_key("D minor"), descending_fifths=True) == "fifth"


@pytest.mark.parametrize("bad", [24, -1, 3.0, "C major", None, True])
def test_invalid_indices_raise(bad):
    with pytest.raises((TypeError, ValueError)):
        mirex.weighted_score(bad, 0)
    with pytest.raises((TypeError, ValueError)):
        mirex.category(0, bad)


def test_score_matrix_diagonal_and_rows():
    m = mirex.score_matrix()
    assert m.shape == (24, 24)
    assert np.all(np.diag(m) == 1.0)
    # Each reference: 1 correct, 1 fifth, 1 relative, 1 parallel.
    assert np.allclose(m.sum(axis=1), 1.0 + 0.5 + 0.3 + 0.2)
    both = mirex.score_matrix(descending_fifths=True)
    assert np.allclose(both.sum(axis=1), 1.0 + 0.5 + 0.5 + 0.3 + 0.2)


def test_summarize_counts_scores_and_confusion():
    refs = [parse_key(k) for k in ["C major", "C major", "A minor", "A minor", "D major"]]
    ests = [parse_key(k) for k in ["C major", "F major", "C major", "A major", "Eb major"]]
    s = mirex.summarize(refs, ests)
    assert s["n"] == 5
    assert s["accuracy"] == pytest.approx(0.2)
    assert s["counts"] == {"correct": 1, "fifth": 0, "relative": 1, "parallel": 1, "other": 2}
    assert s["counts_both_fifths"]["fifth"] == 1
    assert s["weighted_score"] == pytest.approx((1 + 0.3 + 0.2) / 5)
    assert s["weighted_score_both_fifths"] == pytest.approx((1 + 0.5 + 0.3 + 0.2) / 5)
    conf = np.array(s["confusion"])
    assert conf.shape == (24, 24) and conf.sum() == 5
    assert conf[parse_key("A minor"), parse_key("C major")] == 1
    expected_mean = np.mean(
        [mir_eval.key.weighted_score(KEY_NAMES[r], KEY_NAMES[e]) for r, e in zip(refs, ests)]
    )
    assert s["weighted_score"] == pytest.approx(expected_mean)


def test_summarize_empty_and_mismatched():
    s = mirex.summarize([], [])
    assert s["n"] == 0 and s["weighted_score"] is None and s["accuracy"] is None
    with pytest.raises(ValueError):
        mirex.summarize([0, 1], [0])
    with pytest.raises(ValueError):
        mirex.summarize([0, 30], [0, 1])


def test_error_kind_tells_the_fifth_above_from_the_fifth_below():
    c_major, a_minor = parse_key("C major"), parse_key("A minor")
    assert mirex.error_kind(c_major, c_major) == "correct"
    assert mirex.error_kind(c_major, parse_key("G major")) == "fifth_above"
    assert mirex.error_kind(c_major, parse_key("F major")) == "fifth_below"
    assert mirex.error_kind(a_minor, parse_key("D minor")) == "fifth_below"
    assert mirex.error_kind(a_minor, c_major) == "relative"
    assert mirex.error_kind(c_major, parse_key("C minor")) == "parallel"
    assert mirex.error_kind(c_major, parse_key("F# major")) == "other"
    # every other answer is what category() says
    for ref in range(24):
        for est in range(24):
            kind = mirex.error_kind(ref, est)
            assert kind in ("correct", *mirex.ERROR_KINDS)
            if kind not in ("fifth_above", "fifth_below"):
                assert kind == mirex.category(ref, est)
