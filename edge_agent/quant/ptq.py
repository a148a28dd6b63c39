"""Post-training quantization: float model + calibration windows -> QuantModel.

Scheme (docs/arithmetic.md): int8 inputs per channel (asymmetric, normalisation
folded in), int8 weights with one scale per output row, int32 accumulators
rescaled by an integer multiplier and a rounding shift whose widths are proven
from the actual weights to keep every product inside int32, Q3.12 gate
pre-activations, Q0.15 sigmoid/tanh from tables, int16 cell state with a
power-of-two scale from calibration, int8 hidden state with scale 2**-7.
"""
from __future__ import annotations

import math

import numpy as np

from ..blob import InputQuant, QuantHead, QuantLayer, QuantModel
from ..errors import UserError
from ..learn.model import FloatModel, Trace, valid_steps
from .fixedpoint import choose_input_multiplier, choose_multiplier
from .lut import GATE_FRAC, LUT_SHIFT, exp_table, sigmoid_table, tanh_table

H_SCALE = 2.0**-7
X_BOUND = 128  # |int8| at most
OUT_FRAC = GATE_FRAC  # logits share the gates' Q.12 format: the score needs no rescale
GATE_NAMES = ("input", "forget", "cell", "output")


def quantize(model: FloatModel, calib: np.ndarray, lengths: np.ndarray | None = None,
             raw_per_unit: np.ndarray | None = None) -> QuantModel:
    """Quantize `model` using calibration windows calib [n, T, C] of raw values."""
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim != 3 or calib.shape[2] != model.n_inputs:
        raise UserError(f"calibration data has shape {calib.shape}, expected [n, T, {model.n_inputs}]")
    if len(calib) == 0:
        raise UserError("calibration data is empty")
    trace = Trace()
    model.forward(calib, lengths, trace)
    valid = valid_steps(calib.shape[0], calib.shape[1], lengths)

    inputs, in_scale, in_zero = input_quant(calib[valid], raw_per_unit)
    layers = []
    for k, layer in enumerate(model.layers):
        if k == 0:  # fold (x - mean) / std into the first layer
            w_x = layer.w_ih / model.std
            bias = layer.b_ih + layer.b_hh - w_x @ model.mean
            w_x = w_x * in_scale  # per-channel input scale moves into the columns
            zero = in_zero
        else:
            w_x, bias, zero = layer.w_ih * H_SCALE, layer.b_ih + layer.b_hh, None
        cmax = float(np.abs(trace.cell[k][valid]).max(initial=0.0))
        layers.append(_quant_layer(k, w_x, bias, zero, layer.w_hh * H_SCALE, cmax))
    head = _quant_head(model.head_w * H_SCALE, model.head_b)
    return QuantModel(inputs, layers, head, sigmoid_table(), tanh_table(), exp_table(),
                      LUT_SHIFT, model.labels(), model.fingerprint())


def input_quant(samples: np.ndarray, raw_per_unit=None) -> tuple[InputQuant, np.ndarray, np.ndarray]:
    """Per-channel asymmetric int8 over the calibration range of the raw values."""
    lo, hi = samples.min(axis=0), samples.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = span / 255.0
    zero = np.round(-128 - lo / scale).astype(np.int64)
    if raw_per_unit is None:  # power of two: calibration peak lands near 2**14, half of int16
        peak = np.maximum(np.abs(lo), np.abs(hi))
        exponent = np.floor(np.log2(16384.0 / np.where(peak > 0, peak, 1.0)))
        raw_per_unit = 2.0 ** np.clip(exponent, -24, 24)
    raw_per_unit = np.asarray(raw_per_unit, dtype=np.float64)
    mult, bias, shift = [], [], []
    for c in range(len(scale)):
        m, b, s = choose_input_multiplier(1.0 / (raw_per_unit[c] * scale[c]), int(zero[c]),
                                          f"input channel {c}")
        mult.append(m), bias.append(b), shift.append(s)
    # the int8 value the board computes is x_q = round(x / scale) + zero
    inputs = InputQuant(raw_per_unit.astype(np.float32), np.array(mult, np.int32),
                        np.array(bias, np.int32), np.array(shift, np.uint8),
                        scale.astype(np.float32), zero.astype(np.int32))
    return inputs, scale, zero


def row_quant(w: np.ndarray, bias: np.ndarray | None = None):
    """Symmetric int8 per output row; the scale also keeps a large bias representable."""
    peak = np.abs(w).max(axis=1)
    scale = peak / 127.0
    if bias is not None:
        scale = np.maximum(scale, np.abs(bias) / 2.0**24)
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int64)
    return q, scale


def _multipliers(reals: np.ndarray, bounds: np.ndarray, where):
    """One (multiplier, shift) per row; where(row) names the row in an error."""
    mults, shifts = [], []
    for row, (real, bound) in enumerate(zip(reals, bounds)):
        m, s = choose_multiplier(float(real), int(bound), where(row))
        mults.append(m), shifts.append(s)
    return np.array(mults, np.int32), np.array(shifts, np.uint8)


def gate_of(row: int, hidden: int) -> str:
    return f"gate {GATE_NAMES[row // hidden]} unit {row % hidden}"


def _quant_layer(k, w_x, bias, zero, w_h, cmax) -> QuantLayer:
    hidden = w_h.shape[1]
    wx, sx_real = row_quant(w_x, bias)
    bx = np.round(bias / sx_real).astype(np.int64)
    if zero is not None:  # x = scale * (x_q - zero): the zero-point term is a constant
        bx = bx - wx @ zero
    # the proof: the largest |acc| each row can reach, from the weights actually stored
    bound_x = np.abs(bx) + X_BOUND * np.abs(wx).sum(axis=1)
    wh, sh_real = row_quant(w_h)
    bound_h = X_BOUND * np.abs(wh).sum(axis=1)
    mx, sx = _multipliers(sx_real * 2.0**GATE_FRAC, bound_x,
                          lambda row: f"layer {k} {gate_of(row, hidden)} input accumulator")
    mh, sh = _multipliers(sh_real * 2.0**GATE_FRAC, bound_h,
                          lambda row: f"layer {k} {gate_of(row, hidden)} recurrent accumulator")
    return QuantLayer(wx.astype(np.int8), wh.astype(np.int8), bx.astype(np.int32), mx, sx,
                      mh, sh, cell_frac(cmax))


def cell_frac(cmax: float) -> int:
    """Fraction bits of the int16 cell: the most that keep the calibrated peak."""
    return 15 if cmax <= 0 else int(np.clip(math.floor(math.log2(32767 / cmax)), 0, 15))


def _quant_head(w, bias) -> QuantHead:
    wq, s_real = row_quant(w, bias)
    bq = np.round(bias / s_real).astype(np.int64)
    bound = np.abs(bq) + X_BOUND * np.abs(wq).sum(axis=1)
    m, s = _multipliers(s_real * 2.0**OUT_FRAC, bound, lambda row: f"head class {row}")
    return QuantHead(wq.astype(np.int8), bq.astype(np.int32), m, s, OUT_FRAC)
