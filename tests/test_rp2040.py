"""The official MicroPython firmware on an emulated RP2040 (edge_agent/board/rp2040.py):
flash and replay unchanged, the cell bit-exact on ARM (32-bit viper, asm_thumb), and the
watchdog. One board for the module, in file order: it emulates at ~20-50% of real speed.

Needs Node.js, `npm ci` in edge_agent/board/rp2040js, and the firmware and bootrom in
$EDGE_AGENT_FIRMWARE_DIR or ../shared/firmware. Skip with: pytest -m "not rp2040".
"""
import base64
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent import blob, config, recording
from edge_agent.board import flash, unixport
from edge_agent.board.rp2040 import CYCLES_HI, CYCLES_LO, FIRMWARE_ENV, HZ, RP2040Board
from edge_agent.board.transport import RawRepl
from edge_agent.learn import model as fmodel
from edge_agent.quant import quantize
from edge_agent.reference.lstm import IntegerLSTM, Trace
from edge_agent.replay import detections
from test_device_conformance import assert_traces_equal, extreme_inputs, random_quant_model

pytestmark = pytest.mark.rp2040
ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = Path(os.environ.get(FIRMWARE_ENV, ROOT.parent / "shared" / "firmware"))
WDT_S = 8  # device/main.py arms machine.WDT(timeout=8000)
WATCHDOG_CTRL = 0x40058000  # bit 30: enabled


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    if not FIRMWARE.is_dir():
        pytest.fail(f"no RP2040 firmware at {FIRMWARE} (set {FIRMWARE_ENV}, or deselect: -m 'not rp2040')")
    b = RP2040Board(tmp_path_factory.mktemp("rp2040"), FIRMWARE).start()
    yield b
    b.stop()


