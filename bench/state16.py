"""What a 16-bit hidden state costs on an RP2040: cycles per timestep and RAM of
the H=32, I=6, 1-layer model of bench/rp2040_cycles.py with an 8-bit and with a
16-bit state, and with int16 inputs too (h16x16, state format 2), on the
official MicroPython firmware on the emulated chip.

Prints `name: value` lines:
- cycles (and us at 125 MHz) per Cell.step with each state width, as the board
  runs it: all on the Thumb kernels (matvec16 for a 16-bit h and for int16
  inputs; one lstm_update for every width): 56,972 with an 8-bit state, 57,580
  with a 16-bit one, 57,644 with int16 inputs too (h16x16); and each on the
  viper kernels alone (like for like, as an ESP32 runs them);
- cycles of one reading's quantization (6 channels; int16 stores for h16x16);
- per stream, the State's bytes (h, c and the kernels' scratch), the arena's
  (weights and constants), and their sum for one stream (the runner's model_ram).

    python bench/state16.py [--firmware DIR] [--steps N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edge_agent.board.flash import compile_runner  # noqa: E402
from edge_agent.board.rp2040 import FIRMWARE_ENV, HZ, RP2040Board  # noqa: E402
from edge_agent.board.transport import RawRepl  # noqa: E402
from edge_agent.quant.calibrate import FORMAT_NAMES  # noqa: E402
from rp2040_cycles import BOARD_CLOCK, board_eval, h32_model  # noqa: E402

FORMATS = {name: fmt for fmt, name in FORMAT_NAMES.items()}  # h8, h16, h16x16: (state bits, input bits)

BOARD_SCRIPT = BOARD_CLOCK + """
import array

def measure(path, n, viper):
    model = layout.BoardModel(blob.load(path))
    c = cell.Cell(model)
    st = cell.State(model)
    if viper:  # every kernel viper, layer 0's input matvec too
        c.kernels = (kernels.matvec16_viper if model.x_bits == 16 else kernels.matvec_viper,
                     kernels.matvec16_viper if model.h_bits == 16 else kernels.matvec_viper,
                     kernels.lstm_update_viper)
    raw = array.array("h", [(3001 * i + 11) & 0x7FFF for i in range(model.n_inputs)])
    c.quantize(raw)
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
    t0 = cycles()
    for i in range(n):
        c.quantize(raw)
    quant = (span(t0, cycles()) - loop) // n
    return step, model.state_bytes, model.arena_bytes, quant
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--firmware", default=os.environ.get(FIRMWARE_ENV, str(ROOT.parent / "shared" / "firmware")))
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RP2040Board(Path(tmp) / "flash", args.firmware) as board:
        repl = RawRepl(board.port)
        try:
            repl.enter()
            for name, data in compile_runner("armv6m", warn=lambda m: print(m, file=sys.stderr)).items():
                if name != "main.py":  # the kernels, not the runner
                    repl.write_file(name, data)
            for fmt, (h_bits, x_bits) in FORMATS.items():
                path = Path(tmp) / f"{fmt}.bin"
                h32_model(path, h_bits, x_bits)
                repl.write_file(path.name, path.read_bytes())
            repl.exec(BOARD_SCRIPT)
            assert board_eval(repl, "kernels.KERNEL") == "thumb"
            for fmt in FORMATS:
                step, state, arena, quant = board_eval(repl, f"measure('{fmt}.bin', {args.steps}, False)")
                viper = board_eval(repl, f"measure('{fmt}.bin', {args.steps}, True)")[0]
                print(f"state16_rp2040_cycles_per_step_h32_i6_l1_{fmt}: {step}")
                print(f"state16_rp2040_us_per_step_h32_i6_l1_{fmt}: {step / HZ * 1e6:.1f}")
                print(f"state16_rp2040_viper_cycles_per_step_h32_i6_l1_{fmt}: {viper}")
                print(f"state16_rp2040_quantize_cycles_i6_{fmt}: {quant}")
                print(f"state16_state_bytes_per_stream_{fmt}: {state}")
                print(f"state16_arena_bytes_{fmt}: {arena}")
                print(f"state16_model_ram_one_stream_{fmt}: {state + arena}")
        finally:
            repl.close()


if __name__ == "__main__":
    main()
