"""Training batches: crops, transpositions of every band with the key, and how tracks are drawn."""

from __future__ import annotations

import numpy as np
import pytest

from keylib.training.settings import TrainConfig


def test_roll_pitch_rolls_each_band_on_its_own():
    from keylib.tensors import roll_pitch

    c = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    for shift in (1, 5, -2, 12):
        rolled = roll_pitch(c, shift)
        np.testing.assert_array_equal(rolled[:12], np.roll(c[:12], shift, axis=0))
        np.testing.assert_array_equal(rolled[12:], np.roll(c[12:], shift, axis=0))
        np.testing.assert_array_equal(roll_pitch(c[:12], shift), np.roll(c[:12], shift, axis=0))
    np.testing.assert_array_equal(roll_pitch(c[:, 0], 1)[12:], np.roll(c[12:, 0], 1))  # a profile
    with pytest.raises(ValueError, match="multiple of 12"):
        roll_pitch(c[:13], 1)


def test_training_batches_transpose_both_bands_with_the_key():
    from keylib.training.batches import batches

    c = np.full((24, 60), 0.05, np.float32)
    c[[0, 4, 7]] = 1.0  # C major chord in the full band,
    c[12] = 1.0  # C in the bass
    cfg = TrainConfig(batch_size=6, batches_per_epoch=3, timbre_aug=0.0, loudness_aug=0.0, excerpt_s=(8, 10))
    for x, y in batches([c, c], np.array([0, 0]), cfg, 5, np.random.default_rng(2)):
        assert x.shape[2] == 24
        for steps, label in zip(x, y):
            tonic = int(np.argmax(label)) % 12
            profile = steps.mean(axis=0)
            assert int(np.argmax(profile[12:])) == tonic and set(np.argsort(profile[:12])[-3:]) == \
                {tonic, (tonic + 4) % 12, (tonic + 7) % 12}


def test_mode_balance_draws_major_and_minor_keys_equally_often():
    """[train] mode_balance: on a set that is 90% major, crops are 10% minor keys by default
    and about half at 1 (the draw is without replacement inside a batch, hence not 0.5
    exactly); 0 keeps the uniform draw, batch for batch."""
    from keylib.training.batches import batches, track_weights

    keys = np.array([0] * 900 + [12] * 100)
    chromas = [np.random.default_rng(i).random((12, 300)).astype(np.float32) for i in range(1000)]
    assert track_weights(keys, 0.0) is None
    weights = track_weights(keys, 1.0)
    assert weights[:900].sum() == pytest.approx(0.5) and weights[900:].sum() == pytest.approx(0.5)
    share = {}
    for balance in (0.0, 1.0):
        cfg = TrainConfig(mode_balance=balance, whole_share=0.0, batches_per_epoch=30)
        labels = np.concatenate([y.argmax(1) for _, y in batches(chromas, keys, cfg, 5, np.random.default_rng(0))])
        share[balance] = float((labels >= 12).mean())
    assert 0.07 < share[0.0] < 0.13 and 0.42 < share[1.0] < 0.55, share
