"""The shipped key model: its card, any length, the demo's sample catalogue, equivariance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from keylib import audio, features, keys, mirex, synth
from keylib.errors import ModelError
from keylib.serving import SHIPPED_MODEL, to_steps
from keylib.tensors import roll_pitch
from keylib.training.networks import KeyModel, load_keras_model

README = Path(__file__).resolve().parent.parent / "README.md"
ROWS = features.n_rows(features.FEATURE_VERSION)  # the shipped model's chroma rows

# The accuracy thresholds of the acceptance tests below: conftest.py's ``acceptance`` fixture,
# read from the card's ``acceptance`` block (bench/acceptance.py measures the same figures).


@pytest.fixture(scope="module")
def model() -> KeyModel:
    return load_keras_model()


@pytest.fixture(scope="module")
def cadences():
    """The chroma of :func:`keylib.synth.cadences`: one 12-s cadential piece per key
    (additive synthesis, a timbre training never used)."""
    return [features.chroma(y) for y in synth.cadences(sr=features.SAMPLE_RATE)]


@pytest.fixture(scope="module")
def card(shipped_card) -> dict:
    return shipped_card


def test_shipped_model_files(model, card):
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.with_suffix(".json").is_file()
    size = sum(p.stat().st_size for p in SHIPPED_MODEL.parent.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024
    assert model.card == card and model.version == card["version"]
    assert load_keras_model() is model  # cached per process


def test_card_identity_matches_the_file_and_the_code(model, card):
    from keylib.training.networks import ARCHITECTURES

    assert card["feature_version"] == features.FEATURE_VERSION
    assert card["name"] == SHIPPED_MODEL.stem  # keynet-eq.keras <-> "keynet-eq"
    assert card["version"].startswith(card["name"] + "-") and len(card["version"]) > len(card["name"]) + 1
    assert card["architecture"] in ARCHITECTURES
    assert card["parameters"] == ARCHITECTURES[card["architecture"]]().count_params()
    assert model.keras_model.name == card["architecture"]  # the file holds the network the card names
    config = card["training"]["config"]
    # a refitted card keeps its network's training record, under the version that trained it
    trained_as = card["refit"]["from"] if "refit" in card else card["version"]
    assert (config["arch"], config["name"], config["version"]) == (card["architecture"], card["name"], trained_as)
    if "refit" in card:
        assert card["refit"]["network_features"] and card["refit"]["from"] != card["version"]
    training = card["training"]
    assert 1 <= training["best_epoch"] <= training["epochs_run"] == len(training["history"]) <= config["epochs"]


def _check_scores(section: dict, n: int, what: str) -> None:
    """A card's MIREX section: counts add up, and the scores follow from them."""
    assert section["n"] == n > 0, what
    weighted = {}
    for convention in ("ascending_fifths", "both_fifths"):
        cats = section[convention]["categories"]
        assert set(cats) == set(mirex.CATEGORIES) and sum(cats.values()) == n, (what, convention)
        weighted[convention] = section[convention]["weighted"]
        assert weighted[convention] == pytest.approx(sum(mirex.WEIGHTS[c] * k for c, k in cats.items()) / n), what
    correct = section["both_fifths"]["categories"]["correct"]
    assert section["ascending_fifths"]["categories"]["correct"] == correct
    assert section["accuracy"] == pytest.approx(correct / n)
    assert 0.0 <= section["accuracy"] <= weighted["ascending_fifths"] <= weighted["both_fifths"] <= 1.0, what
    if "confusion" in section:
        confusion = np.asarray(section["confusion"])
        assert confusion.shape == (24, 24) and confusion.sum() == n and np.trace(confusion) == correct, what


