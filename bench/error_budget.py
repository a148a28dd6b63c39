"""Where an int16-state model's disagreements with float come from: each rounding
the board makes, removed one at a time and together.

The model is trained and quantized as in bench/long_windows.py (1 layer, H=32,
seed 1, the trainer's defaults; min/max calibration, int16 state and inputs:
the format `quantize` picks for the long real tasks). It then runs in a numpy
copy of the board's 16-bit arithmetic (docs/arithmetic.md, "16-bit hidden
state"), checked here to give the integer reference's logits exactly, in which
four roundings can each be made (nearly) exact:

- inputs: the raw samples' own rounding to the sensor's integers (raw_per_unit)
  is skipped; the int16 input grid stays;
- weights: the recurrent weights keep their unrounded value on the row's grid
  (the accumulator is rounded once, after the sum);
- tables: sigmoid and tanh at every second Q3.12 step (lut_shift 1, the finest
  the format allows) instead of every 128th;
- cell: four more fraction bits, held in int32 (the board's is int16).

For each of the 16 combinations it prints the agreement with the float model's
decisions and the logit rms error on the test windows, beside the float model's
own agreement under input noise of a tenth and a hundredth of an int8 step.
Read the rms: on 100 windows agreement moves by a whole window whenever any
rounding changes a near-tie. A format worth widening is one whose removal alone
cuts the rms (ArrowHead at 251 steps: the recurrent weights, 0.058 -> 0.016); a
model whose rms falls only when every rounding goes at once (ACSF1 at 100
steps) has windows at a fork of their trajectory that no one format holds.

    python bench/error_budget.py [--task ACSF1] [--length 100]    (about 15 s; sktime for UCR tasks)
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from long_windows import STEP_CAP, TASKS  # noqa: E402

from edge_agent.learn import train as T  # noqa: E402
from edge_agent.quant import lut  # noqa: E402
from edge_agent.quant.fixedpoint import rshift_round  # noqa: E402
from edge_agent.quant.ptq import quantize, row_quant  # noqa: E402
from edge_agent.reference.inputs import model_inputs  # noqa: E402
from edge_agent.reference.lstm import IntegerLSTM  # noqa: E402

FINER_CELL = 4  # fraction bits the "cell" idealisation adds


def _pre(acc, shift):
    return np.where(shift > 0, (acc + ((np.int64(1) << shift) >> 1)) >> shift, acc)


def _requant(acc, mult, shift):
    return (acc * mult + (np.int64(1) << (shift - 1))) >> shift


def _lut(table, z, s):
    u = z + 32768
    idx, frac = u >> s, u & ((1 << s) - 1)
    t = table.astype(np.int64)
    return t[idx] + rshift_round((t[np.minimum(idx + 1, len(t) - 1)] - t[idx]) * frac, s)


def run16(qm, x_q, recurrent=None, finer_cell: bool = False) -> np.ndarray:
    """Logits of the 16-bit-state model qm on x_q [n, T, C], as the board computes
    them; recurrent: per layer, unrounded recurrent weights on the rows' grids (the
    accumulator rounded after the sum); finer_cell: FINER_CELL more fraction bits
    in the cell, held in int32."""
    seq, s = x_q.astype(np.int64), qm.lut_shift
    n, steps, _ = seq.shape
    for k, layer in enumerate(qm.layers):
        H = layer.wh.shape[1]
        h, c = np.zeros((n, H), np.int64), np.zeros((n, H), np.int64)
        out = np.zeros((n, steps, H), np.int64)
        frac = layer.c_frac + (FINER_CELL if finer_cell else 0)
        c_top = 2**31 - 1 if finer_cell else 32767
        wx = layer.wx.astype(np.int64)
        px, ph = layer.px.astype(np.int64), layer.ph.astype(np.int64)
        for t in range(steps):
            ax = seq[:, t] @ wx.T + layer.bx
            ah = h @ layer.wh.astype(np.int64).T if recurrent is None else \
                np.round(h.astype(np.float64) @ recurrent[k].T).astype(np.int64)
            z = np.clip(_requant(_pre(ax, px), layer.mx.astype(np.int64), layer.sx.astype(np.int64))
                        + _requant(_pre(ah, ph), layer.mh.astype(np.int64), layer.sh.astype(np.int64)),
                        -32768, 32767)
            i, f = _lut(qm.sigmoid, z[:, :H], s), _lut(qm.sigmoid, z[:, H:2 * H], s)
            g, o = _lut(qm.tanh, z[:, 2 * H:3 * H], s), _lut(qm.sigmoid, z[:, 3 * H:], s)
            c = np.clip(rshift_round(f * c, 15) + rshift_round(i * g, 30 - frac), -c_top - 1, c_top)
            tc = rshift_round(c, frac - 12) if frac > 12 else c << (12 - frac)
            h = np.clip(rshift_round(o * _lut(qm.tanh, np.clip(tc, -32768, 32767), s), 15), -32768, 32767)
            out[:, t] = h
        seq = out
    head = qm.head
    acc = h @ head.w.astype(np.int64).T + head.b
    return _requant(_pre(acc, head.p.astype(np.int64)), head.m.astype(np.int64), head.s.astype(np.int64))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ACSF1", choices=list(TASKS))
    ap.add_argument("--length", type=int, default=100)
    args = ap.parse_args()
    (x, y), (xt, yt) = TASKS[args.task](args.length, 500, 1000)
    name = f"{args.task} L={x.shape[1]}"
    cfg = T.TrainConfig(seed=1)
    cfg.epochs = min(T.resolve_epochs(cfg, len(x)), max(1, int(STEP_CAP // (len(x) * x.shape[1]))))
    model, _ = T.train(x, y, cfg=cfg)
    want = model.forward(xt)
    step = (x.max((0, 1)) - x.min((0, 1))) / 255
    rng = np.random.default_rng(0)
    for part in (10, 100):
        noisy = model.forward(xt + rng.normal(0, 1, xt.shape) * step / part)
        print(f"{name} float self-agreement under 1/{part}-step input noise: "
              f"{np.mean(noisy.argmax(1) == want.argmax(1)):.4f}")
    qm = quantize(model, x, h_bits=16, x_bits=16)
    as_board = model_inputs(qm, xt)
    if not np.array_equal(run16(qm, as_board), IntegerLSTM(qm).run(as_board)):
        raise SystemExit("the numpy copy of the 16-bit arithmetic differs from the integer reference")
    scale, zero = qm.inputs.scale.astype(np.float64), qm.inputs.zero.astype(np.float64)
    no_raw = np.clip(np.round(xt / scale) + zero, -32768, 32767).astype(np.int64)
    unrounded = []
    for layer in model.layers:
        w = layer.w_hh * 2.0**-15
        unrounded.append(w / row_quant(w)[1][:, None])
    fine = copy.deepcopy(qm)
    fine.sigmoid, fine.tanh, fine.lut_shift = lut.sigmoid_table(1), lut.tanh_table(1), 1
    for inputs, weights, tables, cell in itertools.product((0, 1), repeat=4):
        logits = run16(fine if tables else qm, no_raw if inputs else as_board,
                       unrounded if weights else None, bool(cell)) / 2.0**12
        tag = f"{name} exact inputs={inputs} weights={weights} tables={tables} cell={cell}"
        print(f"{tag} agreement: {np.mean(logits.argmax(1) == want.argmax(1)):.4f}")
        print(f"{tag} logits rms: {np.sqrt(np.mean((logits - want) ** 2)):.4f}", flush=True)


if __name__ == "__main__":
    main()