@pytest.fixture
def settings():
    return config.load(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def big_blob(tmp_path_factory):
    """~32 KB, 2 layers of 48 (RAM allows ~2 such models at once): over a slow link its
    flash outlasts the watchdog."""
    rng = np.random.default_rng(5)
    H, I, K = 48, 6, 4
    layers = [fmodel.LSTMLayer(rng.normal(0, 0.3, (4 * H, w)), rng.normal(0, 0.3, (4 * H, H)),
                               rng.normal(0, 0.1, 4 * H), rng.normal(0, 0.1, 4 * H)) for w in (I, H)]
    fm = fmodel.FloatModel(layers, rng.normal(0, 0.5, (K, H)), np.zeros(K), np.zeros(I), np.ones(I),
                           class_names=["still", "walk", "run", "shake"])
    path = tmp_path_factory.mktemp("big") / "big.bin"
    blob.write(quantize(fm, rng.normal(0, 1, (8, 20, I))), path)
    return path


def crc_of(path: Path) -> str:
    return path.read_bytes()[-4:][::-1].hex()


def board_seconds(repl: RawRepl) -> float:
    """The emulated board's clock (exact cycles at 125 MHz; restarts at a chip reset)."""
    hi, lo = repl.eval(f"(__import__('machine').mem32[{CYCLES_HI}], __import__('machine').mem32[{CYCLES_LO}])")
    return ((hi & 0xFFFFFFFF) << 32 | (lo & 0xFFFFFFFF)) / HZ


def test_flash_reflash_and_replay_equal_numpy(board, settings, demo_paths):
    first = flash.flash(settings, demo_paths["blob"], board.port, progress=False)
    assert first.arch == "armv6m" and "kernel_thumb.mpy" in first.written
    assert "model.bin" in first.written and "config.json" in first.written
    assert first.ready["model_crc"] == crc_of(demo_paths["blob"])
    again = flash.flash(settings, demo_paths["blob"], board.port, progress=False)
    assert again.written == [] and len(again.skipped) == len(first.written)
    rec = recording.load(demo_paths["recording"])
    a, b = 400, 800  # 8 s (shake, still, walk): the emulated board is slow
    rec = dataclasses.replace(rec, x=rec.x[a:b], t=rec.t[a:b], labels=rec.labels and rec.labels[a:b])
    qm = blob.read(demo_paths["blob"])
    settings.hop = 50  # overlapping windows: two staggered states on the board
    on_board = list(detections(rec, qm, settings, "board", port=board.port))
    reference = list(detections(rec, qm, settings, "numpy"))
    assert len(reference) >= 7 and len({d["label"] for d in reference}) >= 3
    assert on_board == reference
    assert board.resets == 0


def test_monitor_shows_the_boards_cost(board):
    """The runner's status carries its measured us per step and CPU load; monitor shows them."""
    from edge_agent.board import link
    from edge_agent.mqtt import monitor

    view = monitor.FleetView()
    stop = monitor.serial_source(board.port)(view, lambda *a: None)
    ser = link.open_serial(board.port)
    try:
        for i in range(60):
            ser.write(link.sample_line([i * 50 - 1500] * 6))
        ser.write(link.command_line({"status": True}))
        end = time.monotonic() + 120
        while not any(d.metrics.get("step_us_mean") for d in view.devices.values()):
            assert time.monotonic() < end, "no status with the cost came"
            time.sleep(0.2)
    finally:
        ser.close()
        stop()
    metrics = next(d.metrics for d in view.devices.values() if d.metrics)
    assert 0 < metrics["step_us_mean"] <= metrics["step_us_max"] and 0 < metrics["cpu_load"] <= 1
    assert f"{metrics['step_us_mean']}/{metrics['step_us_max']}" in view.table()


def _run_windows(repl: RawRepl, qm, x_q, lengths):
    """device/evalfile.py windows, with trace, run by the board's firmware."""
    repl.write_file("m.bin", blob.pack(qm))
    repl.write_file("in.bin", unixport.windows_input(x_q, lengths, qm.x_bits))
    repl.exec("evalfile.main(['', 'windows', 'm.bin', 'in.bin', 'out.bin', 'trace'])", timeout=120)
    out = repl.exec("f = open('out.bin', 'rb')\nwhile True:\n b = f.read(3000)\n if not b:\n  break\n"
                    " print(binascii.b2a_base64(b).decode().strip())\nf.close()")
    data = b"".join(base64.b64decode(line) for line in out.split())
    return unixport.read_windows(data, len(x_q), x_q.shape[1], lengths, True, len(qm.layers),
                                 qm.hidden, qm.n_classes, qm.h_bits)


def test_cell_bit_exact_on_arm(board):
    """12 random models (1-3 layers, four of 3), weights and inputs at their bounds:
    every layer's h and c after every step, and the logits, equal the reference."""
    repl = RawRepl(board.port)
    try:
        repl.enter()
        repl.write_file("evalfile.py", (unixport.DEVICE_DIR / "evalfile.py").read_bytes())
        assert repl.exec("import binascii, evalfile, cell\nprint(cell.KERNEL)").strip() == "thumb"
        saturated_c = saturated_h = 0
        for seed in range(12):
            layers = 1 + seed % 3
            qm, rng = random_quant_model(2000 + seed, layers)
            x_q = extreme_inputs(rng, (3, 12, qm.n_inputs))
            lengths = np.array([12, int(rng.integers(1, 12)), 12])
            trace = Trace()
            want = IntegerLSTM(qm).run(x_q, lengths, trace)
            got, h, c = _run_windows(repl, qm, x_q, lengths)
            for w, n in enumerate(lengths):
                for k in range(layers):
                    assert np.array_equal(h[w, :n, k], trace.hidden[k][w, :n]), f"seed {seed} layer {k} h"
                    assert np.array_equal(c[w, :n, k], trace.cell[k][w, :n]), f"seed {seed} layer {k} c"
            assert np.array_equal(got, want), f"seed {seed} logits"
            saturated_c += any(np.abs(cc).max() >= 32767 for cc in trace.cell)
            saturated_h += any(hh.max() == 127 or hh.min() == -128 for hh in trace.hidden)
        assert saturated_c >= 1 and saturated_h >= 3  # the clamps were exercised
        repl.exec("import os\nfor f in ('m.bin', 'in.bin', 'out.bin', 'evalfile.py'):\n os.remove(f)")
    finally:
        repl.close()


def test_state16_bit_exact_on_arm(board, settings, demo_paths):
    """A 16-bit state on ARM (the Thumb matvec16 and lstm_update): random models of 1 and
    3 layers, and of 2 with int16 inputs (layer 0 through matvec16 too), every layer's h
    and c after every step, and the logits, equal the reference."""
    flash.flash(settings, demo_paths["blob"], board.port, progress=False)  # device/, when run alone (-k)
    repl = RawRepl(board.port)
    try:
        repl.enter()
        repl.write_file("evalfile.py", (unixport.DEVICE_DIR / "evalfile.py").read_bytes())
        repl.exec("import binascii, evalfile, kernels")
        assert repl.eval("kernels.lstm_update16 is kernels.lstm_update and kernels.KERNEL == 'thumb'")
        for seed, layers, x_bits in ((4000, 1, 8), (4001, 3, 8), (4002, 2, 16)):
            qm, rng = random_quant_model(seed, layers, h_bits=16, x_bits=x_bits)
            x_q = extreme_inputs(rng, (3, 12, qm.n_inputs), x_bits)
            lengths = np.array([12, int(rng.integers(1, 12)), 12])
            got, h, c = _run_windows(repl, qm, x_q, lengths)
            assert_traces_equal(qm, x_q, lengths, got, h, c, f"seed {seed}")
        repl.exec("import os\nfor f in ('m.bin', 'in.bin', 'out.bin', 'evalfile.py'):\n os.remove(f)")
    finally:
        repl.close()


def test_flash_outlasting_the_watchdog_completes(board, settings, big_blob):
    """The runner has armed machine.WDT(8000); a flash that keeps the board in the raw
    REPL for longer (a big model over a slow link) completes, with no reset."""
    repl = RawRepl(board.port)
    try:
        repl.enter()
        repl.reset()  # the runner starts afresh and arms its watchdog
        flash.wait_ready(repl.t.serial, 60)
        repl.enter()
        before = board_seconds(repl)
        assert repl.eval(f"__import__('machine').mem32[{WATCHDOG_CTRL}] >> 30 & 1") == 1  # armed
    finally:
        repl.close()
    resets = board.resets
    result = flash.flash(settings, big_blob, board.port, ready_timeout=120,
                         progress=lambda n: time.sleep(3))  # a slow link: 3 s per 8 KB chunk
    assert "model.bin" in result.written
    assert result.ready["model_crc"] == crc_of(big_blob) and not result.ready["errors"]
    repl = RawRepl(board.port)
    try:
        repl.enter()
        took = board_seconds(repl) - before
    finally:
        repl.close()
    assert board.resets == resets
    assert took > WDT_S + 2, f"the flash took {took:.1f} s of board time: not a test of the watchdog"


HUNG_BOOT = """
import os, sensors, time
os.remove('boot.py')  # once: after the reset the runner starts normally
class Hung:  # a sensor whose read never returns
    eof = False
    def read(self, raw):
        while True:
            time.sleep_ms(100)
sensors.make = lambda *args: Hung()
"""


def test_hung_runner_is_reset_and_comes_back(board, big_blob):
    """The runner, started at boot, gets stuck in a sensor read and stops feeding the
    watchdog: the board resets, keeps its flash and comes back running the same model."""
    repl = RawRepl(board.port)
    try:
        repl.enter()
        repl.write_file("boot.py", HUNG_BOOT.encode())  # runs before main.py at the next start
        seen = len(board.events)
        repl.reset()
        first = flash.wait_ready(repl.t.serial, 120)  # the runner is up, with the hung sensor
        assert first["model_crc"] == crc_of(big_blob)
        assert board.wait_event("reset", 120, after=seen) == "reset watchdog"
        ready = flash.wait_ready(repl.t.serial, 120)
        assert ready["model_crc"] == crc_of(big_blob) and not ready["errors"]
        assert ready["boot"] != first["boot"]
        repl.enter()
        assert repl.eval("__import__('machine').reset_cause() == __import__('machine').WDT_RESET")
        assert repl.eval("'boot.py' in __import__('os').listdir()") is False
    finally:
        repl.close()


def test_files_survive_a_power_cycle(board, big_blob):
    """DIR holds the flash: a new emulator on it boots the same runner and model."""
    board.stop()
    with RP2040Board(board.dir, FIRMWARE) as again:
        repl = RawRepl(again.port)
        try:
            ready = flash.wait_ready(repl.t.serial, 120)
        finally:
            repl.close()
    assert ready["model_crc"] == crc_of(big_blob)


def test_missing_parts_are_one_line(tmp_path, monkeypatch):
    from edge_agent.errors import UserError

    with pytest.raises(UserError, match="no such firmware"):
        RP2040Board(tmp_path, tmp_path / "nowhere")
    (tmp_path / "fw.uf2").write_bytes(b"\0" * 512)
    with pytest.raises(UserError, match="bootrom"):
        RP2040Board(tmp_path, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="Node.js"):
        RP2040Board(tmp_path, FIRMWARE)
