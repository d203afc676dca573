"""Key networks over chroma, built, trained and exported in Keras.

Four architectures (:data:`ARCHITECTURES`, built here, trained by :mod:`keylib.training.train`):

``keynet_eq``: a transposition-equivariant network. The chroma is averaged into
steps of ``frames_per_step`` frames (1 s). A local layer looks at all 12 pitch classes x 3
steps *relative to each of the 12 possible tonics* (circular convolution over the pitch
axis: one set of weights shared by the 12 rotations), a 1x1 layer mixes its channels,
the evidence is averaged over the whole track, and a circular head gives one major and
one minor logit per rotation, i.e. the 24 keys. Rolling the chroma by k bins rolls the
output by k keys exactly, so the network cannot learn a prior over tonics from its
training data, and needs far less of it.

``keynet_eq_relu`` (shipped: the card of ``keylib/models/keynet-eq`` names it): ``keynet_eq``
with ReLU in its per-step layers, cheaper to serve. ``keynet_eq_small``: ``keynet_eq`` with
fewer channels.

``keycnn_ref`` (the reference baseline): two Conv2D layers of 24 filters spanning 12 pitch
classes x 5 frames (1 s), ELU, average pooling over time, Dense 48 with dropout, softmax.

Feature versions
----------------
Every network takes ``rows`` chroma rows (:data:`keylib.features.FEATURE_VERSIONS`: 12, or
24 for v3's chroma and bass bands). The rows are read as bands of 12 pitch classes, and each
band is a channel of the pitch axis (:func:`_pitch_planes`): the circular convolutions see
all bands of a pitch class at once and stay equivariant, since transposing rolls every band
(:func:`keylib.tensors.roll_pitch`). With 12 rows the layers are those of the shipped model.

Model files and cards
---------------------
A model's paths, its card and the card's checks are :mod:`keylib.serving`'s
(:func:`~keylib.serving.model_card`, :data:`~keylib.serving.SHIPPED_MODEL`); this module
only loads the ``.keras`` network (:func:`load_network`, :func:`load_keras_model`) and
writes the ``.onnx`` (:func:`export_onnx`).

Any length, serving
-------------------
:meth:`KeyModel.predict_probs` runs each track at its own length, exactly as the served
model does (:mod:`keylib.serving`: 1-s steps, tracks of equal length in one call, the
network's average over the real steps, the card's calibration), so the two agree within
1e-4. Serving does not use this module: :func:`export_onnx` writes the ``.onnx`` that
:mod:`keylib.serving` runs with ONNX Runtime. Only training and export import TensorFlow.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelError
from ..features import FEATURE_VERSION, N_CHROMA, n_rows
from ..serving import (calibrate, check_card, model_card, model_path, predict_by_length, temperatures, to_steps,
                       track_seconds)
from ..tensors import check_rows

__all__ = [
    "KeyModel",
    "load_keras_model",
    "load_network",
    "export_onnx",
    "build_keynet_eq",
    "build_keycnn_ref",
    "configure_tensorflow",
    "input_rows",
    "check_input_rows",
]

def configure_tensorflow(threads: int | None = None) -> None:
    """Quiet TensorFlow's logs and set its thread pools (``threads``, else ``OMP_NUM_THREADS``).

    Thread settings only take effect before TensorFlow runs its first op in the process;
    later calls leave them as they are.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if threads is None:
        env = os.environ.get("KEYLIB_TF_THREADS") or os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() and int(env) > 0 else None
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # TensorFlow already initialised: keep its pools


# --------------------------------------------------------------------------- networks

