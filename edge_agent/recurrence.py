"""The integer LSTM's time loop (docs/arithmetic.md), compiled with numba.

One call runs one layer over every timestep of a batch of windows, window by
window, so a window's state and the layer's weights stay in the CPU's cache and
the loops over gate rows vectorize. The integer matmuls are done in float32 (or
float64): every product is an integer below 2**15 and IntegerLSTM checks, once
per model, that every partial sum stays below 2**24 (2**53), where these floats
are exact whatever order the sums are added in. Requantization products are
computed in int64 and checked against int32, as the board's 32-bit arithmetic
needs; a value outside it stops the run with a code naming the requantization.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .quant.fixedpoint import INT32_MAX
from .quant.lut import GATE_FRAC, OUT_FRAC

OK, INPUT_OVERFLOW, RECURRENT_OVERFLOW = 0, 1, 2
H_FRAC = 7  # h: int8 at 2**-7


@njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def run_layer(seq, lengths, h, c, wx_t, bx, mx, hx, sx, wh_t, mh, hh, sh,
              gate_lut, gate_offset, tanh, c_frac, hs, trace_gates, trace_cell):
    """Layer over seq [n, T, C] (floats holding int8): h, c [n, H] (int64) hold
    the initial state and are left holding the final one; hs [n, T, H] receives
    h at every step. Past its length a window's state stays frozen. trace_gates
    [n, T, 4H] and trace_cell [n, T, H] are filled when they are not empty.
    Returns OK or the overflow code. The loops are kept branch-free so that
    they vectorize; fastmath only lets the exact float sums fuse and reorder."""
    n, steps, n_in = seq.shape
    rows = wh_t.shape[1]
    hidden = rows // 4
    tracing = trace_gates.shape[0] > 0
    acc_x = np.empty(rows, wx_t.dtype)
    acc_h = np.empty(rows, wh_t.dtype)
    z = np.empty(rows, np.int64)
    act = np.empty(rows, np.int64)
    hf = np.empty(hidden, wh_t.dtype)
    c_new = np.empty(hidden, np.int64)
    c_idx = np.empty(hidden, np.int64)
    tc = np.empty(hidden, np.int64)
    i_shift = 2 * OUT_FRAC - c_frac
    i_round = np.int64(1) << (i_shift - 1)
    up = max(GATE_FRAC - c_frac, 0)  # c to Q3.12: a left shift or a rounding right shift
    down = max(c_frac - GATE_FRAC, 0)
    down_round = (np.int64(1) << down) >> 1
    h_shift = 2 * OUT_FRAC - H_FRAC
    h_round = np.int64(1) << (h_shift - 1)
    hi = np.int64(INT32_MAX)
    worst_x = np.int64(0)
    worst_h = np.int64(0)
    for b in range(n):
        for t in range(steps):
            acc_x[:] = 0
            for j in range(n_in):
                xv = seq[b, t, j]
                for r in range(rows):
                    acc_x[r] += wx_t[j, r] * xv
            acc_h[:] = 0
            for j in range(hidden):
                hf[j] = h[b, j]
            for j in range(hidden):
                hv = hf[j]
                for r in range(rows):
                    acc_h[r] += wh_t[j, r] * hv
            for r in range(rows):  # vector loop: no table lookups in it (gathers stay scalar)
                px = (np.int64(acc_x[r]) + bx[r]) * mx[r] + hx[r]
                ph = np.int64(acc_h[r]) * mh[r] + hh[r]
                worst_x = max(worst_x, abs(px))
                worst_h = max(worst_h, abs(ph))
                z[r] = min(max((ph >> sh[r]) + (px >> sx[r]), -32768), 32767)
            if worst_x > hi:
                return INPUT_OVERFLOW
            if worst_h > hi:
                return RECURRENT_OVERFLOW
            for r in range(rows):
                act[r] = gate_lut[z[r] + gate_offset[r]]
            for u in range(hidden):
                cn = (((act[hidden + u] * np.int64(c[b, u]) + (1 << (OUT_FRAC - 1))) >> OUT_FRAC)
                      + ((act[u] * act[2 * hidden + u] + i_round) >> i_shift))
                cn = min(max(cn, -32768), 32767)
                c_new[u] = cn
                c_idx[u] = min(max(((cn << up) + down_round) >> down, -32768), 32767) + 32768
            for u in range(hidden):
                tc[u] = tanh[c_idx[u]]
            keep = np.int64(t >= lengths[b])  # 1: frozen past the window's length
            for u in range(hidden):
                hn = (act[3 * hidden + u] * tc[u] + h_round) >> h_shift
                hn = min(max(hn, -128), 127)
                cn = keep * c[b, u] + (1 - keep) * c_new[u]
                hn = keep * h[b, u] + (1 - keep) * hn
                c[b, u] = cn
                h[b, u] = hn
                hs[b, t, u] = hn
            if tracing:
                for u in range(hidden):
                    trace_cell[b, t, u] = c[b, u]
                for r in range(rows):
                    trace_gates[b, t, r] = z[r]
    return OK
