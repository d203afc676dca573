"""The served key model: the exported network run by ONNX Runtime, no TensorFlow.

Everything inference needs from the model lives here: reading the model card, the 1-s
step layout of the input, batching by length, calibration, and the ONNX Runtime session,
loaded once per Python worker. Importing this module costs numpy only; ``onnxruntime``
is imported when the first model is loaded (0.2 s, against ~9 s for TensorFlow).
Training (:mod:`keylib.training.networks`, :mod:`keylib.training.train`) stays in Keras
and writes the ``.onnx`` next to the ``.keras`` (:func:`keylib.training.networks.export_onnx`);
both sides share :func:`to_steps`, :func:`predict_by_length` and :func:`calibrate`, so the
served model gives the Keras model's probabilities (within 1e-4, tested). This module is the
one reader of a model's files and card for both sides (:func:`model_path`,
:func:`model_card`, :func:`check_card`, :data:`SHIPPED_MODEL`).

Model files
    ``<name>.onnx`` (the network; dynamic batch and time axes), ``<name>.json`` (its card:
    ``version``, ``feature_version``, ``input.frames_per_step``, optionally
    ``calibration.temperature``) and ``<name>.keras`` (the trained Keras model, for
    training and export only). Any of the three paths names the model.

Any length, pooled over the real length
    Each track's (rows, n_frames) chroma (rows: the card's ``feature_version``, one of
    :data:`keylib.features.FEATURE_VERSIONS`) is averaged into steps of ``frames_per_step``
    frames (1 s; the last partial step averages its own) and goes through the network at its
    true number of steps, which it pads circularly for its 3-step window and averages its
    evidence over: every second counts once. Tracks of equal length share one network call;
    nothing is tiled, cropped or padded here (only extraction crops, to ``audio.max_duration_s``).

Calibration
    A card may carry ``"calibration": {"temperature": T, "duration_exponent": g,
    "reference_s": r}``; a track of ``d`` seconds then gets ``softmax(log(p) / T(d))`` with
    ``T(d) = T * (clip(d, 5, 600) / r) ** g`` (:func:`temperatures`): the temperature follows
    the track's length, since a 20 s clip and a whole song carry different amounts of
    evidence (at one temperature the network is overconfident on short clips, underconfident
    on whole songs). Same argmax; ``g = 0`` or none is plain temperature scaling; no
    calibration means T = 1.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ModelError
from .features import FEATURE_VERSIONS, FRAME_RATE
from .keys import N_KEYS
from .tensors import check_rows

__all__ = ["MODELS_DIR", "SHIPPED_MODEL", "CALIBRATION_RANGE_S", "REFERENCE_S", "ModelInfo", "ServedModel",
           "model_info", "model_card", "model_path", "check_card", "read_card", "load_model", "to_steps",
           "predict_by_length", "calibrate", "temperatures", "track_seconds", "check_calibration", "card_path"]

MODELS_DIR = Path(__file__).parent / "models"
# The shipped model; its card (.json) and trained Keras network (.keras) lie beside it.
SHIPPED_MODEL = MODELS_DIR / "keynet-eq.onnx"
# Track lengths (s) the length-dependent temperature is defined over; beyond, the nearest end's.
CALIBRATION_RANGE_S = (5.0, 600.0)
# The track length (s) at which a card's calibration ``temperature`` applies as is, when the
# card names no ``reference_s``; training fits calibrations at this length.
REFERENCE_S = 30.0
_ROWS = frozenset(FEATURE_VERSIONS.values())  # the chroma rows of every feature version


# --------------------------------------------------------------------------- input layout

def to_steps(chroma: np.ndarray, frames_per_step: int) -> np.ndarray:
    """Average a chroma tensor into steps of ``frames_per_step`` frames.

    Parameters
    ----------
    chroma : np.ndarray, shape (rows, n_frames >= 1)
        ``rows`` of a feature version (:data:`keylib.features.FEATURE_VERSIONS`: 12 or 24).
    frames_per_step : int
        Frames per step (5 = 1 s at the feature frame rate); 1 keeps every frame.

    Returns
    -------
    np.ndarray, shape (ceil(n_frames / frames_per_step), rows), float32
        NaN and inf read as 0. The last partial step is the mean of its own frames.
    """
    c = np.asarray(chroma, dtype=np.float32)
    rows = c.shape[0] if c.ndim == 2 else 0
    if rows not in _ROWS or c.shape[1] < 1:
        raise ValueError(f"chroma must have shape (rows in {sorted(_ROWS)}, n_frames >= 1), got {c.shape}")
    if frames_per_step <= 1:
        return np.ascontiguousarray(_finite(c).T)
    n = c.shape[1]
    steps = -(-n // frames_per_step)
    pad = steps * frames_per_step - n
    if pad:
        sums = np.add.reduceat(_finite(c), np.arange(0, n, frames_per_step), axis=1)
        counts = np.full(steps, float(frames_per_step), dtype=np.float32)
        counts[-1] = frames_per_step - pad
        return np.ascontiguousarray((sums / counts).T)
    # The mean over the short last axis as a matrix-vector product (faster than .mean(axis=2);
    # bench/infer.py's "model" share includes it). The copy that zeroes NaN/inf is made only when the
    # result shows one (matmul's "invalid" flag, raised now and then on finite input, is ignored).
    weights = np.full(frames_per_step, 1.0 / frames_per_step, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        means = c.reshape(rows, steps, frames_per_step) @ weights
    if not np.isfinite(means).all():
        means = _finite(c).reshape(rows, steps, frames_per_step) @ weights
    return np.ascontiguousarray(means.T)


def track_seconds(chromas: Sequence[np.ndarray]) -> np.ndarray:
    """Length in seconds of each (rows, n_frames) chroma tensor, shape (n,)."""
    return np.array([np.shape(c)[-1] / FRAME_RATE for c in chromas], dtype=np.float64)


def _finite(c: np.ndarray) -> np.ndarray:
    """``c`` with NaN and inf read as 0 (a copy)."""
    return np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)


def predict_by_length(steps: Sequence[np.ndarray], run: Callable[[np.ndarray], np.ndarray], *,
                      batch_size: int = 256) -> np.ndarray:
    """Run a network over tracks of any length, each at its own length.

    Parameters
    ----------
    steps : sequence of np.ndarray, each (n_steps_i >= 1, rows)
        Tracks in the network's input layout (see :func:`to_steps`).
    run : callable
        ``run(x)`` with ``x`` of shape (batch, n_steps, rows) float32 returns (batch, 24).
    batch_size : int
        Most tracks per call; tracks of equal length share calls.

    Returns
    -------
    np.ndarray, shape (len(steps), 24), float32
        In the order of ``steps``.
    """
    out = np.zeros((len(steps), N_KEYS), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        by_length.setdefault(int(s.shape[0]), []).append(i)
    for length, idx in sorted(by_length.items()):
        for start in range(0, len(idx), max(1, int(batch_size))):
            part = idx[start:start + max(1, int(batch_size))]
            x = np.stack([steps[i] for i in part]).astype(np.float32, copy=False)
            out[part] = np.asarray(run(x), dtype=np.float32)
    return out


def calibrate(probs: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Temperature scaling: ``softmax(log(probs) / temperature)`` row-wise.

    Parameters
    ----------
    probs : np.ndarray, shape (n, 24)
    temperature : float > 0, or np.ndarray of shape (n,)
        One temperature for every row, or one per row (:func:`temperatures`). 1 returns
        ``probs`` unchanged; above 1 softens, below 1 sharpens.

    Returns
    -------
    np.ndarray, shape (n, 24), float32; rows sum to 1, argmax unchanged.
    """
    p = np.asarray(probs, dtype=np.float32)
    t = np.asarray(temperature, dtype=np.float64)
    if p.size == 0 or (t.ndim == 0 and float(t) == 1.0):
        return p
    if t.ndim == 1:
        if t.shape[0] != p.shape[0]:
            raise ValueError(f"{t.shape[0]} temperatures for {p.shape[0]} rows")
        t = t[:, None]
    logits = np.log(np.maximum(p.astype(np.float64), 1e-30)) / t
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def temperatures(seconds: Sequence[float] | np.ndarray, calibration: dict | None) -> np.ndarray:
    """The calibration temperature of tracks of ``seconds`` seconds.

    Parameters
    ----------
    seconds : sequence of float, shape (n,)
        Each track's analysed length.
    calibration : dict or None
        A model card's ``calibration`` entry: ``temperature`` (T at ``reference_s``),
        optionally ``duration_exponent`` (g, default 0) and ``reference_s`` (default :data:`REFERENCE_S`).

    Returns
    -------
    np.ndarray, shape (n,), float64
        ``T * (clip(seconds, 5, 600) / reference_s) ** g``; all 1 without calibration.
    """
    d = np.clip(np.asarray(seconds, dtype=np.float64).reshape(-1), *CALIBRATION_RANGE_S)
    cal = calibration or {}
    exponent = float(cal.get("duration_exponent", 0.0))
    reference = float(cal.get("reference_s", REFERENCE_S))
    return float(cal.get("temperature", 1.0)) * (d / reference) ** exponent


