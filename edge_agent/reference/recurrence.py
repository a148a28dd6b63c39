"""The integer LSTM's time loop: one layer's operands, laid out once for the
compiled kernel (_recurrence.c), and the call that runs it.

The kernel runs a layer over every timestep of a batch of windows, a few
windows at a time. Its matmuls are int8 x int8 sums, done by one of three
kernels that give equal sums (KERNELS): AVX-512 VNNI dot products where the
build has them, float32 when every partial sum provably stays below 2**24
(exact in any order), int32 otherwise. Its requantizations wrap in 32 bits only
after a per-row range check, computed here from the multiplier, shift and bias,
has proven the product fits int32; a value outside that range stops the run and
OverflowProofError names the layer (docs/arithmetic.md).

A model with a 16-bit state runs each layer through WideLayerKernel instead: a
plain int16 x int8 loop with the pre-shifts of docs/arithmetic.md, "16-bit
hidden state", checked against int32 as it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _recurrence
from ..blob import QuantLayer
from ..quant.fixedpoint import INT32_MAX, INT32_MIN, OverflowProofError

FLOAT32_EXACT = 2**24  # every integer up to this is a float32
ROW_ALIGN = 16  # rows padded to a whole number of the widest SIMD vector (16 lanes)
GATE_TABLE = 65536  # entries per full table (every Q3.12 input)

# rows of the per-row operand table, as enum P_* in _recurrence.c
P_MX, P_KX, P_SX, P_BASEX, P_SPANX, P_MH, P_KH, P_SH, P_BASEH, P_SPANH, P_OFF = range(11)
assert _recurrence.N_PARAMS == 11

# the matmul kernels this build has, by name
KERNELS = {"int32": _recurrence.KERNEL_INT32, "float32": _recurrence.KERNEL_FLOAT32}
if _recurrence.HAS_VNNI:
    KERNELS["vnni"] = _recurrence.KERNEL_VNNI


WIDE_PARAMS = ("bx", "px", "mx", "sx", "ph", "mh", "sh", "gate offset")  # WideLayerKernel's rows: enum W_*
assert _recurrence.N_WIDE == len(WIDE_PARAMS)


def accumulator_bound(w: np.ndarray, x_bound: int = 128) -> int:
    """Largest |sum_j w[r, j] * x_j| over rows r and inputs |x_j| <= x_bound (int8: 128)."""
    return int(x_bound * np.abs(w.astype(np.int64)).sum(axis=1).max(initial=0))


def safe_accumulators(mult: int, half: int, bias: int) -> tuple[int, int]:
    """[lo, hi]: the accumulators acc with |(acc + bias) * mult + half| <= 2**31 - 1,
    as int32 (lo > hi when there are none). Exact integer arithmetic."""
    top, bottom = INT32_MAX - half, -INT32_MAX - half
    if mult > 0:
        lo, hi = -(-bottom // mult), top // mult
    elif mult < 0:
        lo, hi = -(-top // mult), bottom // mult
    else:  # the product is 0 whatever acc and bias are: every accumulator, or none
        return (INT32_MIN, INT32_MAX) if bottom <= 0 <= top else (INT32_MAX, INT32_MIN)
    lo, hi = max(lo - bias, INT32_MIN), min(hi - bias, INT32_MAX)
    return (lo, hi) if lo <= hi else (INT32_MAX, INT32_MIN)


def _quads(w: np.ndarray, rows: int) -> np.ndarray:
    """w int8 [4H, J] -> [ceil(J/4), rows, 4]: each row's four consecutive inputs
    side by side, the layout VNNI's 4-way dot product reads."""
    four_h, cols = w.shape
    out = np.zeros((-(-cols // 4) * 4, rows), np.int8)
    out[:cols, :four_h] = w.T
    return np.ascontiguousarray(out.reshape(-1, 4, rows).transpose(0, 2, 1))


def _requant_row(mult, shift, bias, offset, what: str) -> tuple[int, int, int, int, int]:
    """One row's (M, K, S, base, span) for requantize() in _recurrence.c: the
    kernel computes acc' * M + K for its sum acc' = acc + offset, after checking
    acc' - base <= span (unsigned), i.e. acc in the safe range [lo, hi]. All
    modulo 2**32 (exact; see there)."""
    mult, shift, bias, offset = int(mult), int(shift), int(bias), int(offset)
    half = 1 << (shift - 1)
    lo, hi = safe_accumulators(mult, half, bias)
    if lo > hi:
        raise OverflowProofError(f"{what} requantization: no accumulator fits int32")
    row = (mult, (bias - offset) * mult + half, shift, offset + lo, hi - lo)
    return tuple(v % 2**32 for v in row)


@dataclass(frozen=True)
class LayerKernel:
    """One layer, ready for the kernel: weights [n_in + H, rows] transposed and
    padded, and every per-row integer in one int32 table."""

    index: int
    n_in: int
    hidden: int
    rows: int  # 4 * hidden padded to ROW_ALIGN
    c_frac: int
    kernel: str  # a name from KERNELS
    w: np.ndarray
    params: np.ndarray

    @classmethod
    def of(cls, k: int, layer: QuantLayer, gate_offsets: np.ndarray,
           kernel: str | None = None) -> "LayerKernel":
        """kernel: a name from KERNELS, or None for the fastest exact one."""
        hidden, n_in = layer.wh.shape[1], layer.wx.shape[1]
        rows = -(-4 * hidden // ROW_ALIGN) * ROW_ALIGN
        bound = max(accumulator_bound(layer.wx), accumulator_bound(layer.wh))
        if bound > INT32_MAX:
            raise OverflowProofError(f"layer {k}: a gate accumulator can reach {bound} > 2^31-1")
        for what, shift in (("input", layer.sx), ("recurrent", layer.sh)):
            if shift.size and not (1 <= shift.min() and shift.max() <= 31):
                raise OverflowProofError(f"layer {k} {what} requantization: a shift is outside 1..31")
        if kernel is None:
            kernel = "vnni" if "vnni" in KERNELS else "float32" if bound <= FLOAT32_EXACT else "int32"
        if kernel == "float32" and bound > FLOAT32_EXACT:
            raise ValueError(f"layer {k}: float32 sums would not be exact (bound {bound} > 2^24)")
        if kernel not in KERNELS:
            raise ValueError(f"no matmul kernel {kernel!r} in this build (have: {', '.join(KERNELS)})")
        if kernel == "vnni":
            w = np.concatenate([_quads(layer.wx, rows), _quads(layer.wh, rows)])
            # the kernel feeds x + 128 as u8: its sums are 128 * sum(w) too high
            offset_x = 128 * layer.wx.astype(np.int64).sum(axis=1)
            offset_h = 128 * layer.wh.astype(np.int64).sum(axis=1)
        else:
            w = np.zeros((n_in + hidden, rows), np.float32 if kernel == "float32" else np.int32)
            w[:n_in, :4 * hidden] = layer.wx.T
            w[n_in:, :4 * hidden] = layer.wh.T
            offset_x = offset_h = np.zeros(4 * hidden, np.int64)
        p = np.zeros((11, rows), np.int64)
        p[[P_SX, P_SH]] = 1
        p[[P_SPANX, P_SPANH]] = 2**32 - 1  # padding rows: never flagged
        p[P_OFF] = gate_offsets[0]
        p[P_OFF, :4 * hidden] = gate_offsets
        for r in range(4 * hidden):
            p[[P_MX, P_KX, P_SX, P_BASEX, P_SPANX], r] = _requant_row(
                layer.mx[r], layer.sx[r], layer.bx[r], offset_x[r], f"layer {k} input")
            p[[P_MH, P_KH, P_SH, P_BASEH, P_SPANH], r] = _requant_row(
                layer.mh[r], layer.sh[r], 0, offset_h[r], f"layer {k} recurrent")
        p = p.astype(np.uint32).view(np.int32)
        return cls(k, n_in, hidden, rows, layer.c_frac, kernel, w, p)

    def run(self, seq: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray,
            lut: np.ndarray, trace: bool = False):
        """The layer over seq int8 [n, T, C] from state h, c (int32 [n, H], left
        holding the final state). Returns h at every step (int8 [n, T, H]) and,
        when tracing, the gate pre-activations [n, T, 4H] and cell [n, T, H]."""
        n, steps, _ = seq.shape
        H = self.hidden
        hs = np.empty((n, steps, H), np.int8)
        shape = ((n, steps, 4 * H), (n, steps, H)) if trace else ((0,), (0,))
        gates, cell = np.empty(shape[0], np.int32), np.empty(shape[1], np.int32)
        code = _recurrence.run_layer(
            n, steps, self.n_in, H, self.rows, self.c_frac, KERNELS[self.kernel],
            np.ascontiguousarray(seq, np.int8), np.ascontiguousarray(lengths, np.int64), h, c,
            self.w, self.params, lut, hs, gates, cell)
        _raise_overflow(code, self.index)
        return hs, gates, cell


def _raise_overflow(code: int, layer: int) -> None:
    """The kernels' overflow codes as OverflowProofError, naming the layer."""
    if code == _recurrence.INPUT_OVERFLOW:
        raise OverflowProofError(f"layer {layer} input requantization: a value left the int32 range")
    if code == _recurrence.RECURRENT_OVERFLOW:
        raise OverflowProofError(f"layer {layer} recurrent requantization: a value left the int32 range")


@dataclass(frozen=True)
class WideLayerKernel:
    """One layer of a 16-bit-state model, ready for run_layer16: weights
    [n_in + H, 4H] transposed as int32, and every per-row integer in one int64
    table. Layer 0's inputs are int8 or int16 (x_bits), the others' the int16 h below."""

    index: int
    n_in: int
    hidden: int
    c_frac: int
    w: np.ndarray
    params: np.ndarray

    @classmethod
    def of(cls, k: int, layer: QuantLayer, gate_offsets: np.ndarray, x_bits: int = 8) -> "WideLayerKernel":
        hidden, n_in = layer.wh.shape[1], layer.wx.shape[1]
        x_bound = 1 << (x_bits - 1) if k == 0 else 32768
        bound = max(accumulator_bound(layer.wx, x_bound), accumulator_bound(layer.wh, 32768))
        if bound > INT32_MAX:  # every partial sum is at most this: the loop's int32 sums are exact
            raise OverflowProofError(f"layer {k}: a gate accumulator can reach {bound} > 2^31-1")
        w = np.concatenate([layer.wx.T, layer.wh.T]).astype(np.int32)
        zeros = np.zeros(4 * hidden, np.int64)
        p = np.stack([layer.bx, zeros if layer.px is None else layer.px, layer.mx, layer.sx,  # WIDE_PARAMS
                      zeros if layer.ph is None else layer.ph, layer.mh, layer.sh, gate_offsets]).astype(np.int64)
        return cls(k, n_in, hidden, layer.c_frac, np.ascontiguousarray(w), np.ascontiguousarray(p))

    def run(self, seq: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray,
            lut: np.ndarray, trace: bool = False):
        """As LayerKernel.run; seq and the h returned at every step are int16."""
        n, steps, _ = seq.shape
        H = self.hidden
        hs = np.zeros((n, steps, H), np.int16)
        shape = ((n, steps, 4 * H), (n, steps, H)) if trace else ((0,), (0,))
        gates, cell = np.zeros(shape[0], np.int32), np.zeros(shape[1], np.int32)
        code = _recurrence.run_layer16(
            n, steps, self.n_in, H, self.c_frac, np.ascontiguousarray(seq, np.int16),
            np.ascontiguousarray(lengths, np.int64), h, c, self.w, self.params, lut, hs, gates, cell)
        _raise_overflow(code, self.index)
        return hs, gates, cell
