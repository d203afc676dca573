"""Training of the key networks: transposition augmentation (:mod:`.batches`), early
stopping on a validation split held out by piece and source (:mod:`.data`), fixed seeds,
then calibration and the tonality classifier fitted on validation (:mod:`.calibration`)
and the held-out scores (:mod:`.scores`), all in the model card.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .. import mirex
from ..mirex import calibration_error
from ..serving import calibrate, temperatures, track_seconds
from ..tensors import excerpt
from .batches import batches
from .calibration import fit_calibration, fit_card_tonality
from .data import counts
from .scores import evaluate_heldout, mirex_summary, predict_exact
from .settings import TrainConfig, network_shape

__all__ = ["train_model", "transfer_weights", "WeightAverage"]


def train_model(train_df, val_df, cfg: TrainConfig, *, heldout_df=None, atonal_df=None,
                out_dir: Path | None = None, log=print, refit: tuple[object, dict] | None = None,
                init_from: tuple[object, dict] | None = None) -> tuple[object, dict]:
    """Train ``cfg.arch`` on ``train_df``; early stopping on the validation MIREX score.

    With ``refit`` (a trained network and its card) nothing is trained: the network keeps
    its weights and everything fitted on validation (calibration, tonality classifier,
    scores) is fitted again on this data, e.g. after a feature change that leaves most
    tensors as they were; the card keeps the network's training record under ``training``
    and says where it came from under ``refit``.

    With ``init_from`` (a trained network of the same architecture and shape, and its card)
    training starts from that network's weights (:func:`transfer_weights`: a 12-row network
    into a 24-row one starts as the same model, its bass weights zero); the card names it
    under ``training.initialised_from``.

    Validation scores each validation track whole and as its 30 s excerpt from 15 s
    (:func:`excerpt`), at the track's own length, as serving does; early stopping follows
    the mean of the two. The length-dependent softmax temperature that best calibrates the
    validation probabilities (music the network did not train on; :func:`fit_calibration`)
    goes into the card, and with
    ``atonal_df`` (music without a key) the tonality classifier of :mod:`keylib.tonality`.

    Returns (keras model, card). When ``out_dir`` is given, writes ``<name>.keras``, its
    served export ``<name>.onnx`` and the card ``<name>.json`` there.
    """
    from .networks import configure_tensorflow

    configure_tensorflow(cfg.threads)
    import keras

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net, card, fps = _network(cfg, refit, keras)
    if init_from is not None:
        transfer_weights(init_from[0], net)
    val_refs = np.asarray(val_df["key_index"]) if len(val_df) else np.zeros(0, int)
    val_sets = {"whole": list(val_df["chroma"]), "excerpt": [excerpt(c) for c in val_df["chroma"]]}
    t0 = time.time()
    history, best_epoch = ([], 0) if refit is not None else (  # a refit trains nothing
        _fit(net, train_df, val_refs, val_sets, cfg, fps, rng, log=log, t0=t0))
    # The trained network's validation probabilities, once: calibration, tonality and the groups read them.
    val_raw = {name: predict_exact(net, data, fps) for name, data in val_sets.items()} if len(val_df) else {}
    calibration = _fit_on_validation(net, card, val_refs, val_sets, val_raw, fps, atonal_df) if len(val_df) else {}
    val_ests = {name: probs.argmax(1) for name, probs in val_raw.items()}
    for column, entry in (("soundfont", "by_sound_source"), ("source", "by_source")):
        if len(val_df) and column in val_df:
            card["validation"][entry] = _validation_by(val_df[column], val_refs, val_ests)
    card.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": int(net.count_params()),
        "training": (_training_record(cfg, history, best_epoch, t0, init_from) if refit is None
                     else refit[1].get("training", {})),
        "data": {
            "train": counts(train_df), "validation": counts(val_df),
            "heldout": counts(heldout_df) if heldout_df is not None else {},
            "validation_rule": f"whole pieces per source, crc32(split_seed|source|piece) < {cfg.val_fraction:.2f}, "
                               f"split_seed {cfg.split_seed}; rows of split 'validation' (the validation render)",
            "credits": _credits(train_df),
        },
    })
    if refit is not None:
        card["refit"] = {
            "from": refit[1].get("version"), "network_features": refit[1].get("feature_version"),
            "why": "weights kept; calibration, tonality classifier and scores fitted again on the data given",
        }
    if heldout_df is not None and len(heldout_df):
        card["heldout"] = evaluate_heldout(net, heldout_df, fps, calibration=calibration,
                                           tonality=card.get("tonality"))
    if out_dir is not None:
        _save(net, card, Path(out_dir), cfg.name)
    return net, card


def _credits(train_df) -> dict:
    """What the training data owes its sources (the licences that ask for credit)."""
    from .trainset.polish import CREDIT, POLISH_SOURCE

    credits = {"pop909": "POP909 (Wang, Chen, Jiang et al., ISMIR 2020): pop songs and key annotations",
               "music21": "music21's corpus: Bach chorales, string quartets, folk collections",
               POLISH_SOURCE: CREDIT + " (CC BY 4.0)"}
    sources = set(train_df["source"]) if len(train_df) else set()
    return {k: v for k, v in credits.items() if k == "music21" or k in sources}


def _network(cfg: TrainConfig, refit: tuple[object, dict] | None, keras) -> tuple[object, dict, int]:
    """The network to train (built and compiled, taking ``cfg.feature_version``'s rows) or to
    refit (:class:`~keylib.errors.ModelError` unless it takes those rows), the head of its
    card, and its frames per step."""
    from ..features import n_rows
    from .networks import ARCHITECTURES, FRAMES_PER_STEP, check_input_rows

    arch = str(refit[1].get("architecture", cfg.arch)) if refit is not None else cfg.arch
    fps = FRAMES_PER_STEP[arch]
    rows = n_rows(cfg.feature_version)
    if refit is not None:
        net = refit[0]
        check_input_rows(net, cfg.feature_version)
    else:
        net = ARCHITECTURES[arch](rows=rows, **network_shape(cfg))
        net.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    card = {
        "name": cfg.name,
        "version": cfg.version or f"{cfg.name}-{time.strftime('%Y.%m.%d')}",
        "architecture": arch,
        "feature_version": cfg.feature_version,
        "input": {"frames_per_step": fps, "min_steps": 1,
                  "layout": f"(batch, steps, {rows}) chroma averaged over frames_per_step frames; any number of steps"},
    }
    return net, card, fps


def _fit(net, train_df, val_refs: np.ndarray, val_sets: dict, cfg: TrainConfig, fps: int, rng: np.random.Generator,
         *, log, t0: float) -> tuple[list[dict], int]:
    """Train ``net`` epoch by epoch, scoring validation after each; leave it with the best
    epoch's weights. Returns the history and the best epoch."""
    chromas = list(train_df["chroma"])
    keys = np.asarray(train_df["key_index"])
    best = (-1.0, 0)
    best_weights = net.get_weights()
    average = WeightAverage(net, cfg.ema) if cfg.ema else None
    history = []
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for b, (x, y) in enumerate(batches(chromas, keys, cfg, fps, rng)):
            if cfg.max_steps_per_epoch and b >= cfg.max_steps_per_epoch:
                break
            losses.append(float(net.train_on_batch(x, y)))
            if average is not None:
                average.update()
        entry = {"epoch": epoch, "loss": float(np.mean(losses))}
        live = None
        if average is not None:  # validation scores (and early stopping keeps) the averaged weights
            live = net.get_weights()
            net.set_weights([w.astype(np.float32) for w in average.weights])
        score = _validate(net, val_refs, val_sets, fps, entry)
        history.append(entry)
        log(f"epoch {epoch:3d}  loss {entry['loss']:.4f}  val MIREX whole {entry.get('val_mirex_whole', score):.4f}  "
            f"excerpt {entry.get('val_mirex_excerpt', score):.4f}  ({time.time() - t0:.0f} s)")
        improved = not len(val_refs) or score > best[0] + 1e-4
        if improved:
            best = (score, epoch)
            best_weights = net.get_weights()
        if live is not None:
            net.set_weights(live)  # training goes on from the last step's weights
        if not improved and cfg.learning_rate_decay < 1.0 and (epoch - best[1]) % cfg.plateau_epochs == 0:
            rate = float(net.optimizer.learning_rate.numpy()) * cfg.learning_rate_decay
            net.optimizer.learning_rate.assign(rate)
            log(f"validation plateau: learning rate {rate:.2e}")
        if epoch - best[1] >= cfg.patience:
            log(f"early stop: best epoch {best[1]} (val MIREX {best[0]:.4f})")
            break
    net.set_weights(best_weights)
    return history, best[1]


def _validate(net, val_refs: np.ndarray, val_sets: dict, fps: int, entry: dict) -> float:
    """The epoch's validation score (the mean of whole tracks and their 30 s excerpts; NaN
    without validation), each also written into ``entry``."""
    if not len(val_refs):
        return float("nan")
    for name, data in val_sets.items():
        ests = predict_exact(net, data, fps).argmax(1)
        entry[f"val_mirex_{name}"] = mirex_summary(val_refs, ests)["both_fifths"]["weighted"]
    return (entry["val_mirex_whole"] + entry["val_mirex_excerpt"]) / 2


def _validation_by(column, val_refs: np.ndarray, val_ests: dict) -> dict:
    """Validation scores by a column of the validation tracks: ``soundfont`` (the card's
    ``by_sound_source``: the validation render's engine and sounds, which training never
    hears, say more about music played otherwise than the training soundfonts do, so
    candidates are chosen on them) or ``source`` (``by_source``: pop songs and classical
    scores weigh differently in a catalogue than in the validation mix). ``val_ests``: the
    estimated keys of each view (whole, excerpt) of the tracks.

    ``whole``, ``excerpt`` and their ``mean`` count fifths both ways; ``mean_fifth_up`` only
    upward (mir_eval's convention, which a trade of dominant for subdominant errors shows);
    ``errors`` counts the wrong keys of both views by kind (:func:`keylib.mirex.error_kind`)."""
    groups = np.asarray(column.fillna(""), dtype=str)
    out = {}
    for group in sorted(set(groups)):
        m = groups == group
        summaries = {name: mirex_summary(val_refs[m], e[m]) for name, e in val_ests.items()}
        scores = {name: s["both_fifths"]["weighted"] for name, s in summaries.items()}
        kinds = Counter(mirex.error_kind(int(r), int(e)) for ests in val_ests.values()
                        for r, e in zip(val_refs[m], ests[m]))
        out[group or "unknown"] = {
            "n": int(m.sum()), **scores, "mean": float(np.mean(list(scores.values()))),
            "mean_fifth_up": float(np.mean([s["ascending_fifths"]["weighted"] for s in summaries.values()])),
            "errors": {kind: kinds[kind] for kind in mirex.ERROR_KINDS}}
    return out


def _fit_on_validation(net, card: dict, val_refs: np.ndarray, val_sets: dict, val_raw: dict, fps: int,
                       atonal_df) -> dict:
    """Fit the calibration (and, with ``atonal_df``, the tonality classifier) on the
    validation tracks into ``card``, with the validation scores; returns the calibration.
    ``val_raw``: the network's uncalibrated probabilities of each view of ``val_sets``."""
    val_probs = np.concatenate(list(val_raw.values()))
    val_all = np.concatenate([val_refs, val_refs])
    val_seconds = np.concatenate([track_seconds(data) for data in val_sets.values()])
    calibration = fit_calibration(val_probs, val_all, val_seconds)
    card["validation"] = {name: mirex_summary(val_refs, probs.argmax(1)) for name, probs in val_raw.items()}
    card["calibration"] = {
        **calibration,
        "fitted_on": "validation split (pieces never trained on), whole tracks and 30 s excerpts; "
                     "minimum negative log-likelihood of a temperature that follows the track's length",
        "validation_ece_before": calibration_error(val_probs.max(1), val_probs.argmax(1) == val_all)["ece"],
        "validation_ece_after": calibration_error(
            calibrate(val_probs, temperatures(val_seconds, calibration)).max(1), val_probs.argmax(1) == val_all)["ece"],
    }
    if atonal_df is not None and len(atonal_df):
        card["tonality"] = fit_card_tonality(net, fps, val_sets, val_raw, atonal_df, calibration)
    return calibration


def _training_record(cfg: TrainConfig, history: list[dict], best_epoch: int, t0: float,
                     init_from: tuple[object, dict] | None = None) -> dict:
    """The card's ``training`` entry: the configuration, the epochs, how the data was
    augmented, and the network training started from, if any."""
    start = {} if init_from is None else {"initialised_from": {
        "version": init_from[1].get("version"), "feature_version": init_from[1].get("feature_version")}}
    return {**start,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "epochs_run": len(history), "best_epoch": best_epoch, "seconds": round(time.time() - t0, 1),
        "augmentation": "crops of 8-40 s and 40-600 s and whole tracks, each re-normalised as a track; "
                        "section loudness changes and fades; harmonic-content (timbre) changes; "
                        "transposition by 0-11 semitones (chroma rolled, tonic moved); audio augmented "
                        "at render time (level, EQ, reverb, noise, detuning)",
        "history": history,
    }


def transfer_weights(source, target) -> None:
    """Set ``target``'s weights to ``source``'s, layer by layer (networks of one architecture
    and shape). Where ``target`` reads more input bands (v3's 24 rows against v2's 12), the
    first layer's kernel gets ``source``'s weights for the first band and zeros for the others,
    so ``target`` on v3 chroma gives ``source``'s answers on v2 chroma (rows 0-11 are v2's):
    a warm start that adds the bass band without forgetting what ``source`` learnt.

    Raises
    ------
    ModelError
        when the layers do not match (another architecture or shape, or fewer bands).
    """
    from ..errors import ModelError

    layers = [[layer for layer in net.layers if layer.weights] for net in (source, target)]
    if len(layers[0]) != len(layers[1]) or any(len(a.weights) != len(b.weights) for a, b in zip(*layers)):
        raise ModelError(f"cannot start {target.name} from {source.name}: the layers differ")
    for src, dst in zip(*layers):
        weights = []
        for w, variable in zip(src.get_weights(), dst.weights):
            shape = tuple(variable.shape)
            extra = shape[2] - w.shape[2] if w.ndim == 4 and len(shape) == 4 else -1
            if w.shape != shape and not (extra > 0 and w.shape[:2] + w.shape[3:] == shape[:2] + shape[3:]):
                raise ModelError(f"cannot start {target.name} from {source.name}: layer {dst.name} "
                                 f"has weights {shape}, the source {w.shape}")
            weights.append(np.pad(w, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else w)  # bands: zeros
        dst.set_weights(weights)


def _save(net, card: dict, out_dir: Path, name: str) -> None:
    """``<name>.keras``, its served export ``<name>.onnx`` (what :mod:`keylib.serving` runs)
    and the card ``<name>.json`` in ``out_dir``."""
    from .networks import export_onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    net.save(str(out_dir / f"{name}.keras"))
    export_onnx(net, out_dir / f"{name}.onnx")
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=1))


class WeightAverage:
    """An exponential moving average of a network's weights, updated after each step.

    The decay ramps up as ``(1 + n) / (10 + n)`` towards ``decay`` (as TensorFlow's
    ExponentialMovingAverage with ``num_updates``), so early averages are not held at the
    initial weights. Averaged weights give steadier validation scores than the last step's
    (the validation split is small, and each step sees one random batch of crops).
    """

    def __init__(self, net, decay: float):
        self.net, self.decay, self.updates = net, float(decay), 0
        self.weights = [np.array(w, dtype=np.float64) for w in net.get_weights()]

    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, w in zip(self.weights, self.net.get_weights()):
            avg *= d
            avg += (1 - d) * w