# --------------------------------------------------------------------------- model files

@dataclass(frozen=True)
class ModelInfo:
    """A model's files and card, read without loading the network (what a driver needs)."""

    onnx_path: Path
    card_path: Path
    card: dict = field(repr=False)

    @property
    def version(self) -> str:
        return str(self.card.get("version", self.card.get("name", "unknown")))

    @property
    def feature_version(self) -> str:
        return str(self.card.get("feature_version", ""))

    @property
    def frames_per_step(self) -> int:
        return int(self.card.get("input", {}).get("frames_per_step", 1))

    @property
    def calibration(self) -> dict:
        """The card's ``calibration`` entry ({} when uncalibrated); see :func:`temperatures`."""
        return dict(self.card.get("calibration") or {})

    @property
    def temperature(self) -> float:
        """The calibration temperature of a track of ``calibration.reference_s`` seconds."""
        return float(self.calibration.get("temperature", 1.0))


def card_path(model_path: str | Path) -> Path:
    """The card (``<name>.json``) beside a model file (``.onnx`` or ``.keras``)."""
    return Path(model_path).with_suffix(".json")


def read_card(card_path: Path) -> dict:
    """A model card (``<name>.json``), or :class:`ModelError` when missing or unreadable."""
    if not card_path.is_file():
        raise ModelError(f"model card not found next to the model: {card_path}")
    try:
        return json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable model card {card_path}: {exc}") from None


