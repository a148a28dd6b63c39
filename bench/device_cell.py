"""The viper cell under the real MicroPython unix port, and what it costs a board.

Prints, on one H=32, I=6 single-layer model:
- us per timestep of device/cell.py (viper kernels) and of a straightforward float
  pure-Python LSTM cell, both under MicroPython, and their ratio (goal >= 50);
- heap bytes allocated per timestep (goal 0), with gc.mem_alloc();
- bytes of RAM held by the loaded model and by one stream's state;
- .mpy size of each device/ file per architecture (armv6m: RP2040, xtensawin: ESP32);
- armv6m instructions per multiply-accumulate (goal <= 10): in the inner loop
  mpy-cross emits for the RP2040's Thumb kernel (device/kernel_thumb.py), for
  the viper kernel other ports run, and for a textbook viper loop (disassembled
  with arm-none-eabi-objdump); and executed per MAC over a whole timestep's
  matvecs, the Thumb kernel run on an emulated Cortex-M (tests/armv6m.py).

    python bench/device_cell.py     (needs binutils-arm-none-eabi for the static counts)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # armv6m.py: the Thumb kernel on an emulated Cortex-M

import armv6m  # noqa: E402  (tests/armv6m.py)
from edge_agent import blob  # noqa: E402
from edge_agent.board import unixport  # noqa: E402
from edge_agent.learn import model as fmodel  # noqa: E402
from edge_agent.quant import quantize  # noqa: E402

MPY_SCRIPT = r"""
import sys, time, gc, math, array
import blob, cell, layout

def measure(fn, n):
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    fn(n)
    t1 = time.ticks_us()
    return time.ticks_diff(t1, t0) / n, (gc.mem_alloc() - a0) / n

def load(path):
    return layout.BoardModel(blob.load(path))  # the raw blob is garbage once this returns

gc.collect()
before = gc.mem_alloc()
model = load(sys.argv[1])
gc.collect()
held = gc.mem_alloc() - before
c = cell.Cell(model)
state = cell.State(model)

def viper_steps(n):
    i = 0
    while i < n:
        c.step(state)
        i += 1

H, I = model.hidden, model.n_inputs
W = [[((r * 7 + j * 3) % 11 - 5) * 0.05 for j in range(I + H)] for r in range(4 * H)]
bias = [0.01 * (r % 5) for r in range(4 * H)]
x = [0.1 * j for j in range(I)]
h = [0.0] * H
cst = [0.0] * H

def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))

def float_step():
    # the textbook cell on Python floats: z = W [x; h] + b, then the gates
    global h, cst
    xh = x + h
    z = []
    for r in range(4 * H):
        acc = bias[r]
        row = W[r]
        for j in range(I + H):
            acc += row[j] * xh[j]
        z.append(acc)
    new_c = []
    new_h = []
    for n in range(H):
        cn = sigmoid(z[H + n]) * cst[n] + sigmoid(z[n]) * math.tanh(z[2 * H + n])
        new_c.append(cn)
        new_h.append(sigmoid(z[3 * H + n]) * math.tanh(cn))
    cst, h = new_c, new_h

def float_steps(n):
    i = 0
    while i < n:
        float_step()
        i += 1

viper_steps(50)
float_steps(5)
vu, va = measure(viper_steps, int(sys.argv[2]))
fu, fa = measure(float_steps, int(sys.argv[3]))
print(vu, va, fu, fa, held, model.arena_bytes, model.state_bytes)
"""


def bench_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    H, I, K = 32, 6, 4
    layer = fmodel.LSTMLayer(rng.normal(0, 0.3, (4 * H, I)), rng.normal(0, 0.3, (4 * H, H)),
                             rng.normal(0, 0.1, 4 * H), rng.normal(0, 0.1, 4 * H))
    fm = fmodel.FloatModel([layer], rng.normal(0, 0.5, (K, H)), np.zeros(K), np.zeros(I), np.ones(I))
    blob.write(quantize(fm, rng.normal(0, 1, (32, 50, I))), path)


def _loops(objdump: str, code: bytes, tmp: Path):
    """(instructions, multiplies) of every backward-branch loop in Thumb code."""
    path = tmp / "code.bin"
    path.write_bytes(code)
    dis = subprocess.run([objdump, "-D", "-b", "binary", "-marm", "-Mforce-thumb", str(path)],
                         capture_output=True, text=True, check=True).stdout
    ins = []
    for line in dis.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+[0-9a-f ]+\t(\S+)\s*(.*)", line)
        if m:
            ins.append((int(m[1], 16), m[2], m[3]))
    for addr, op, arg in ins:
        target = re.match(r"0x([0-9a-f]+)", arg)
        if op.startswith("b") and op not in ("bl", "blx", "bx", "bic", "bics") and target \
                and int(target[1], 16) < addr:
            body = [i for i in ins if int(target[1], 16) <= i[0] <= addr]
            yield len(body), sum(1 for i in body if i[1].startswith("mul")), \
                sum(1 for i in body if i[1].startswith("ldrb"))


def instructions_per_mac(mpy: Path, tmp: Path) -> tuple[int, int] | None:
    """(instructions, MACs) of the MAC loop: the loop with the fewest instructions
    per MAC, a MAC being a multiply fed by two byte loads. The .mpy is
    disassembled at both byte alignments, since native code may start at an odd
    file offset."""
    objdump = shutil.which("arm-none-eabi-objdump")
    if not objdump:
        return None
    data = mpy.read_bytes()
    best = None
    for skip in (0, 1):
        for n, muls, ldrb in _loops(objdump, data[skip:], tmp):
            macs = min(muls, ldrb // 2)
            if macs and (best is None or n / macs < best[0] / best[1]):
                best = (n, macs)
    return best


NAIVE_KERNEL = """
import micropython