def test_card_scores_are_in_range_and_consistent(card):
    data = card["data"]
    # one validation summary, or one per view of the validation tracks (whole, excerpt)
    validation = {"": card["validation"]} if "n" in card["validation"] else dict(card["validation"])
    # the validation tracks by what rendered them, and by the music's source
    by_group = {"by_soundfont": validation.pop("by_sound_source", {}), "by_source": validation.pop("by_source", {})}
    for name, section in validation.items():
        _check_scores(section, data["validation"]["tracks"], f"validation {name}")
    for counts_key, groups in by_group.items():
        if groups:
            assert sum(s["n"] for s in groups.values()) == data["validation"]["tracks"]
            assert groups.keys() == data["validation"][counts_key].keys()
            assert all(0.0 <= s[view] <= 1.0 for s in groups.values() for view in ("whole", "excerpt", "mean"))
    heldout = card["heldout"]
    _check_scores(heldout["all"], data["heldout"]["tracks"], "heldout")
    assert heldout["by_source"].keys() == data["heldout"]["by_source"].keys()
    for source, section in heldout["by_source"].items():
        _check_scores(section, data["heldout"]["by_source"][source], f"heldout {source}")
    for name, section in heldout.get("by_length", {}).items():
        _check_scores(section, section["n"], f"heldout {name}")
    if "by_length" in heldout:
        assert sum(section["n"] for section in heldout["by_length"].values()) == heldout["all"]["n"]
    for split in ("train", "validation", "heldout"):
        counts = data[split]
        assert sum(counts["by_source"].values()) == counts["tracks"] == counts["major"] + counts["minor"], split
    # the benchmark the README quotes is this card's held-out score
    bench = card["benchmark"]
    assert bench["heldout_clips"] == heldout["all"]["n"]
    shipped = bench["mirex"][f"shipped {card['version']}"]
    for convention in ("ascending_fifths", "both_fifths"):
        assert shipped[convention] == pytest.approx(heldout["all"][convention]["weighted"], abs=5e-5)


# Held-out groups from a training source: POP909 songs with id >= 800 (whole pop songs,
# compared whole against their excerpts) and the Polish scores of held-out composers
# (polish.composer_split); every other held-out source is unseen.
HELDOUT_SONGS_OF_A_TRAINING_SOURCE = {"pop909", "polish-scores"}


def test_heldout_is_unseen_music_played_by_unseen_sounds(card):
    data = card["data"]
    train_sources, heldout_sources = set(data["train"]["by_source"]), set(data["heldout"]["by_source"])
    assert heldout_sources - HELDOUT_SONGS_OF_A_TRAINING_SOURCE, "no held-out source training never saw"
    assert not (heldout_sources - HELDOUT_SONGS_OF_A_TRAINING_SOURCE) & train_sources
    train_fonts, heldout_fonts = set(data["train"]["by_soundfont"]), set(data["heldout"]["by_soundfont"])
    assert train_fonts and heldout_fonts and not train_fonts & heldout_fonts
    assert sum(data["heldout"]["by_soundfont"].values()) == data["heldout"]["tracks"]


def test_benchmarks_quote_the_shipped_version_and_its_heldout_score(card):
    benchmarks = README.parent / "docs" / "benchmarks.md"
    row = next((line for line in benchmarks.read_text().splitlines()
                if line.startswith("|") and f"`{card['version']}`" in line), None)
    assert row is not None, f"docs/benchmarks.md's accuracy table does not name {card['version']}"
    both = card["heldout"]["all"]["both_fifths"]["weighted"]
    assert f"{both:.3f}" in row, row


@pytest.fixture(scope="module")
def sample_catalogue(tmp_path_factory):
    """The demo's sample catalogue (8-s clips, mp3 and wav), decoded and featurized as a catalogue is."""
    manifest = synth.make_sample_catalogue(tmp_path_factory.mktemp("demo"))
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    tracks = []
    for path, _, key, _ in rows:
        data = (manifest.parent / path).read_bytes()
        samples = audio.decode(data, ext=Path(path).suffix).samples
        tracks.append((path, keys.parse_key(key), features.chroma(samples)))
    return tracks


