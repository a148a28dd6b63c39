"""The integer LSTM: exactly what the board computes (docs/arithmetic.md).

This is the host emulator. device/ under MicroPython must reproduce its integer
state and logits bit for bit. Every product that could approach 2**31 is
checked, so a 64-bit host cannot hide an overflow the 32-bit board would suffer.

The time loop of each layer is C (recurrence.py lays out its operands,
_recurrence.c computes) in the board's 32-bit arithmetic; its int8 x int8
matmuls have three kernels that give the same sums (docs/arithmetic.md, "Why
the host reference is exact"). A model with a 16-bit state (h int16 on
2**-15) runs the same API through a plain int16 x int8 loop, as do its
layer 0's int16 inputs in state format 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..blob import QuantModel
from ..quant.fixedpoint import pre_shift, requantize
from ..quant.lut import lookup
from .inputs import as_inputs
from .recurrence import GATE_TABLE, LayerKernel, WideLayerKernel


def full_table(table: np.ndarray, lut_shift: int) -> np.ndarray:
    """The interpolated table at all 65536 Q3.12 inputs: one gather per lookup
    instead of two gathers and five operations (equal by construction)."""
    return lookup(table, np.arange(-32768, 32768), lut_shift)


@dataclass
class Trace:
    """Integer internals per layer: gate pre-activations (Q3.12), cell, hidden
    (int8 or int16 values, as the model's state)."""

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
        if model.h_bits == 16:
            self.layers = [WideLayerKernel.of(k, layer, gate_offsets, model.x_bits) for k, layer in enumerate(model.layers)]
        else:
            self.layers = [LayerKernel.of(k, layer, gate_offsets, kernel) for k, layer in enumerate(model.layers)]
        head = model.head
        self.head_w_t = head.w.T.astype(np.float64)
        self.head_b = head.b.astype(np.int64)
        self.head_m, self.head_s = head.m.astype(np.int64), head.s.astype(np.int64)
        self.head_p = np.zeros_like(self.head_s) if head.p is None else head.p.astype(np.int64)
        self.h: list[np.ndarray] = []
        self.c: list[np.ndarray] = []

    # ---- one layer over time ----------------------------------------------------------

    def _layer(self, k: int, seq: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray,
               trace: Trace | None = None) -> np.ndarray:
        """Layer k over seq [n, T, C] (int8, or the int16 h below) from state (h, c),
        which is left holding the final state; returns h at every step, [n, T, H]
        int8 or int16 as the state."""
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
        """Advance every stream by one timestep; x_q int8 [B, C] (int16 for a
        model of int16 inputs, as everywhere below). Returns the top h."""
        x = as_inputs(x_q, self.model.x_bits)
        if not self.h:
            self.reset(x.shape[0])
        seq = x[:, None, :]
        once = np.ones(x.shape[0], dtype=np.int64)
        for k in range(len(self.layers)):
            seq = self._layer(k, seq, once, self.h[k], self.c[k])
        return self.h[-1]

    def hidden_sequence(self, x_q: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """The top layer's h after every step, [n, T, H] (int8, or int16 for a
        16-bit state), for windows x_q
        [n, T, C] each from a zero state (the anomaly head reads every step)."""
        seq = as_inputs(x_q, self.model.x_bits)
        n, steps, _ = seq.shape
        lengths = np.full(n, steps) if lengths is None else np.asarray(lengths, dtype=np.int64)
        for k in range(len(self.layers)):
            h = np.zeros((n, self.model.hidden), dtype=np.int32)
            c = np.zeros((n, self.model.hidden), dtype=np.int32)
            seq = self._layer(k, seq, lengths, h, c)
        return seq

    def logits(self, h_top: np.ndarray | None = None) -> np.ndarray:
        """int32 logits [B, K] (scale 2**-out_frac) from the top layer's h."""
        h = self.h[-1] if h_top is None else h_top
        acc = (h.astype(np.float64) @ self.head_w_t).astype(np.int64) + self.head_b  # exact: |acc| < 2**53
        acc = pre_shift(acc, self.head_p, "head pre-shift")  # a 16-bit state's; 0 (none) for 8 bits
        return requantize(acc, self.head_m, self.head_s, "head requantization")

    # ---- whole windows ---------------------------------------------------------------

    def run(self, x_q: np.ndarray, lengths: np.ndarray | None = None,
            trace: Trace | None = None, chunk: int = 1024) -> np.ndarray:
        """Logits [n, K] for windows x_q int8 [n, T, C], each from a zero state and
        read at its last valid step. Layer by layer: a layer's whole input
        projection is one matmul, so only the recurrent part loops over time."""
        x_q = as_inputs(x_q, self.model.x_bits)
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