def model_path(path: str | Path | None = None) -> Path:
    """A model path made absolute; ``None`` = the shipped model (:data:`SHIPPED_MODEL`)."""
    return Path(path).expanduser().resolve() if path else SHIPPED_MODEL.resolve()


def check_card(card: dict, *, where: str) -> None:
    """:class:`ModelError` unless a model card fits this keylib: its ``feature_version`` is
    one of :data:`keylib.features.FEATURE_VERSIONS` (extraction then computes those features
    for it) and its calibration is usable (:func:`check_calibration`). The one check of a
    card, for the served and the Keras model."""
    version = str(card.get("version", card.get("name", "unknown")))
    feature_version = str(card.get("feature_version", ""))
    if feature_version not in FEATURE_VERSIONS:
        raise ModelError(
            f"model {version} was trained on features {feature_version!r}, which this keylib does not "
            f"compute (it knows {', '.join(sorted(FEATURE_VERSIONS))}): retrain or use a matching model"
        )
    check_calibration(dict(card.get("calibration") or {}), where=where)


def model_card(path: str | Path | None = None) -> ModelInfo:
    """A model's paths and checked card (:func:`read_card`, :func:`check_card`), whichever of
    its files exist; ``None`` = the shipped model. :func:`model_info` also requires the
    ``.onnx``, :func:`keylib.training.networks.load_keras_model` the ``.keras``."""
    given = model_path(path)
    json_path = card_path(given)
    info = ModelInfo(given.with_suffix(".onnx"), json_path, read_card(json_path))
    check_card(info.card, where=f"model card {json_path}")
    return info


