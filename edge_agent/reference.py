"""The integer reference: exactly what the board computes (docs/arithmetic.md).

This module is the host emulator. device/ under MicroPython must reproduce its
integer state and logits bit for bit. Every product that could approach 2**31 is
checked, so a 64-bit host cannot hide an overflow the 32-bit board would suffer.

The time loop of each layer is C (edge_agent/recurrence.py lays out its
operands, edge_agent/_recurrence.c computes) in the board's 32-bit arithmetic;
its int8 x int8 matmuls have three kernels that give the same sums
(docs/arithmetic.md, "Why the host reference is exact").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .blob import InputQuant, QuantModel
from .quant.fixedpoint import INT32_MAX, OverflowProofError
from .quant.lut import GATE_FRAC, OUT_FRAC, lookup
from .recurrence import GATE_TABLE, LayerKernel

RAW_MIN, RAW_MAX = -32768, 32767  # raw readings are int16, like the sensors' registers


# ---- inputs ----------------------------------------------------------------------

def to_raw(x: np.ndarray, inputs: InputQuant) -> np.ndarray:
    """Float sensor values -> the integer readings a sensor would deliver."""
    scaled = np.asarray(x, dtype=np.float64) * inputs.raw_per_unit.astype(np.float64)
    return np.clip(np.floor(scaled + 0.5), RAW_MIN, RAW_MAX).astype(np.int64)


def quantize_raw(raw: np.ndarray, inputs: InputQuant) -> np.ndarray:
    """Raw int16 readings -> int8 model inputs (per channel, integer only)."""
    raw = np.clip(np.asarray(raw, dtype=np.int64), RAW_MIN, RAW_MAX)
    acc = raw * inputs.mult.astype(np.int64) + inputs.bias.astype(np.int64)
    _check32(acc, "input quantization")
    return np.clip(acc >> inputs.shift.astype(np.int64), -128, 127)


# ---- arithmetic ------------------------------------------------------------------

def _check32(values: np.ndarray, what: str) -> None:
    if values.size and (values.max() > INT32_MAX or values.min() < -INT32_MAX):
        raise OverflowProofError(f"{what}: a value left the int32 range")


def _matmul(a: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """Exact integer a @ w via float64 BLAS (w_t given as float64, transposed)."""
    return (a.astype(np.float64) @ w_t).astype(np.int64)


def _int8(x_q) -> np.ndarray:
    """Model inputs as int8, refusing values an int8 cannot hold."""
    x = np.asarray(x_q)
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError("model inputs must be int8 (-128..127)")
    return x.astype(np.int8, copy=False)


def _rshift_round(v: np.ndarray, shift: int) -> np.ndarray:
    return (v + (1 << (shift - 1))) >> shift


@dataclass
class _Requant:
    """acc -> rshift_round(acc * mult, shift) per column, checked against int32."""

    mult: np.ndarray
    half: np.ndarray
    shift: np.ndarray
    what: str

    @classmethod
    def of(cls, mult: np.ndarray, shift: np.ndarray, what: str) -> "_Requant":
        shift = shift.astype(np.int64)
        return cls(mult.astype(np.int64), np.int64(1) << (shift - 1), shift, what)

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        prod = acc * self.mult
        prod += self.half
        _check32(prod, self.what)
        prod >>= self.shift
        return prod


def full_table(table: np.ndarray, lut_shift: int) -> np.ndarray:
    """The interpolated table at all 65536 Q3.12 inputs: one gather per lookup
    instead of two gathers and five operations (equal by construction)."""
    return lookup(table, np.arange(-32768, 32768), lut_shift)


@dataclass
class Trace:
    """Integer internals per layer: gate pre-activations (Q3.12), cell, hidden."""

    gates: list[np.ndarray] = field(default_factory=list)
    cell: list[np.ndarray] = field(default_factory=list)
    hidden: list[np.ndarray] = field(default_factory=list)


class IntegerLSTM:
    """The quantized model as the board runs it: stateful, one timestep at a time,
    or a batch of whole windows at once (same arithmetic)."""

    def __init__(self, model: QuantModel, kernel: str | None = None):
        """kernel: the matmul kernel (recurrence.KERNELS); None picks the fastest.
        Every kernel gives the same integers."""
        self.model = model
        # sigmoid for the i, f, o blocks and tanh for g, as one int16 table with
        # offsets, so all four gates are looked up in one gather
        sig, tanh = full_table(model.sigmoid, model.lut_shift), full_table(model.tanh, model.lut_shift)
        self._lut = np.concatenate([sig, tanh, [0, 0]]).astype(np.int16)  # 2 spare: the kernel reads in pairs
        gate_offsets = 32768 + np.repeat(np.array([0, 0, GATE_TABLE, 0]), model.hidden)
        self.layers = [LayerKernel.of(k, layer, gate_offsets, kernel) for k, layer in enumerate(model.layers)]
        head = model.head
        self.head_w_t = head.w.T.astype(np.float64)
        self.head_b = head.b.astype(np.int64)
        self.rq_head = _Requant.of(head.m, head.s, "head requantization")
        self.h: list[np.ndarray] = []
        self.c: list[np.ndarray] = []

    # ---- one layer over time ----------------------------------------------------------

    def _layer(self, k: int, seq: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray,
               trace: Trace | None = None) -> np.ndarray:
        """Layer k over seq int8 [n, T, C] from state (h, c), which is left holding
        the final state; returns h at every step, int8 [n, T, H]."""
        hs, gates, cell = self.layers[k].run(seq, lengths, h, c, self._lut, trace is not None)
        if trace is not None:
            trace.gates.append(gates.astype(np.int64))
            trace.cell.append(cell.astype(np.int64))
            trace.hidden.append(hs.astype(np.int64))
        return hs

    # ---- streaming -----------------------------------------------------------------

    def reset(self, batch: int = 1) -> None:
        H = self.model.hidden
        self.h = [np.zeros((batch, H), dtype=np.int32) for _ in self.layers]
        self.c = [np.zeros((batch, H), dtype=np.int32) for _ in self.layers]

    def step(self, x_q: np.ndarray) -> np.ndarray:
        """Advance every stream by one timestep; x_q int8 [B, C]. Returns the top h."""
        x = _int8(x_q)
        if not self.h:
            self.reset(x.shape[0])
        seq = x[:, None, :]
        once = np.ones(x.shape[0], dtype=np.int64)
        for k in range(len(self.layers)):
            seq = self._layer(k, seq, once, self.h[k], self.c[k])
        return self.h[-1]

    def logits(self, h_top: np.ndarray | None = None) -> np.ndarray:
        """int32 logits [B, K] (scale 2**-out_frac) from the top layer's h."""
        h = self.h[-1] if h_top is None else h_top
        acc = _matmul(h, self.head_w_t) + self.head_b
        return self.rq_head(acc)

    # ---- whole windows ---------------------------------------------------------------

    def run(self, x_q: np.ndarray, lengths: np.ndarray | None = None,
            trace: Trace | None = None, chunk: int = 1024) -> np.ndarray:
        """Logits [n, K] for windows x_q int8 [n, T, C], each from a zero state and
        read at its last valid step. Layer by layer: a layer's whole input
        projection is one matmul, so only the recurrent part loops over time."""
        x_q = _int8(x_q)
        n, steps, _ = x_q.shape
        lengths = np.full(n, steps) if lengths is None else np.asarray(lengths, dtype=np.int64)
        out = []
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            out.append(self._run_chunk(x_q[sl], lengths[sl], trace))
        if trace is not None:
            for name in ("gates", "cell", "hidden"):
                parts = getattr(trace, name)
                per_layer = len(self.layers)
                merged = [np.concatenate(parts[k::per_layer]) for k in range(per_layer)]
                setattr(trace, name, merged)
        return np.concatenate(out) if out else np.zeros((0, self.model.n_classes), np.int64)

    def _run_chunk(self, seq: np.ndarray, lengths: np.ndarray, trace: Trace | None):
        n = seq.shape[0]
        H = self.model.hidden
        for k in range(len(self.layers)):
            h = np.zeros((n, H), dtype=np.int32)
            c = np.zeros((n, H), dtype=np.int32)
            seq = self._layer(k, seq, lengths, h, c, trace)
        return self.logits(h)  # frozen past each window's length: h at its last valid step


