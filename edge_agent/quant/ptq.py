"""Post-training quantization: float model + calibration windows -> QuantModel.

Scheme (docs/arithmetic.md): int8 inputs per channel (asymmetric, normalisation
folded in), int8 weights with one scale per output row, int32 accumulators
rescaled by an integer multiplier and a rounding shift whose widths are proven
from the actual weights to keep every product inside int32, Q3.12 gate
pre-activations, Q0.15 sigmoid/tanh from tables, int16 cell state with a
power-of-two scale from calibration, int8 hidden state with scale 2**-7 or,
with h_bits=16, int16 with scale 2**-15 (each accumulator of int16 inputs then
takes a rounding pre-shift before its multiplier: fixedpoint.choose_prescaled_multiplier);
with x_bits=16 as well (state format 2), layer 0's inputs are int16 too.
"""
from __future__ import annotations

import math

import numpy as np

from ..blob import INPUT_BITS, STATE_BITS, InputQuant, QuantHead, QuantLayer, QuantModel, WIDE_MAX_HIDDEN, h_scale
from ..errors import UserError
from ..learn.model import FloatModel, Trace, valid_steps
from .fixedpoint import choose_input_multiplier, choose_multiplier, choose_prescaled_multiplier
from .lut import GATE_FRAC, LUT_SHIFT, exp_table, sigmoid_table, tanh_table

H_SCALE = 2.0**-7  # of the 8-bit state (the default); h_scale(h_bits) in general
GATE_LIMIT = 32768  # |Q3.12| where a gate pre-activation saturates
OUT_FRAC = GATE_FRAC  # logits share the gates' Q.12 format: the score needs no rescale
GATE_NAMES = ("input", "forget", "cell", "output")
# how the calibrated ranges (int8 inputs, the int16 cell's format) are chosen:
# the extremes; a percentile (PERCENTILE % clipped at each end); or, per channel
# and per layer, the candidate with the least mean squared quantization error
CALIBRATIONS = ("minmax", "percentile", "mse")
PERCENTILE = 0.01
MSE_CLIPS = (0.0, 0.001, 0.01, 0.1, 1.0)  # percent clipped at each end: the candidates mse tries


def quantize(model: FloatModel, calib: np.ndarray, lengths: np.ndarray | None = None,
             raw_per_unit: np.ndarray | None = None, headroom: float = 1.0,
             calibration: str = "minmax", bias_correction: bool = False, h_bits: int = 8,
             x_bits: int = 8) -> QuantModel:
    """Quantize `model` using calibration windows calib [n, T, C] of raw values;
    headroom > 1 widens the int8 input range around the calibrated one (an anomaly
    model must see values normal data never reached); calibration: CALIBRATIONS.
    bias_correction: subtract from each gate's bias the mean error that int8
    weights make on the calibration inputs and states (a constant error in a
    gate is integrated by the cell over a long window). h_bits: the hidden
    state's width, 8 (int8, 2**-7) or 16 (int16, 2**-15; docs/arithmetic.md).
    x_bits: layer 0's inputs, 8 or, with a 16-bit state, 16 (int16 per channel
    over the calibrated range: 257 times finer steps: 65535 over the range instead of 255)."""
    if calibration not in CALIBRATIONS:
        raise UserError(f"calibration {calibration!r}: choose from {', '.join(CALIBRATIONS)}")
    if h_bits not in STATE_BITS:
        raise UserError(f"hidden state width {h_bits!r}: choose from {', '.join(map(str, sorted(set(STATE_BITS))))}")
    if x_bits not in INPUT_BITS:
        raise UserError(f"input width {x_bits!r}: choose from {', '.join(map(str, sorted(set(INPUT_BITS))))}")
    if x_bits == 16 and h_bits != 16:
        raise UserError("int16 inputs come with a 16-bit hidden state (--state-bits 16)")
    if h_bits == 16 and model.hidden > WIDE_MAX_HIDDEN:
        raise UserError(f"a 16-bit state takes at most {WIDE_MAX_HIDDEN} hidden units; the model has {model.hidden}")
    if x_bits == 16 and model.n_inputs > WIDE_MAX_HIDDEN:
        raise UserError(f"int16 inputs take at most {WIDE_MAX_HIDDEN} channels; the model has {model.n_inputs}")
    hs = h_scale(h_bits)
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim != 3 or calib.shape[2] != model.n_inputs:
        raise UserError(f"calibration data has shape {calib.shape}, expected [n, T, {model.n_inputs}]")
    if len(calib) == 0:
        raise UserError("calibration data is empty")
    trace = Trace()
    model.forward(calib, lengths, trace)
    valid = valid_steps(calib.shape[0], calib.shape[1], lengths)

    inputs, in_scale, in_zero = input_quant(calib[valid], raw_per_unit, headroom, calibration, x_bits)
    x_top = 1 << (x_bits - 1)
    layers = []
    for k, layer in enumerate(model.layers):
        if k == 0:  # fold (x - mean) / std into the first layer
            w_x = layer.w_ih / model.std
            bias = layer.b_ih + layer.b_hh - w_x @ model.mean
            w_x = w_x * in_scale  # per-channel input scale moves into the columns
            zero = in_zero
            # subtract the mean through the int8 weights the inputs will meet, not the float
            # ones: otherwise (w_int8 - w) @ mean / std is a constant error in every gate,
            # which the cell integrates over a long window (large when |mean| >> std)
            q, s = row_quant(w_x, bias, x_bits)
            bias = layer.b_ih + layer.b_hh - (q * s[:, None] / in_scale) @ model.mean
        else:
            w_x, bias, zero = layer.w_ih * hs, layer.b_ih + layer.b_hh, None
        in_bits = x_bits if k == 0 else h_bits
        cmax = cell_peak(trace.cell[k][valid], calibration)
        if bias_correction:
            if k == 0:  # the input levels the board computes, centred as the fold above
                x_in = np.clip(np.round(calib[valid] / in_scale) + in_zero, -x_top, x_top - 1) - in_zero \
                    - model.mean / in_scale
            else:
                x_in = trace.hidden[k - 1][valid] / hs
            h_seq = trace.hidden[k]
            h_in = np.concatenate([np.zeros_like(h_seq[:, :1]), h_seq[:, :-1]], axis=1)[valid] / hs
            bias = bias - _weight_error(w_x, bias, x_in.mean(axis=0), in_bits) \
                - _weight_error(layer.w_hh * hs, None, h_in.mean(axis=0), h_bits)
        layers.append(_quant_layer(k, w_x, bias, zero, layer.w_hh * hs, cmax, in_bits, h_bits))
    head = _quant_head(model.head_w * hs, model.head_b, h_bits)
    return QuantModel(inputs, layers, head, sigmoid_table(), tanh_table(), exp_table(),
                      LUT_SHIFT, model.labels(), model.fingerprint(), h_bits=h_bits, x_bits=x_bits)


