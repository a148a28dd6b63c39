"""Integer sigmoid / tanh / exp tables with linear interpolation.

Input: a Q3.12 int16 (real value v / 4096, so [-8, 8)). Output: Q0.15 int16.
The 16-bit input range is cut into 2**(16 - LUT_SHIFT) equal segments; a table
holds the function at every segment edge (one more entry than segments), and the
value between two edges is interpolated with integer arithmetic only.
"""
from __future__ import annotations

import numpy as np

GATE_FRAC = 12  # gate pre-activations are Q3.12
OUT_FRAC = 15  # sigmoid / tanh outputs are Q0.15
LUT_SHIFT = 7  # segment width 2**7 in Q3.12 units = 1/32: 513 entries per table
Q15_ONE = 1 << OUT_FRAC


def _table(fn, lut_shift: int) -> np.ndarray:
    edges = np.arange(-32768, 32768 + 1, 1 << lut_shift, dtype=np.float64) / (1 << GATE_FRAC)
    values = np.round(fn(edges) * Q15_ONE)
    return np.clip(values, -(Q15_ONE - 1), Q15_ONE - 1).astype(np.int16)


def sigmoid_table(lut_shift: int = LUT_SHIFT) -> np.ndarray:
    return _table(lambda v: 1.0 / (1.0 + np.exp(-v)), lut_shift)


def tanh_table(lut_shift: int = LUT_SHIFT) -> np.ndarray:
    return _table(np.tanh, lut_shift)


def exp_table(lut_shift: int = LUT_SHIFT) -> np.ndarray:
    """exp(v) for v <= 0 (used by the window score); 1.0 saturates to 32767."""
    return _table(lambda v: np.exp(np.minimum(v, 0.0)), lut_shift)


def lookup(table: np.ndarray, q312, lut_shift: int = LUT_SHIFT):
    """Interpolated table value at q312 (int16 range, int or int64 array)."""
    u = np.asarray(q312, dtype=np.int64) + 32768
    idx = u >> lut_shift
    frac = u & ((1 << lut_shift) - 1)
    t = table.astype(np.int64)
    lo = t[idx]
    # idx + 1 never passes the last entry: u <= 65535 < 65536 = last edge
    hi = t[idx + 1]
    return lo + (((hi - lo) * frac + (1 << (lut_shift - 1))) >> lut_shift)