@functools.lru_cache(maxsize=1)
def _layers():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="keylib")
    class CircularPad(layers.Layer):
        """Pads axis ``axis`` circularly: ``before`` items from the end, ``after`` from the start."""

        def __init__(self, axis: int, before: int, after: int, **kwargs):
            super().__init__(**kwargs)
            self.axis, self.before, self.after = int(axis), int(before), int(after)

        def call(self, x):
            parts = []
            if self.before:
                parts.append(_take(x, self.axis, -self.before, None))
            parts.append(x)
            if self.after:
                parts.append(_take(x, self.axis, 0, self.after))
            return ops.concatenate(parts, axis=self.axis)

        def compute_output_shape(self, shape):
            shape = list(shape)
            if shape[self.axis] is not None:
                shape[self.axis] += self.before + self.after
            return tuple(shape)

        def get_config(self):
            return {**super().get_config(), "axis": self.axis, "before": self.before, "after": self.after}

    def _take(x, axis, start, stop):
        idx = [slice(None)] * 4
        idx[axis] = slice(start, stop)
        return x[tuple(idx)]

    @keras.saving.register_keras_serializable(package="keylib")
    class TimeMean(layers.Layer):
        """Mean over the time axis (axis 1)."""

        def call(self, x):
            return ops.mean(x, axis=1)

        def compute_output_shape(self, shape):
            return (shape[0],) + tuple(shape[2:])

    @keras.saving.register_keras_serializable(package="keylib")
    class KeyLogits(layers.Layer):
        """(batch, 12 tonics, 2 modes) -> (batch, 24) in keylib order: majors then minors."""

        def call(self, x):
            return ops.reshape(ops.transpose(x, (0, 2, 1)), (-1, 24))

        def compute_output_shape(self, shape):
            return (shape[0], 24)

    return keras, layers, CircularPad, TimeMean, KeyLogits


def _pitch_planes(inp, rows: int):
    """(batch, time, rows) -> (batch, time, 12 pitch classes, rows // 12 bands): each band of
    12 rows becomes a channel of the pitch axis."""
    _, layers, *_ = _layers()
    if rows % N_CHROMA or rows < N_CHROMA:
        raise ValueError(f"a key network takes bands of {N_CHROMA} chroma rows, not {rows}")
    bands = rows // N_CHROMA
    if bands == 1:
        return layers.Reshape((-1, N_CHROMA, 1))(inp)
    x = layers.Reshape((-1, bands, N_CHROMA))(inp)
    return layers.Permute((1, 3, 2))(x)