def input_quant(samples: np.ndarray, raw_per_unit=None, headroom: float = 1.0,
                calibration: str = "minmax", bits: int = 8) -> tuple[InputQuant, np.ndarray, np.ndarray]:
    """Per-channel asymmetric int8 (or int16: bits) over the calibration range of
    the raw values (widened `headroom` times around its middle)."""
    steps = (1 << bits) - 1
    lo, hi = input_range(samples, calibration, steps)
    if headroom != 1.0:
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * headroom
        lo, hi = mid - half, mid + half
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = span / steps
    zero = np.round(-(1 << (bits - 1)) - lo / scale).astype(np.int64)
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
    # the input the board computes is x_q = round(x / scale) + zero
    inputs = InputQuant(raw_per_unit.astype(np.float32), np.array(mult, np.int32),
                        np.array(bias, np.int32), np.array(shift, np.uint8),
                        scale.astype(np.float32), zero.astype(np.int32))
    return inputs, scale, zero


def input_range(samples: np.ndarray, calibration: str = "minmax",
                steps: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) of samples [N, C] that the inputs' `steps` span (see CALIBRATIONS)."""
    if calibration == "minmax" or len(samples) == 0:
        return samples.min(axis=0), samples.max(axis=0)
    if calibration == "percentile":
        return tuple(np.percentile(samples, [PERCENTILE, 100 - PERCENTILE], axis=0))
    best_lo, best_hi, best_err = samples.min(axis=0), samples.max(axis=0), np.full(samples.shape[1], np.inf)
    for clip in MSE_CLIPS:
        lo, hi = np.percentile(samples, [clip, 100 - clip], axis=0)
        scale = np.where(hi - lo > 0, hi - lo, 1.0) / steps
        q = np.clip(np.round((samples - lo) / scale), 0, steps) * scale + lo
        err = ((q - samples) ** 2).mean(axis=0)
        better = err < best_err
        best_lo, best_hi, best_err = np.where(better, lo, best_lo), np.where(better, hi, best_hi), np.minimum(err, best_err)
    return best_lo, best_hi


def cell_peak(cells: np.ndarray, calibration: str = "minmax") -> float:
    """The |c| the int16 cell format must hold (see CALIBRATIONS): past it, the
    board's cell saturates."""
    mag = np.abs(np.asarray(cells, dtype=np.float64)).ravel()
    if len(mag) == 0:
        return 0.0
    peak = float(mag.max())
    if calibration == "percentile":
        return float(np.percentile(mag, 100 - PERCENTILE))
    if calibration == "mse":  # the max's format, or one or two fraction bits finer
        frac = cell_frac(peak)
        errs = []
        for f in range(frac, min(frac + 2, 15) + 1):
            step = 2.0 ** f
            errs.append((float(((np.clip(np.round(mag * step), 0, 32767) / step - mag) ** 2).mean()), f))
        f = min(errs)[1]
        return 32767 / 2.0 ** f
    return peak


