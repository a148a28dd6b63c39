"""What a timestep costs on an RP2040, in exact cycles: the official MicroPython firmware
on the emulated chip (edge_agent/board/rp2040.py), timed by its cycle counter.

Prints `name: value` lines, measured in one run:
- cycles per timestep of the H=32, I=6, 1-layer model (the headline figure; goal
  <= 60,000) and of the bundled 2-layer demo, each split into matvec (the two
  kernel calls per layer), elementwise (kernels.lstm_update) and call overhead
  (the rest of Cell.step: Python), and in us at 125 MHz;
- cycles per multiply-accumulate over a whole timestep, and in the matvec kernel alone;
- the same timestep with the viper kernels other ports run, on the same chip;
- a textbook float pure-Python LSTM cell of the same size, on the same chip.

rp2040js has no flash wait states or XIP cache misses: code and data here are in
SRAM (native code, bytearrays), so those do not apply, but interpreted code that
runs from flash on a real board can be somewhat slower.

    python bench/rp2040_cycles.py [--firmware DIR]   (default: $EDGE_AGENT_FIRMWARE_DIR or ../shared/firmware)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import blob  # noqa: E402
from edge_agent.board.flash import compile_runner  # noqa: E402
from edge_agent.board.rp2040 import CYCLES_LO, FIRMWARE_ENV, HZ, RP2040Board  # noqa: E402
from edge_agent.board.transport import RawRepl  # noqa: E402
from edge_agent.learn import model as fmodel  # noqa: E402
from edge_agent.quant import quantize  # noqa: E402

# the board's clock, for every cycle bench on the emulated RP2040 (bench/state16.py too)
BOARD_CLOCK = """
import gc, machine, blob, cell, kernels, layout
mem = machine.mem32

def cycles():  # the emulator's counter, low 30 bits: small ints, no allocation
    return mem[CYCLES_LO] & 0x3FFFFFFF

def span(t0, t1):
    return (t1 - t0) & 0x3FFFFFFF
""".replace("CYCLES_LO", str(CYCLES_LO))

BOARD_SCRIPT = BOARD_CLOCK + """
from kernels import M_WX, M_WH, M_DX, M_DH, M_IP, M_HP, M_H, M_HU

def measure(path, n):
    model = layout.BoardModel(blob.load(path))
    c = cell.Cell(model)
    st = cell.State(model)
    for i in range(8):
        c.x[i % model.ip0] = (37 * i + 11) & 0xFF
    c.step(st)
    gc.collect()
    t0 = cycles()
    for i in range(n):
        c.step(st)
    t1 = cycles()
    for i in range(n):
        pass
    loop = span(t1, cycles())
    step = (span(t0, t1) - loop) // n
    a, s, x, arena = model.arena_addr, st.addr, c.x_addr, model.arena
    mv = 0
    up = 0
    for k in range(model.n_layers):  # each layer's kernels alone, as Cell.step calls them
        meta = model.metas[k]
        rows = meta[M_H] << 18
        wx, dx, ipr = a + meta[M_WX], s + meta[M_DX], meta[M_IP] | rows
        hu, wh, dh, hpr = s + meta[M_HU], a + meta[M_WH], s + meta[M_DH], meta[M_HP] | rows
        matvec, update = kernels.matvec, kernels.lstm_update
        t0 = cycles()
        for i in range(n):
            matvec(x, wx, dx, ipr)
            matvec(hu, wh, dh, hpr)
        mv += (span(t0, cycles()) - loop) // n
        t0 = cycles()
        for i in range(n):
            update(arena, meta, s, x)
        up += (span(t0, cycles()) - loop) // n
        x = hu
    return step, mv, up

def viper_step(path, n):  # Cell.step with the viper kernels other ports run
    model = layout.BoardModel(blob.load(path))
    c = cell.Cell(model)
    st = cell.State(model)
    a, s = model.arena_addr, st.addr
    mv, up = kernels.matvec_viper, kernels.lstm_update_viper
    t0 = cycles()
    for i in range(n):
        x = c.x_addr
        for k in range(model.n_layers):
            meta = model.metas[k]
            rows = meta[M_H] << 18
            mv(x, a + meta[M_WX], s + meta[M_DX], meta[M_IP] | rows)
            mv(s + meta[M_HU], a + meta[M_WH], s + meta[M_DH], meta[M_HP] | rows)
            up(model.arena, meta, s, x)
            x = s + meta[M_HU]
    return span(t0, cycles()) // n