def model_info(path: str | Path | None = None) -> ModelInfo:
    """The files and card of a served model at ``path`` (``<name>.onnx``, or its ``.keras`` /
    ``.json`` sibling); ``None`` = the shipped model. :class:`ModelError` when the ``.onnx``
    is missing, or as :func:`model_card`."""
    given = model_path(path)
    onnx_path = given.with_suffix(".onnx")
    if not onnx_path.is_file():
        if given.suffix == ".keras" and given.is_file():
            raise ModelError(f"no served model next to {given}: export {onnx_path.name} with "
                             "keylib.training.networks.export_onnx (needs the train extra)")
        raise ModelError(f"model file not found: {onnx_path if given.suffix != '.onnx' else given}")
    return model_card(given)


def check_calibration(calibration: dict, *, where: str) -> None:
    """:class:`ModelError` unless ``calibration`` (a card's entry) is usable by :func:`temperatures`."""
    try:
        temperature = float(calibration.get("temperature", 1.0))
        exponent = float(calibration.get("duration_exponent", 0.0))
        reference = float(calibration.get("reference_s", REFERENCE_S))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: calibration values must be numbers ({exc})") from None
    if not temperature > 0 or not np.isfinite(temperature):
        raise ModelError(f"{where}: calibration temperature must be > 0, got {temperature}")
    if not np.isfinite(exponent) or abs(exponent) > 2:
        raise ModelError(f"{where}: calibration duration_exponent must be in [-2, 2], got {exponent}")
    if not reference > 0 or not np.isfinite(reference):
        raise ModelError(f"{where}: calibration reference_s must be > 0, got {reference}")


# --------------------------------------------------------------------------- the served model

class ServedModel:
    """A key network run by ONNX Runtime; :meth:`predict_probs` is the one way to use it."""

    def __init__(self, info: ModelInfo, *, threads: int = 1):
        os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(info.onnx_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ModelError(f"cannot load model {info.onnx_path}: {type(exc).__name__}: {exc}") from None
        self._input = self._session.get_inputs()[0].name
        self.info = info
        self.path = info.onnx_path
        self.card = dict(info.card)
        self.version = info.version
        self.feature_version = info.feature_version
        self.frames_per_step = info.frames_per_step
        self.temperature = info.temperature
        self.calibration = info.calibration
        self.threads = options.intra_op_num_threads

    def __repr__(self) -> str:
        return f"ServedModel({self.version!r}, feature_version={self.feature_version!r})"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: x})[0]

    def predict_probs(self, chromas: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """Key probabilities of each chroma tensor.

        Parameters
        ----------
        chromas : sequence of np.ndarray, each (rows, n_frames >= 1)
            ``rows`` of the model's feature version (12 or 24). Any lengths: each track is
            averaged into 1-s steps and run at its own number of steps (tracks of equal
            length in one call); see the module docstring.
        batch_size : int
            Most tracks per network call.

        Returns
        -------
        np.ndarray, shape (n, 24), float32
            Calibrated at each track's length (:func:`temperatures`); rows sum to 1;
            columns in :mod:`keylib.keys` index order.

        Raises
        ------
        ValueError
            when a tensor is not (rows, n_frames >= 1).
        """
        check_rows(chromas, self.feature_version)
        steps = [to_steps(c, self.frames_per_step) for c in chromas]
        return calibrate(predict_by_length(steps, self._run, batch_size=batch_size),
                         temperatures(track_seconds(chromas), self.calibration))

    def predict_keys(self, chromas: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """Index (0..23) of the most probable key of each chroma tensor."""
        return self.predict_probs(chromas, batch_size=batch_size).argmax(axis=1)


def load_model(path: str | Path | None = None, *, threads: int | None = None) -> ServedModel:
    """The served model at ``path`` (``.onnx``, or its ``.keras``/``.json`` sibling);
    ``None`` = the shipped model.

    Cached per process, path and thread count, so a Spark Python worker loads it once.
    ``threads``: ONNX Runtime's intra-op threads; default 1 (Spark runs one task per core).

    Raises
    ------
    ModelError
        see :func:`model_info`; also when ONNX Runtime cannot load the file.
    """
    info = model_info(path)
    return _load_cached(str(info.onnx_path), max(1, int(threads or 1)))


@functools.lru_cache(maxsize=8)
def _load_cached(onnx_path: str, threads: int) -> ServedModel:
    return ServedModel(model_info(onnx_path), threads=threads)

