"""Sensor readings -> the int8 inputs the board computes (docs/arithmetic.md).

The board is fed raw int16 readings; the blob's per-channel multiplier, bias and
shift turn them into int8 inputs with the normalisation folded in.
"""
from __future__ import annotations

import numpy as np

from ..blob import InputQuant, QuantModel
from ..quant.fixedpoint import check_int32

RAW_MIN, RAW_MAX = -32768, 32767  # raw readings are int16, like the sensors' registers


def to_raw(x: np.ndarray, inputs: InputQuant) -> np.ndarray:
    """Float sensor values -> the integer readings a sensor would deliver."""
    scaled = np.asarray(x, dtype=np.float64) * inputs.raw_per_unit.astype(np.float64)
    return np.clip(np.floor(scaled + 0.5), RAW_MIN, RAW_MAX).astype(np.int64)


def quantize_raw(raw: np.ndarray, inputs: InputQuant) -> np.ndarray:
    """Raw int16 readings -> int8 model inputs (per channel, integer only)."""
    raw = np.clip(np.asarray(raw, dtype=np.int64), RAW_MIN, RAW_MAX)
    acc = raw * inputs.mult.astype(np.int64) + inputs.bias.astype(np.int64)
    check_int32(acc, "input quantization")
    return np.clip(acc >> inputs.shift.astype(np.int64), -128, 127)


def int8_inputs(qmodel: QuantModel, x: np.ndarray) -> np.ndarray:
    """Float windows in sensor units -> the int8 inputs the board computes."""
    return quantize_raw(to_raw(x, qmodel.inputs), qmodel.inputs)


def as_int8(x_q) -> np.ndarray:
    """Model inputs as int8, refusing values an int8 cannot hold."""
    x = np.asarray(x_q)
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError("model inputs must be int8 (-128..127)")
    return x.astype(np.int8, copy=False)
