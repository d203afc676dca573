"""Shared fixtures and helpers: one real local[2] Spark session, one generated sample
catalogue, an untrained network for plumbing tests, the shipped model's card with the
model-acceptance thresholds, and an output's lease store.

Markers (registered in pyproject.toml; nothing is deselected by default, so
``./submit.sh test`` runs every test):

``slow``
    Tests that start a Spark job in a subprocess (``./submit.sh``, ``spark-submit``, a
    child interpreter), a standalone Spark cluster or moto S3 servers in bulk, or that take
    more than 5 s on a 2-core machine (setup included; measure with
    ``./submit.sh test -q -m "not slow" --durations=40``). A quick child process (the
    ``keylib`` console script on one file, a job refusing a bad config) is not slow.
``acceptance``
    Tests of the *shipped* model's accuracy on music (sample clips, cadences, rendered
    pieces, whole songs). They fail when a retrained model is worse, not when the code is
    broken. Those with a threshold take it from the :func:`acceptance` fixture, which reads
    the model card's ``acceptance`` block: ``bench/acceptance.py --update-card`` measures
    those figures on the same material (:mod:`keylib.synth`) and writes them there with the
    model version. A card without the block, or with one measured for another version,
    fails these tests until that command is run. Those that run a Spark pass are also
    ``slow``; the others (a few seconds each) stay in the quick loop.

The two loops::

    ./submit.sh test -q -m "not slow"      # the quick loop: about 2 minutes on 2 cores
    ./submit.sh test -q                    # everything (about 8 minutes), as .ci/run does

and, after retraining the model, ``bench/accuracy.py --update-card``, then
``.venv/bin/python bench/acceptance.py --update-card`` and ``./submit.sh test -q -m acceptance``.

Helper modules (``servers.py``, ``faulty_s3.py``) are imported by name: this folder has no
``__init__.py``, so pytest's default (prepend) import mode puts it on ``sys.path`` when it
imports this conftest and the test files. No test file touches ``sys.path``, and no test
file imports another test file: what several share is a fixture here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# Before pyspark starts a JVM: loopback only, and workers run this interpreter.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as submit.sh: one task per core
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def config():
    """The default configuration (conf/local.toml)."""
    from keylib.config import load_config

    return load_config(REPO / "conf" / "local.toml")


@pytest.fixture(scope="session")
def spark(config):
    """A real local[2] Spark session shared by the whole test run."""
    from keylib.spark.session import get_session

    session = get_session(config, app_name="keylib-tests")
    yield session
    session.stop()


@pytest.fixture
def lease_store():
    """Opens the lease store of an output: ``lease_store(out, s3)``.

    Returns
    -------
    callable
        ``(out, s3) -> store``: :func:`keylib.storage.lease_store.open_store` of the output
        ``out`` (a folder or URI) reached with the ``[s3]`` settings ``s3``.
    """
    from keylib.storage import lease_store as stores, locations

    def open_store(out, s3):
        return stores.open_store(locations.resolve_output(out), s3)

    return open_store


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    """The sample catalogue (24 keys x mp3 + wav, 4 s clips) and its manifest.csv."""
    from keylib.synth import SHORT_CLIP_S, make_sample_catalogue

    return make_sample_catalogue(tmp_path_factory.mktemp("sample"), duration_s=SHORT_CLIP_S)


def make_untrained_model(folder: Path, feature_version: str | None = None) -> Path:
    """A real (untrained, seeded) keylib network saved with its card in ``folder``: tests
    the plumbing, not the accuracy. ``feature_version``: the features it takes (default the
    shipped model's; version ``untrained-test``, else ``untrained-<version>``). Returns the
    ``.keras`` path (the ``.onnx`` beside it is what serving runs)."""
    import keras

    from keylib import features
    from keylib.training.networks import build_keynet_eq, export_onnx

    feature_version = feature_version or features.FEATURE_VERSION
    keras.utils.set_random_seed(0)
    path = folder / "untrained.keras"
    net = build_keynet_eq(rows=features.n_rows(feature_version), filters=8, mix=8, head=8)
    net.save(path)
    export_onnx(net, path.with_suffix(".onnx"))  # what serving runs
    version = "untrained-test" if feature_version == features.FEATURE_VERSION else f"untrained-{feature_version}"
    path.with_suffix(".json").write_text(json.dumps({
        "version": version, "feature_version": feature_version, "input": {"frames_per_step": 5},
    }))
    return path


@pytest.fixture(scope="session")
def untrained_model_path(tmp_path_factory) -> Path:
    """:func:`make_untrained_model`'s ``.keras`` path, made once per run (version ``untrained-test``)."""
    return make_untrained_model(tmp_path_factory.mktemp("untrained-model"))


@pytest.fixture(scope="session")
def other_feature_version() -> str:
    """The feature version the shipped model does not take (v3 while v2 ships, and back)."""
    from keylib import features

    return next(v for v in features.FEATURE_VERSIONS if v != features.FEATURE_VERSION)


@pytest.fixture(scope="session")
def other_features_model_path(tmp_path_factory, other_feature_version) -> Path:
    """:func:`make_untrained_model` of :func:`other_feature_version`, made once per run."""
    return make_untrained_model(tmp_path_factory.mktemp("other-features-model"), other_feature_version)


@pytest.fixture(scope="session")
def shipped_card() -> dict:
    """The shipped model's card, read and checked by :func:`keylib.serving.model_card`."""
    from keylib import serving

    return serving.model_card().card


# The command that measures the acceptance figures and writes them into the card.
ACCEPTANCE_COMMAND = ".venv/bin/python bench/acceptance.py --update-card"
# How far below the card's measured value a float figure (a weighted score, a confidence)
# may fall: ONNX Runtime's and the decoders' float rounding differ a little between
# machines. Counts have no margin.
ACCEPTANCE_FLOAT_MARGIN = 0.02
# The card's acceptance figures (bench/acceptance.py) and whether each is a count.
ACCEPTANCE_FIGURES = {"sample_catalogue_correct": True, "cadences_correct": True, "annotate_correct": True,
                      "annotate_weighted_score": False, "c_major_confidence": False}


@pytest.fixture(scope="session")
def acceptance(shipped_card) -> SimpleNamespace:
    """What the ``acceptance`` tests require of the shipped model, from its card.

    ``bench/acceptance.py --update-card`` measures, on the material these tests play, the
    figures they check and records them in the card's ``acceptance`` block with the
    model version it measured. A count there is the minimum (a model that misses one
    cadence has a card that says 23, and the test then requires 23); a float figure may
    fall :data:`ACCEPTANCE_FLOAT_MARGIN` below its measured value. A missing block, a
    missing figure or a block measured for another version fails the tests that use this
    fixture, naming the command to run.
    """
    version = shipped_card["version"]
    block = shipped_card.get("acceptance")
    if not isinstance(block, dict):
        pytest.fail(f"the card of {version} has no acceptance block: run `{ACCEPTANCE_COMMAND}`", pytrace=False)
    if block.get("model_version") != version:
        pytest.fail(f"the card's acceptance figures were measured for {block.get('model_version')}, not {version}: "
                    f"run `{ACCEPTANCE_COMMAND}`", pytrace=False)
    missing = sorted(set(ACCEPTANCE_FIGURES) - set(block))
    if missing:
        pytest.fail(f"the card's acceptance block lacks {missing}: run `{ACCEPTANCE_COMMAND}`", pytrace=False)

    def least(figure: str):
        value = block[figure]
        return int(value) if ACCEPTANCE_FIGURES[figure] else float(value) - ACCEPTANCE_FLOAT_MARGIN

    return SimpleNamespace(
        card=shipped_card,
        version=version,
        # the demo's sample catalogue (keylib.synth.make_sample_catalogue: 24 keys x mp3 + wav,
        # 8 s), served: files whose key is exactly right (tests/test_model.py)
        sample_catalogue_min_correct=least("sample_catalogue_correct"),
        # keylib.synth.cadences, served: keys exactly right of 24 (tests/test_model.py)
        cadences_min_correct=least("cadences_correct"),
        # annotate + evaluate on keylib.synth.make_flawed_manifest (the 4-s clips, 47 scored):
        # the report's weighted MIREX score and exact keys (tests/test_annotate.py)
        annotate_min_weighted_score=least("annotate_weighted_score"),
        annotate_min_correct=least("annotate_correct"),
        # `keylib analyze` on keylib.synth.write_c_major_cadence: C major, with more than this
        # calibrated confidence (tests/test_cli.py)
        c_major_min_confidence=least("c_major_confidence"),
    )