def _weight_error(w: np.ndarray, bias, mean_in: np.ndarray, in_bits: int = 8) -> np.ndarray:
    """Per row, the mean of (int8 weights - float weights) @ input: what row_quant
    adds to the pre-activation on average."""
    q, scale = row_quant(w, bias, in_bits)
    return (q * scale[:, None] - w) @ mean_in


def bias_bits(in_bits: int) -> int:
    """log2 of the largest |bias| in accumulator units: 2**24 beside int8 inputs
    (as always), 2**28 beside int16 ones, whose accumulators are 256 times larger;
    both leave room in int32 for the weights' part (docs/arithmetic.md)."""
    return 24 if in_bits == 8 else 28


def row_quant(w: np.ndarray, bias: np.ndarray | None = None, in_bits: int = 8):
    """Symmetric int8 per output row; the scale also keeps a large bias representable
    (in accumulator units of in_bits inputs: bias_bits)."""
    peak = np.abs(w).max(axis=1)
    scale = peak / 127.0
    if bias is not None:
        scale = np.maximum(scale, np.abs(bias) / 2.0 ** bias_bits(in_bits))
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int64)
    return q, scale


def _multipliers(reals: np.ndarray, bounds: np.ndarray, where, h_bits: int = 8, out_limit=None):
    """One (multiplier, shift) per row, and in a 16-bit-state model a pre-shift
    per row (else None); where(row) names the row in an error."""
    mults, shifts, pres = [], [], []
    for row, (real, bound) in enumerate(zip(reals, bounds)):
        if h_bits == 8:
            p, (m, s) = 0, choose_multiplier(float(real), int(bound), where(row))
        else:
            p, m, s = choose_prescaled_multiplier(float(real), int(bound), where(row), out_limit)
        mults.append(m), shifts.append(s), pres.append(p)
    return np.array(mults, np.int32), np.array(shifts, np.uint8), \
        None if h_bits == 8 else np.array(pres, np.uint8)


def gate_of(row: int, hidden: int) -> str:
    return f"gate {GATE_NAMES[row // hidden]} unit {row % hidden}"


def _quant_layer(k, w_x, bias, zero, w_h, cmax, x_bits: int = 8, h_bits: int = 8) -> QuantLayer:
    """x_bits, h_bits: the width of the layer's inputs (int8 for layer 0) and state.
    With a 16-bit state every accumulator takes a pre-shift (0 where none helps)."""
    hidden = w_h.shape[1]
    wx, sx_real = row_quant(w_x, bias, x_bits)
    bx = np.round(bias / sx_real).astype(np.int64)
    if zero is not None:  # x = scale * (x_q - zero): the zero-point term is a constant
        bx = bx - wx @ zero
    # the proof: the largest |acc| each row can reach, from the weights actually stored
    bound_x = np.abs(bx) + (1 << (x_bits - 1)) * np.abs(wx).sum(axis=1)
    wh, sh_real = row_quant(w_h)
    bound_h = (1 << (h_bits - 1)) * np.abs(wh).sum(axis=1)
    mx, sx, px = _multipliers(sx_real * 2.0**GATE_FRAC, bound_x,
                              lambda row: f"layer {k} {gate_of(row, hidden)} input accumulator",
                              h_bits, GATE_LIMIT)
    mh, sh, ph = _multipliers(sh_real * 2.0**GATE_FRAC, bound_h,
                              lambda row: f"layer {k} {gate_of(row, hidden)} recurrent accumulator",
                              h_bits, GATE_LIMIT)
    return QuantLayer(wx.astype(np.int8), wh.astype(np.int8), bx.astype(np.int32), mx, sx,
                      mh, sh, cell_frac(cmax), px, ph)


def cell_frac(cmax: float) -> int:
    """Fraction bits of the int16 cell: the most that keep the calibrated peak."""
    return 15 if cmax <= 0 else int(np.clip(math.floor(math.log2(32767 / cmax)), 0, 15))


def _quant_head(w, bias, h_bits: int = 8) -> QuantHead:
    wq, s_real = row_quant(w, bias, h_bits)
    bq = np.round(bias / s_real).astype(np.int64)
    bound = np.abs(bq) + (1 << (h_bits - 1)) * np.abs(wq).sum(axis=1)
    m, s, p = _multipliers(s_real * 2.0**OUT_FRAC, bound, lambda row: f"head class {row}", h_bits)
    return QuantHead(wq.astype(np.int8), bq.astype(np.int32), m, s, OUT_FRAC, p)
