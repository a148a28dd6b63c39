"""Quantizing an anomaly model: the LSTM as PTQ does it, the prediction head
rescaled to predict the next int8 input (Q.12), per-channel error weights and
the threshold calibrated on held-back normal data, all stored in the blob.
"""
from __future__ import annotations

import numpy as np

from ..blob import AnomalyHead, QuantModel
from ..errors import UserError
from ..learn.anomaly import AnomalyMeta
from ..learn.model import FloatModel
from ..reference import anomaly as ref
from ..reference.inputs import model_inputs
from ..reference.lstm import IntegerLSTM
from .ptq import H_SCALE, _quant_head, quantize


def prediction_head(model: FloatModel, qm: QuantModel):
    """The float head predicts the normalized next frame z; the board's head
    predicts its int8 input x_q = (z * std + mean) / scale + zero directly."""
    if qm.h_bits != 8:  # its head and scorer are the 8-bit state's (docs/arithmetic.md, "Anomaly score")
        raise UserError("an anomaly model keeps an 8-bit hidden state (16 bits are for classifiers)")
    scale = qm.inputs.scale.astype(np.float64)
    zero = qm.inputs.zero.astype(np.float64)
    gain = model.std / scale
    w = model.head_w * gain[:, None]
    b = model.head_b * gain + model.mean / scale + zero
    return _quant_head(w * H_SCALE, b)


def channel_weights(errors: np.ndarray) -> np.ndarray:
    """Q.6 weights that even out the channels' typical prediction error on
    normal data (a channel that is always hard to predict does not dominate)."""
    per = np.maximum(errors.mean(axis=0), 1e-3)
    return np.clip(np.round(64 * per.mean() / per), 1, 255).astype(np.int32)


def calibrate(qm: QuantModel, held: list[np.ndarray], meta: AnomalyMeta) -> AnomalyHead:
    """Weights from the channel errors, then the threshold: quantile x margin of
    the smoothed score over held-back normal streams (first window excluded:
    the average starts from zero)."""
    if not held or sum(len(s) for s in held) < 2 * meta.window:
        raise UserError(f"anomaly calibration needs at least {2 * meta.window} held-back normal steps")
    engine = IntegerLSTM(qm)
    parts = []
    for x in held:
        x_q = model_inputs(qm, x)
        pred = ref.predictions(qm, x_q, meta.window, engine)
        diff = np.minimum(np.abs(pred[:-1] - (x_q[1:].astype(np.int64) << 12)) >> ref.ERR_SHIFT, ref.ERR_CAP)
        ok = ref.scored(len(x_q), meta.window, meta.warmup)[1:]
        parts.append((x_q, pred, diff[ok]))
    weights = channel_weights(np.concatenate([d for _, _, d in parts]).astype(np.float64))
    shift = meta.smooth_shift
    tail = []
    for x_q, pred, _ in parts:
        score = ref.smooth(ref.step_errors(pred, x_q, weights),
                           ref.scored(len(x_q), meta.window, meta.warmup), shift)
        tail.append(score[min(len(score) - 1, meta.window):])
    normal = np.concatenate(tail)
    threshold = max(1, int(np.ceil(np.quantile(normal, meta.quantile) * meta.margin)))
    return AnomalyHead(weights, threshold, shift, meta.window, meta.warmup)


def quantize_anomaly(model: FloatModel, meta: AnomalyMeta, calib: np.ndarray, held: list[np.ndarray],
                     frontend=None) -> QuantModel:
    """calib: windows [n, T, C] for the LSTM's ranges; held: normal streams the
    model never trained on, for the weights and the threshold. With a front-end
    the inputs are its int16 features, fed as they are (one count per unit)."""
    unit = None if frontend is None else np.ones(model.n_inputs)
    qm = quantize(model, calib, raw_per_unit=unit, headroom=meta.headroom)
    qm.frontend = frontend
    qm.head = prediction_head(model, qm)
    qm.class_names = []
    qm.anomaly = calibrate(qm, held, meta)
    return qm


def quantize_from_data(model: FloatModel, meta: AnomalyMeta, frontend, path, settings,
                       calib_windows: int = 500) -> QuantModel:
    """Normal recordings -> the blob's model: the LSTM calibrated on the part
    training used, the threshold on the part it held back (the same split)."""
    from ..learn.anomaly import normal_streams, sensor_frames, split_held_back, training_windows

    streams, _ = normal_streams(path, settings.sensor.rate_hz)
    frames = [f for f in (sensor_frames(s, frontend)[0] for s in streams) if len(f)]
    if not frames or frames[0].shape[1] != model.n_inputs:
        got = frames[0].shape[1] if frames else 0
        raise UserError(f"{path}: {got} input channels per step, the model takes {model.n_inputs}")
    train_part, held = split_held_back(frames)
    calib = training_windows(train_part, meta.window, limit=calib_windows)[:, :-1]
    return quantize_anomaly(model, meta, calib, held, frontend)