@pytest.mark.acceptance
def test_sample_catalogue_at_the_demo_length(sample_catalogue, acceptance):
    from keylib import serving  # what the demo runs

    assert len(sample_catalogue) == 48
    refs = [ref for _, ref, _ in sample_catalogue]
    ests = serving.load_model().predict_keys([c for _, _, c in sample_catalogue])
    wrong = [(path, keys.key_name(ref), keys.key_name(int(est)), mirex.category(ref, int(est)))
             for (path, ref, _), est in zip(sample_catalogue, ests) if est != ref]
    measured = len(refs) - len(wrong)
    print(f"sample catalogue: {measured} of {len(refs)} right; wrong: {wrong}")
    assert measured >= acceptance.sample_catalogue_min_correct, f"{measured} of {len(refs)} right; wrong: {wrong}"


@pytest.mark.acceptance
def test_cadences_in_all_24_keys(cadences, acceptance):
    from keylib import serving  # the served model, as bench/acceptance.py measures it

    est = serving.load_model().predict_keys(cadences)
    wrong = [(keys.key_name(k), keys.key_name(int(e))) for k, e in enumerate(est) if e != k]
    assert 24 - len(wrong) >= acceptance.cadences_min_correct, f"wrong keys: {wrong}"


def test_any_length_batched(model, cadences):
    rng = np.random.default_rng(0)
    chromas = [cadences[0][:, :1], cadences[1][:, :7], cadences[2], np.tile(cadences[3], (1, 80)),
               np.zeros((ROWS, 20), np.float32), rng.random((ROWS, 333), dtype=np.float32)]
    probs = model.predict_probs(chromas, batch_size=2)
    assert probs.shape == (6, 24) and probs.dtype == np.float32
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # one track alone gets the same answer as inside a mixed batch
    alone = model.predict_probs([chromas[2]])
    assert np.allclose(alone[0], probs[2], atol=1e-5)
    assert model.predict_probs([]).shape == (0, 24)
    with pytest.raises(ValueError):
        model.predict_probs([np.zeros((11, 10), np.float32)])


@pytest.mark.parametrize("runtime", ["keras", "served"])
def test_transposing_the_chroma_moves_every_probability(model, cadences, runtime):
    """Rolling the chroma by k bins moves the probability of every key by k semitones, exactly
    (up to float32 rounding), for all 12 shifts: the network has no tonic prior. Both the
    Keras model and the ONNX export that serving runs."""
    from keylib import serving

    net = model if runtime == "keras" else serving.load_model()
    rng = np.random.default_rng(5)
    tracks = [cadences[14], cadences[3], rng.random((ROWS, 57), dtype=np.float32)]  # D minor, Eb major, noise
    for track in tracks:
        base = net.predict_probs([track])[0]
        moved = net.predict_probs([roll_pitch(track, shift) for shift in range(12)])
        for shift in range(12):
            expected = np.empty_like(base)
            expected[[keys.transpose_index(k, shift) for k in range(keys.N_KEYS)]] = base
            np.testing.assert_allclose(moved[shift], expected, rtol=0, atol=1e-5, err_msg=f"shift {shift}")


def test_length_helpers():
    c = np.arange(12 * 11, dtype=np.float32).reshape(12, 11)
    s = to_steps(c, 5)
    assert s.shape == (3, 12)
    assert np.allclose(s[0], c[:, :5].mean(axis=1)) and np.allclose(s[2], c[:, 10])


def test_feature_version_mismatch_and_missing_files(tmp_path):
    shutil.copy(SHIPPED_MODEL.with_suffix(".keras"), tmp_path / "m.keras")
    card = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    card["feature_version"] = "chroma-something-else"
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="feature"):
        load_keras_model(tmp_path / "m.keras")
    with pytest.raises(ModelError, match="not found"):
        load_keras_model(tmp_path / "absent.keras")
    (tmp_path / "nocard.keras").write_bytes(b"junk")
    with pytest.raises(ModelError, match="card"):
        load_keras_model(tmp_path / "nocard.keras")