"""

FLOAT_CELL = """
import math
def float_cell(H, I, n):
    # the textbook cell on Python floats: z = W [x; h] + b, then the gates
    W = [[((r * 7 + j * 3) % 11 - 5) * 0.05 for j in range(I + H)] for r in range(4 * H)]
    bias = [0.01 * (r % 5) for r in range(4 * H)]
    x = [0.1 * j for j in range(I)]
    h = [0.0] * H
    cst = [0.0] * H
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))
    t0 = cycles()
    for _ in range(n):
        xh = x + h
        z = []
        for r in range(4 * H):
            acc = bias[r]
            row = W[r]
            for j in range(I + H):
                acc += row[j] * xh[j]
            z.append(acc)
        cst = [sig(z[H + k]) * cst[k] + sig(z[k]) * math.tanh(z[2 * H + k]) for k in range(H)]
        h = [sig(z[3 * H + k]) * math.tanh(cst[k]) for k in range(H)]
    return span(t0, cycles()) // n
"""


def h32_model(path: Path, h_bits: int = 8, x_bits: int = 8) -> None:
    """The H=32, I=6, 1-layer model of bench/device_cell.py, with an h_bits state
    and x_bits inputs."""
    rng = np.random.default_rng(0)
    H, I, K = 32, 6, 4
    layer = fmodel.LSTMLayer(rng.normal(0, 0.3, (4 * H, I)), rng.normal(0, 0.3, (4 * H, H)),
                             rng.normal(0, 0.1, 4 * H), rng.normal(0, 0.1, 4 * H))
    fm = fmodel.FloatModel([layer], rng.normal(0, 0.5, (K, H)), np.zeros(K), np.zeros(I), np.ones(I))
    blob.write(quantize(fm, rng.normal(0, 1, (32, 50, I)), h_bits=h_bits, x_bits=x_bits), path)


def macs(qm, padded: bool) -> int:
    pad = (lambda n: (n + 7) // 8 * 8) if padded else (lambda n: n)
    H = qm.hidden
    return sum(4 * H * (pad(qm.n_inputs if k == 0 else H) + pad(H)) for k in range(len(qm.layers)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--firmware", default=os.environ.get(FIRMWARE_ENV, str(ROOT.parent / "shared" / "firmware")))
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RP2040Board(Path(tmp) / "flash", args.firmware) as board:
        h32 = Path(tmp) / "h32.bin"
        h32_model(h32)
        models = {"h32_i6_l1": h32, "demo_l2": ROOT / "edge_agent" / "data" / "demo.bin"}
        repl = RawRepl(board.port)
        try:
            repl.enter()
            for name, data in compile_runner("armv6m", warn=lambda m: print(m, file=sys.stderr)).items():
                if name != "main.py":  # the kernels, not the runner
                    repl.write_file(name, data)
            for name, path in models.items():
                repl.write_file(name + ".bin", path.read_bytes())
            repl.exec(BOARD_SCRIPT + FLOAT_CELL)
            assert board_eval(repl, "kernels.KERNEL") == "thumb"
            steps = {}
            for name, path in models.items():
                qm = blob.read(path)
                step, mv, up = board_eval(repl, f"measure({name + '.bin'!r}, {args.steps})")
                viper = board_eval(repl, f"viper_step({name + '.bin'!r}, {max(2, args.steps // 4)})")
                steps[name] = step
                print(f"rp2040_cycles_per_step_{name}: {step}")
                print(f"rp2040_us_per_step_{name}: {step / HZ * 1e6:.1f}")
                print(f"rp2040_{name}_matvec_cycles: {mv}")
                print(f"rp2040_{name}_elementwise_cycles: {up}")
                print(f"rp2040_{name}_overhead_cycles: {step - mv - up}")
                print(f"rp2040_{name}_cycles_per_mac: {step / macs(qm, False):.2f}")
                print(f"rp2040_{name}_matvec_cycles_per_padded_mac: {mv / macs(qm, True):.2f}")
                print(f"rp2040_{name}_viper_cycles_per_step: {viper}")
                print(f"rp2040_{name}_speedup_over_viper: {viper / step:.2f}")
            fl = board_eval(repl, "float_cell(32, 6, 2)")
            print(f"rp2040_float_cell_cycles_per_step_h32_i6: {fl}")
            print(f"rp2040_float_cell_us_per_step_h32_i6: {fl / HZ * 1e6:.0f}")
            print(f"rp2040_h32_i6_l1_speedup_over_float: {fl / steps['h32_i6_l1']:.0f}")
        finally:
            repl.close()


def board_eval(repl: RawRepl, expression: str):
    import ast

    return ast.literal_eval(repl.exec(f"print(repr({expression}))", timeout=1200).strip())


if __name__ == "__main__":
    main()