@micropython.viper
def matvec(w: ptr8, x: ptr8, rows: int, cols: int, out: ptr32):
    # the textbook viper matvec over signed int8 bytes
    for r in range(rows):
        acc = 0
        for j in range(cols):
            a = int(w[r * cols + j])
            b = int(x[j])
            acc += ((a ^ 0x80) - 0x80) * ((b ^ 0x80) - 0x80)
        out[r] = acc
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_model(tmp / "model.bin")
        env = {"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"}
        (tmp / "bench.py").write_text(MPY_SCRIPT)
        out = subprocess.run([unixport.binary(), "-X", "heapsize=4M", str(tmp / "bench.py"),
                              str(tmp / "model.bin"), "20000", "200"],
                             capture_output=True, text=True, env=env, check=True).stdout.split()
        vu, va, fu, fa, held, arena, state = map(float, out)
        print("H=32, I=6, 1 layer, under the MicroPython unix port (same process, same run)")
        print(f"  viper cell:        {vu:8.2f} us/step   heap {va:.2f} bytes/step")
        print(f"  float Python cell: {fu:8.2f} us/step   heap {fa:.0f} bytes/step")
        print(f"  speed-up:          {fu / vu:8.1f} x   (goal >= 50)")
        print(f"  RAM held by the loaded model: {held:.0f} bytes (arena {arena:.0f}), "
              f"one stream's state: {state:.0f} bytes")
        print(".mpy sizes (bytes; the Thumb kernel goes to ARM boards only):")
        total = {}
        for arch in ("armv6m", "xtensawin"):
            for src in sorted(unixport.DEVICE_DIR.glob("*.py")):
                if src == armv6m.KERNEL_SOURCE and arch != "armv6m":
                    continue
                dst = tmp / f"{src.stem}.{arch}.mpy"
                subprocess.run(["mpy-cross", f"-march={arch}", "-o", str(dst), str(src)], check=True)
                total.setdefault(src.name, {})[arch] = dst.stat().st_size
        for name, sizes in total.items():
            print(f"  {name:16s} armv6m {sizes['armv6m']:6d}   xtensawin {sizes.get('xtensawin', '-'):>6}")
        print(f"  {'all':16s} armv6m {sum(s['armv6m'] for s in total.values()):6d}   "
              f"xtensawin {sum(s.get('xtensawin', 0) for s in total.values()):6d}")
        print_instruction_counts(tmp)


def print_instruction_counts(tmp: Path) -> None:
    print("armv6m instructions per multiply-accumulate (goal <= 10):")
    (tmp / "naive.py").write_text(NAIVE_KERNEL)
    subprocess.run(["mpy-cross", "-march=armv6m", "-o", str(tmp / "naive.mpy"), str(tmp / "naive.py")], check=True)
    loops = {"Thumb kernel (RP2040)": tmp / "kernel_thumb.armv6m.mpy",
             "viper kernel (ESP32 and others)": tmp / "kernels.armv6m.mpy",
             "textbook viper loop": tmp / "naive.mpy"}
    for label, mpy in loops.items():
        loop = instructions_per_mac(mpy, tmp)
        if loop is None:
            print("  inner loops: install binutils-arm-none-eabi to disassemble")
            break
        print(f"  {label:32s} inner loop {loop[0]:3d} instructions / {loop[1]} MACs = {loop[0] / loop[1]:5.2f}")
    # executed, all overhead included: one timestep of the H=32, I=6 layer (rows padded to 8)
    kernel = armv6m.ThumbMatvec((tmp / "kernel_thumb.armv6m.mpy").read_bytes())
    rng = np.random.default_rng(0)
    macs = 0
    for n in (8, 32):  # W_x (6 inputs padded to 8), W_h
        w, x = rng.integers(0, 256, (128, n)), rng.integers(0, 256, n)
        assert (kernel(w, x, count=True) == w @ x).all()
        macs += w.size
    executed = kernel.cpu.instructions
    print(f"  Thumb kernel, executed on an emulated Cortex-M for one timestep: {executed} instructions, "
          f"{executed / macs:.2f} per MAC ({executed / (128 * 38):.2f} per unpadded MAC)")


if __name__ == "__main__":
    main()
