"""Sensor readings -> the model inputs the board computes (docs/arithmetic.md).

The board is fed raw int16 readings; the blob's per-channel multiplier, bias and
shift turn them into int8 inputs (int16 for a model of state format 2) with the
normalisation folded in.
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


def quantize_raw(raw: np.ndarray, inputs: InputQuant, bits: int = 8) -> np.ndarray:
    """Raw int16 readings -> `bits`-wide model inputs (per channel, integer only)."""
    raw = np.clip(np.asarray(raw, dtype=np.int64), RAW_MIN, RAW_MAX)
    acc = raw * inputs.mult.astype(np.int64) + inputs.bias.astype(np.int64)
    check_int32(acc, "input quantization")
    top = 1 << (bits - 1)
    return np.clip(acc >> inputs.shift.astype(np.int64), -top, top - 1)


def model_inputs(qmodel: QuantModel, x: np.ndarray) -> np.ndarray:
    """Float windows in sensor units -> the integer inputs the board computes
    (int8, or int16 for a model that takes them)."""
    return quantize_raw(to_raw(x, qmodel.inputs), qmodel.inputs, qmodel.x_bits)


def as_inputs(x_q, bits: int = 8) -> np.ndarray:
    """Model inputs as int8 (or int16 for bits=16), refusing values that width cannot hold."""
    x = np.asarray(x_q)
    top = 1 << (bits - 1)
    if x.size and (x.min() < -top or x.max() > top - 1):
        raise ValueError(f"model inputs must be int{bits} ({-top}..{top - 1})")
    return x.astype(np.int8 if bits == 8 else np.int16, copy=False)
