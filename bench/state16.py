"""What a 16-bit hidden state costs on an RP2040: cycles per timestep and RAM of
the H=32, I=6, 1-layer model of bench/rp2040_cycles.py with an 8-bit and with a
16-bit state, on the official MicroPython firmware on the emulated chip.

Prints `name: value` lines:
- cycles (and us at 125 MHz) per Cell.step with each state width, as the board
  runs it: both on the Thumb kernels (matvec16 for a 16-bit h; one lstm_update
  for both widths), 58,427 with an 8-bit state and 59,020 with a 16-bit one
  (127,589 when the 16-bit lstm_update was viper); and both widths on the viper
  kernels alone (like for like, as an ESP32 runs them);
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
from rp2040_cycles import BOARD_CLOCK, board_eval, h32_model  # noqa: E402

BOARD_SCRIPT = BOARD_CLOCK + """
def measure(path, n, viper):
    model = layout.BoardModel(blob.load(path))
    c = cell.Cell(model)
    st = cell.State(model)
    if viper:  # every kernel viper, layer 0's input matvec too
        cell.matvec = kernels.matvec_viper
        c.matvec_h = kernels.matvec16_viper if model.h_bits == 16 else kernels.matvec_viper
        c.update = kernels.lstm_update_viper
    for i in range(model.n_inputs):
        c.x[i] = (37 * i + 11) & 0xFF
    c.step(st)
    gc.collect()
    t0 = cycles()
    for i in range(n):
        c.step(st)
    t1 = cycles()
    for i in range(n):
        pass
    loop = span(t1, cycles())
    cell.matvec = kernels.matvec
    return (span(t0, t1) - loop) // n, model.state_bytes, model.arena_bytes
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
            for bits in (8, 16):
                path = Path(tmp) / f"h{bits}.bin"
                h32_model(path, h_bits=bits)
                repl.write_file(path.name, path.read_bytes())
            repl.exec(BOARD_SCRIPT)
            assert board_eval(repl, "kernels.KERNEL") == "thumb"
            for bits in (8, 16):
                step, state, arena = board_eval(repl, f"measure('h{bits}.bin', {args.steps}, False)")
                viper = board_eval(repl, f"measure('h{bits}.bin', {args.steps}, True)")[0]
                print(f"state16_rp2040_cycles_per_step_h32_i6_l1_h{bits}: {step}")
                print(f"state16_rp2040_us_per_step_h32_i6_l1_h{bits}: {step / HZ * 1e6:.1f}")
                print(f"state16_rp2040_viper_cycles_per_step_h32_i6_l1_h{bits}: {viper}")
                print(f"state16_state_bytes_per_stream_h{bits}: {state}")
                print(f"state16_arena_bytes_h{bits}: {arena}")
                print(f"state16_model_ram_one_stream_h{bits}: {state + arena}")
        finally:
            repl.close()


if __name__ == "__main__":
    main()
