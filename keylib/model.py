"""Key networks over chroma, the shipped model, and fast batched prediction.

Two networks (both built here, trained by :mod:`keylib.train`):

``keynet_eq`` (shipped): a transposition-equivariant network. The chroma is averaged into
steps of ``frames_per_step`` frames (1 s). A local layer looks at all 12 pitch classes x 3
steps *relative to each of the 12 possible tonics* (circular convolution over the pitch
axis: one set of weights shared by the 12 rotations), a 1x1 layer mixes its channels,
the evidence is averaged over the whole track, and a circular head gives one major and
one minor logit per rotation, i.e. the 24 keys. Rolling the chroma by k bins rolls the
output by k keys exactly, so the network cannot learn a prior over tonics from its
training data, and needs far less of it.

``keycnn_ref`` (the reference baseline): two Conv2D layers of 24 filters spanning 12 pitch
classes x 5 frames (1 s), ELU, average pooling over time, Dense 48 with dropout, softmax.

Any length
----------
:meth:`KeyModel.predict_probs` handles tracks of any length (>= 1 frame) in batches:
frames are averaged into steps of ``frames_per_step`` (the last partial step included),
each track is brought to the length of its *bucket* (the smallest of 8, 12, 16, 24, 32,
48, ... steps that holds it) by wrap-around tiling (a track is treated as a loop; a track
shorter than the bucket repeats from its start), and all tracks of a bucket go through the
network together. Both networks average their evidence over the whole (tiled) input, so
a track's prediction uses all of it; tiling over-weights at most a third of a track.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ModelError

__all__ = [
    "SHIPPED_MODEL",
    "KeyModel",
    "load_model",
    "build_keynet_eq",
    "build_keycnn_ref",
    "to_steps",
    "bucket_length",
    "fit_length",
    "configure_tensorflow",
]

MODELS_DIR = Path(__file__).parent / "models"
SHIPPED_MODEL = MODELS_DIR / "keynet-eq.keras"
MIN_STEPS = 8
_BUCKETS = tuple(sorted({int(b * 2 ** e) for e in range(3, 14) for b in (1, 1.5)}))  # 8, 12, 16, 24, ...


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


# --------------------------------------------------------------------------- layout helpers

def to_steps(chroma: np.ndarray, frames_per_step: int) -> np.ndarray:
    """(12, n_frames) -> (n_steps, 12): mean over blocks of ``frames_per_step`` frames."""
    c = np.asarray(chroma, dtype=np.float32)
    if c.ndim != 2 or c.shape[0] != 12 or c.shape[1] < 1:
        raise ValueError(f"chroma must have shape (12, n_frames >= 1), got {c.shape}")
    c = np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)
    if frames_per_step <= 1:
        return np.ascontiguousarray(c.T)
    n = c.shape[1]
    steps = -(-n // frames_per_step)
    pad = steps * frames_per_step - n
    if pad:
        # the last partial step averages its own frames only
        sums = np.add.reduceat(c, np.arange(0, n, frames_per_step), axis=1)
        counts = np.full(steps, float(frames_per_step), dtype=np.float32)
        counts[-1] = frames_per_step - pad
        return np.ascontiguousarray((sums / counts).T)
    return np.ascontiguousarray(c.reshape(12, steps, frames_per_step).mean(axis=2).T)


def bucket_length(n_steps: int, min_steps: int = MIN_STEPS) -> int:
    """Smallest bucket (8, 12, 16, 24, 32, ...) holding ``n_steps`` steps."""
    for b in _BUCKETS:
        if b >= max(n_steps, min_steps):
            return b
    return int(n_steps)


def fit_length(steps: np.ndarray, length: int) -> np.ndarray:
    """(n, 12) -> (length, 12) by wrap-around tiling (or cutting when longer)."""
    n = steps.shape[0]
    if n == length:
        return steps
    idx = np.arange(length) % n
    return steps[idx]


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


def build_keynet_eq(*, filters: int = 48, mix: int = 48, head: int = 64, context: int = 3,
                    dropout: float = 0.3, name: str = "keynet_eq"):
    """The transposition-equivariant key network; input (batch, steps, 12) of 1-s steps."""
    keras, layers, CircularPad, TimeMean, KeyLogits = _layers()
    inp = keras.Input(shape=(None, 12), name="chroma_steps")
    x = layers.Reshape((-1, 12, 1))(inp)
    x = CircularPad(axis=2, before=0, after=11)(x)
    if context > 1:
        x = CircularPad(axis=1, before=context // 2, after=context - 1 - context // 2)(x)
    x = layers.Conv2D(filters, (context, 12), padding="valid", activation="elu", name="local")(x)
    if mix:
        x = layers.Conv2D(mix, 1, activation="elu", name="mix")(x)  # (b, t, 12, mix)
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


def build_keycnn_ref(*, filters: int = 24, width: int = 5, dense: int = 48, dropout: float = 0.5,
                     name: str = "keycnn_ref"):
    """The reference CNN; input (batch, frames, 12) at the feature frame rate."""
    keras, layers, CircularPad, TimeMean, KeyLogits = _layers()
    inp = keras.Input(shape=(None, 12), name="chroma_frames")
    x = layers.Reshape((-1, 12, 1))(inp)
    x = layers.Conv2D(filters, (width, 12), padding="same", activation="elu")(x)
    x = layers.Conv2D(filters, (width, 12), padding="same", activation="elu")(x)
    x = TimeMean(name="time_average")(x)  # (b, 12, filters)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="elu")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(24, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name)


ARCHITECTURES = {"keynet_eq": build_keynet_eq, "keycnn_ref": build_keycnn_ref}
FRAMES_PER_STEP = {"keynet_eq": 5, "keycnn_ref": 1}


# --------------------------------------------------------------------------- the model

class KeyModel:
    """A trained key network with its card; :meth:`predict_probs` is the one way to use it."""

    def __init__(self, keras_model, card: dict, *, path: Path | None = None):
        from .features import FEATURE_VERSION

        self.keras_model = keras_model
        self.card = dict(card)
        self.path = path
        self.version = str(card.get("version", card.get("name", "unknown")))
        self.feature_version = str(card.get("feature_version", ""))
        if self.feature_version != FEATURE_VERSION:
            raise ModelError(
                f"model {self.version} was trained on features {self.feature_version!r}, "
                f"but this keylib computes {FEATURE_VERSION!r}: retrain or use a matching model"
            )
        self.frames_per_step = int(card.get("input", {}).get("frames_per_step", 1))
        self.min_steps = int(card.get("input", {}).get("min_steps", MIN_STEPS))
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
        """Key probabilities of each chroma tensor.

        Parameters
        ----------
        chromas : sequence of np.ndarray, each (12, n_frames >= 1)
            Any lengths; see the module docstring for how lengths are handled (1-s steps,
            wrap-around tiling to a length bucket, whole-track averaging inside the network).
        batch_size : int
            Tracks per network call within a bucket.

        Returns
        -------
        np.ndarray, shape (n, 24), float32
            Rows sum to 1; columns in :mod:`keylib.keys` index order.
        """
        n = len(chromas)
        out = np.zeros((n, 24), dtype=np.float32)
        if n == 0:
            return out
        steps = [to_steps(c, self.frames_per_step) for c in chromas]
        buckets: dict[int, list[int]] = {}
        for i, s in enumerate(steps):
            buckets.setdefault(bucket_length(s.shape[0], self.min_steps), []).append(i)
        fn = self._predict_fn()
        for length, idx in sorted(buckets.items()):
            for start in range(0, len(idx), batch_size):
                part = idx[start:start + batch_size]
                x = np.stack([fit_length(steps[i], length) for i in part]).astype(np.float32)
                out[part] = fn(x).numpy().astype(np.float32, copy=False)
        return out

    def predict_keys(self, chromas: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """Index (0..23) of the most probable key of each chroma tensor."""
        return self.predict_probs(chromas, batch_size=batch_size).argmax(axis=1)


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_model(path: str | Path | None = None, *, threads: int | None = None) -> KeyModel:
    """Load a ``.keras`` model and its card (``<name>.json`` next to it); None -> the shipped model.

    Cached per process and path, so a Spark worker loads it once. ``threads`` (else
    ``OMP_NUM_THREADS``/``KEYLIB_TF_THREADS``) sets TensorFlow's thread pools.

    Raises
    ------
    ModelError
        when the file or its card is missing or unreadable, or the card's feature_version
        differs from :data:`keylib.features.FEATURE_VERSION`.
    """
    resolved = Path(path).expanduser().resolve() if path else SHIPPED_MODEL.resolve()
    return _load_cached(str(resolved), threads)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, threads: int | None) -> KeyModel:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    cpath = card_path(p)
    if not cpath.is_file():
        raise ModelError(f"model card not found next to the model: {cpath}")
    try:
        card = json.loads(cpath.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable model card {cpath}: {exc}") from None
    configure_tensorflow(threads)
    _layers()  # registers the custom layers
    import keras

    try:
        keras_model = keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # keras raises many types for bad files
        raise ModelError(f"cannot load model {p}: {type(exc).__name__}: {exc}") from None
    return KeyModel(keras_model, card, path=p)