# ---- window decision ---------------------------------------------------------------

def decide(logits: np.ndarray, model: QuantModel) -> tuple[np.ndarray, np.ndarray]:
    """(class, score) per window. The score is the softmax probability of the top
    class in Q0.15, from the exp table: 32768**2 // (32768 + sum exp(l_k - l_top))."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.int64))
    top = np.argmax(logits, axis=1)  # first index wins ties, as on the board
    diff = logits[np.arange(len(logits)), top][:, None] - logits  # >= 0
    F = model.head.out_frac
    if F > GATE_FRAC:
        t = _rshift_round(diff, F - GATE_FRAC)
    else:
        t = diff << (GATE_FRAC - F)
    t = np.minimum(t, 32768)
    e = lookup(model.exp, -t, model.lut_shift)
    e[np.arange(len(logits)), top] = 0
    total = (1 << OUT_FRAC) + e.sum(axis=1)
    score = np.minimum(((1 << (2 * OUT_FRAC)) + total // 2) // total, (1 << OUT_FRAC) - 1)
    return top, score


def score_fraction(score_q15: int) -> float:
    """The published score: Q0.15 rounded half up to 4 decimals, in integers, so
    the board and the host print the same number."""
    return ((int(score_q15) * 10000 + 16384) >> 15) / 10000


# ---- streams -----------------------------------------------------------------------

def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start index of every full window, one every `hop` samples."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def stream_decisions(engine: IntegerLSTM, x_q: np.ndarray, window: int, hop: int,
                     continuous: bool = False, batch: int = 256):
    """Decision points of a sample stream x_q int8 [N, C], as device/stream.py
    makes them: [(sample index, logits [K])].

    Windowed (the default): a window starts every `hop` samples, runs from a zero
    state and decides at its last sample; overlapping windows (hop < window) are
    independent, which is what the board's staggered states compute. Continuous:
    one state never reset, a decision every `hop` samples once `window` have passed.
    """
    if window < 1 or not 1 <= hop <= window:
        raise ValueError("need 1 <= hop <= window")
    x_q = np.asarray(x_q, dtype=np.int64)
    out = []
    if continuous:
        engine.reset(1)
        for t in range(len(x_q)):
            engine.step(x_q[t][None, :])
            if t + 1 >= window and (t + 1 - window) % hop == 0:
                out.append((t, engine.logits()[0]))
        return out
    starts = window_starts(len(x_q), window, hop)
    for first in range(0, len(starts), batch):
        chunk = starts[first:first + batch]
        logits = engine.run(np.stack([x_q[s:s + window] for s in chunk]))
        out.extend((int(s) + window - 1, row) for s, row in zip(chunk, logits))
    return out