def build_keynet_eq(*, rows: int | None = None, filters: int = 48, mix: int = 48, head: int = 64, context: int = 3,
                    dropout: float = 0.3, activation: str = "elu", name: str = "keynet_eq"):
    """The transposition-equivariant key network; input (batch, steps, rows) of 1-s steps.

    ``rows``: the chroma rows of its feature version (12 or 24; module docstring); default
    the shipped features' (:data:`keylib.features.FEATURE_VERSION`).
    ``activation`` of the per-step layers (``local``, ``mix``), which run on every step of a
    track and so set the serving cost; the head runs once per track and keeps ELU.
    """
    keras, layers, CircularPad, TimeMean, KeyLogits = _layers()
    rows = rows or n_rows(FEATURE_VERSION)
    inp = keras.Input(shape=(None, rows), name="chroma_steps")
    x = _pitch_planes(inp, rows)
    x = CircularPad(axis=2, before=0, after=11)(x)
    if context > 1:
        x = CircularPad(axis=1, before=context // 2, after=context - 1 - context // 2)(x)
    x = layers.Conv2D(filters, (context, 12), padding="valid", activation=activation, name="local")(x)
    if mix:
        x = layers.Conv2D(mix, 1, activation=activation, name="mix")(x)  # (b, t, 12, mix)
    x = TimeMean(name="track_mean")(x)  # (b, 12, channels)
    x = layers.Reshape((12, 1, mix or filters))(x)
    x = CircularPad(axis=1, before=0, after=11)(x)
    x = layers.Conv2D(head, (12, 1), padding="valid", activation="elu", name="head")(x)  # (b, 12, 1, head)
    x = layers.Dropout(dropout)(x)
    x = layers.Conv2D(2, 1, name="mode_logits")(x)  # (b, 12, 1, 2)
    x = layers.Reshape((12, 2))(x)
    x = KeyLogits(name="key_logits")(x)
    out = layers.Softmax(name="probs")(x)
    return keras.Model(inp, out, name=name)


def build_keycnn_ref(*, rows: int | None = None, filters: int = 24, width: int = 5, dense: int = 48,
                     dropout: float = 0.5, name: str = "keycnn_ref"):
    """The reference CNN; input (batch, frames, rows) at the feature frame rate (``rows``:
    as :func:`build_keynet_eq`'s)."""
    keras, layers, CircularPad, TimeMean, KeyLogits = _layers()
    rows = rows or n_rows(FEATURE_VERSION)
    inp = keras.Input(shape=(None, rows), name="chroma_frames")
    x = _pitch_planes(inp, rows)
    x = layers.Conv2D(filters, (width, 12), padding="same", activation="elu")(x)
    x = layers.Conv2D(filters, (width, 12), padding="same", activation="elu")(x)
    x = TimeMean(name="time_average")(x)  # (b, 12, filters)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="elu")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(24, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name)


def build_keynet_eq_small(**kwargs):
    """``keynet_eq`` with 32 local filters and a 32-channel mix: 0.54x the multiply-adds per
    step (26 k against 48 k); 1.4x the tracks per CPU-second served (bench/accuracy.py)."""
    return build_keynet_eq(**{"filters": 32, "mix": 32, "name": "keynet_eq_small", **kwargs})


def build_keynet_eq_relu(**kwargs):
    """``keynet_eq`` with ReLU in its per-step layers. ONNX Runtime fuses a ReLU into the
    convolution before it but runs ELU as a separate element-wise pass with one ``exp`` per
    value, which its profile shows as 55% of the served network's time; the same 41 k weights
    with ReLU serve 3.4x the tracks per CPU-second (2,560 against 756 on 3.5-min tracks,
    one thread, 64 tracks a call, on the 2-core dev machine; ``bench/accuracy.py`` measures
    the served network the same way)."""
    return build_keynet_eq(**{"activation": "relu", "name": "keynet_eq_relu", **kwargs})


ARCHITECTURES = {"keynet_eq": build_keynet_eq, "keynet_eq_small": build_keynet_eq_small,
                 "keynet_eq_relu": build_keynet_eq_relu, "keycnn_ref": build_keycnn_ref}
FRAMES_PER_STEP = {"keynet_eq": 5, "keynet_eq_small": 5, "keynet_eq_relu": 5, "keycnn_ref": 1}


# --------------------------------------------------------------------------- the model

class KeyModel:
    """A trained key network with its card; :meth:`predict_probs` is the one way to use it."""

    def __init__(self, keras_model, card: dict, *, path: Path | None = None):
        self.keras_model = keras_model
        self.card = dict(card)
        self.path = path
        self.version = str(card.get("version", card.get("name", "unknown")))
        check_card(self.card, where=f"model {self.version}")
        self.feature_version = str(card.get("feature_version", ""))
        self.frames_per_step = int(card.get("input", {}).get("frames_per_step", 1))
        self.calibration = dict(card.get("calibration") or {})
        self._fn = None

    def __repr__(self) -> str:
        return f"KeyModel({self.version!r}, feature_version={self.feature_version!r})"

    def _predict_fn(self):
        if self._fn is None:
            import tensorflow as tf

            model = self.keras_model

            @tf.function(reduce_retracing=True)
            def fn(x):
                return model(x, training=False)

            self._fn = fn
        return self._fn

    def predict_probs(self, chromas: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """Key probabilities of each chroma tensor, as :meth:`keylib.serving.ServedModel.predict_probs`.

        Parameters
        ----------
        chromas : sequence of np.ndarray, each (rows, n_frames >= 1)
            ``rows`` of the card's feature version. Any lengths: 1-s steps, each track at
            its own length (no tiling).
        batch_size : int
            Most tracks per network call.

        Returns
        -------
        np.ndarray, shape (n, 24), float32
            Calibrated by the card at each track's length (:func:`keylib.serving.temperatures`);
            rows sum to 1; :mod:`keylib.keys` order.
        """
        check_rows(chromas, self.feature_version)
        steps = [to_steps(c, self.frames_per_step) for c in chromas]
        fn = self._predict_fn()
        probs = predict_by_length(steps, lambda x: fn(x).numpy(), batch_size=batch_size)
        return calibrate(probs, temperatures(track_seconds(chromas), self.calibration))

    def predict_keys(self, chromas: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """Index (0..23) of the most probable key of each chroma tensor."""
        return self.predict_probs(chromas, batch_size=batch_size).argmax(axis=1)


def load_keras_model(path: str | Path | None = None, *, threads: int | None = None) -> KeyModel:
    """The Keras network of a model (``<name>.keras``, or its ``.onnx``/``.json`` sibling)
    with its card; ``None`` = the shipped model. Paths and the card are
    :func:`keylib.serving.model_card`'s; only the network is loaded here.

    Cached per process and path. ``threads`` (else ``OMP_NUM_THREADS``/``KEYLIB_TF_THREADS``)
    sets TensorFlow's thread pools.

    Raises
    ------
    ModelError
        when the ``.keras`` or its card is missing or unreadable, or the card fails
        :func:`keylib.serving.check_card`.
    """
    return _load_keras_cached(str(model_path(path).with_suffix(".keras")), threads)


@functools.lru_cache(maxsize=8)
def _load_keras_cached(keras_path: str, threads: int | None) -> KeyModel:
    network = load_network(keras_path, threads=threads)  # a missing file is named as such, before its card
    info = model_card(keras_path)
    return KeyModel(network, info.card, path=Path(keras_path))


def load_network(path: str | Path, *, threads: int | None = None):
    """The Keras network of a ``.keras`` file, whatever features its card names (training's
    refit reads a network of another feature version; :func:`load_keras_model` checks them).

    Raises
    ------
    ModelError
        when the file is missing or not a keylib network.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    configure_tensorflow(threads)
    _layers()  # registers the custom layers
    import keras

    try:
        return keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # keras raises many types for bad files
        raise ModelError(f"cannot load model {p}: {type(exc).__name__}: {exc}") from None


def export_onnx(keras_model, path: str | Path) -> Path:
    """Write a Keras key network as ONNX for :mod:`keylib.serving` (training side only).

    Keras 3's own exporter (through tf2onnx; the ``train`` extra) keeps the batch and time
    axes dynamic, so the served model takes any number of tracks of any length. The file
    is written next to its final name and renamed into place.

    Parameters
    ----------
    keras_model : keras.Model
        A network of :data:`ARCHITECTURES` (input (batch, steps, rows)), trained or loaded.
    path : str or Path
        Target, conventionally ``<name>.onnx`` beside ``<name>.keras`` and ``<name>.json``.

    Returns
    -------
    Path
        ``path``.
    """
    configure_tensorflow()
    _layers()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras traces the export from the model's call; a model loaded from disk must be
    # called once before it can be exported.
    keras_model(np.zeros((2, 8, input_rows(keras_model)), dtype=np.float32), training=False)
    part = path.with_name(path.name + ".part.onnx")
    try:
        with warnings.catch_warnings():  # the exporter's own numpy FutureWarning
            warnings.simplefilter("ignore", FutureWarning)
            keras_model.export(str(part), format="onnx", verbose=False)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def input_rows(keras_model) -> int:
    """The chroma rows a key network takes (the last axis of its input)."""
    return int(keras_model.input_shape[-1])


def check_input_rows(keras_model, feature_version: str) -> None:
    """:class:`ModelError` unless the network takes the chroma rows of ``feature_version``
    (a refit keeps a network's weights, so its input must be the features given)."""
    rows, wanted = input_rows(keras_model), n_rows(feature_version)
    if rows != wanted:
        raise ModelError(f"the network takes {rows} chroma rows, but features {feature_version!r} have {wanted}: "
                         "refit a network trained on those features, or set train.feature_version to its own")
