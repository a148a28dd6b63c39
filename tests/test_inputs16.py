"""int16 inputs into layer 0 (state format 2: docs/arithmetic.md, "16-bit inputs"):
the blob marks them and both readers check their limits; the quantizer spans
the calibrated range with int16 and refuses what the board cannot prove; the
reference and the board agree bit for bit (here, and on the emulated RP2040 in
test_rp2040.py); where int8 inputs decide, they stay closer to the float
model and `quantize` takes them on its own; the CLI forces them; the board
runs them without allocating."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.errors import UserError
from edge_agent.quant import quantize
from edge_agent.quant.calibrate import quantize_calibrated
from edge_agent.quant.fixedpoint import INT32_MAX
from edge_agent.reference.inputs import model_inputs, quantize_raw, to_raw
from helpers import random_model, run_board_script, run_cli
from test_device_conformance import (assert_stream_equal, assert_traces_equal, extreme_inputs,
                                     random_quant_model, run_traced)
from test_hardening_blob import readers_agree, set_header, zero_model
from test_state16 import STATE_WORD, exact_model, logits_rms, wide


def wide_inputs(qm: blob.QuantModel) -> blob.QuantModel:
    """qm (16-bit state) with int16 inputs."""
    return dataclasses.replace(qm, x_bits=16)


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(11)
    fm = random_model(rng, n_in=4, hidden=10, layers=2, classes=3)
    x = rng.normal(0, 1.5, (12, 30, 4)) * fm.std + fm.mean
    return fm, x, quantize(fm, x, h_bits=16), quantize(fm, x, h_bits=16, x_bits=16)


# ---- the blob ----------------------------------------------------------------------

def test_round_trip_marks_the_inputs(models):
    _, _, q16, q16x16 = models
    packed = blob.pack(q16x16)
    assert struct.unpack_from("<I", packed, STATE_WORD)[0] == 2
    back = blob.unpack(packed)
    assert (back.h_bits, back.x_bits) == (16, 16) and blob.pack(back) == packed
    assert struct.unpack_from("<I", blob.pack(q16), STATE_WORD)[0] == 1 and blob.unpack(blob.pack(q16)).x_bits == 8
    # the same weights; layer 0's input rows are rescaled for inputs 256 times finer
    for a, b in zip(q16.layers, q16x16.layers):
        assert np.array_equal(a.wx, b.wx) and np.array_equal(a.wh, b.wh)
    assert np.all(q16x16.layers[0].px >= q16.layers[0].px)
    with pytest.raises(ValueError, match="int8 state with int16 inputs"):
        blob.state_format(8, 16)


def hostile_input_blobs() -> list[tuple[str, bytes, bool]]:
    """(what, blob, should load) for every limit int16 inputs add."""
    base = blob.pack(wide_inputs(wide(zero_model())))
    cases = [("int16 inputs, zero model", base, True), ("state format 3", set_header(base, STATE_WORD, "<I", 3), False)]
    cases.append(("C 128", blob.pack(wide_inputs(wide(zero_model(C=128)))), True))
    cases.append(("C 129", blob.pack(wide_inputs(wide(zero_model(C=129)))), False))
    cases.append(("C 129, int8 inputs", blob.pack(wide(zero_model(C=129))), True))
    # the proof with |x| <= 32768 in layer 0: an input row that int8 inputs prove, int16 do not,
    # and its pre-shift proves again
    row = wide(zero_model())
    row.layers[0].wx[0, 0] = 127
    row.layers[0].mx[0] = INT32_MAX // (256 * 127)
    cases.append(("layer 0 input row, int8 inputs", blob.pack(row), True))
    cases.append(("layer 0 input row, int16 inputs", blob.pack(wide_inputs(row)), False))
    fixed = wide_inputs(row)
    fixed.layers[0].px[0] = 9
    cases.append(("layer 0 input row, int16 inputs, pre-shift 9", blob.pack(fixed), True))
    return cases


def test_both_readers_check_the_int16_input_limits_alike(tmp_path):
    host, board = readers_agree(hostile_input_blobs(), tmp_path)
    assert "state format = 3 is outside 0..2" in host[1] and "state format = 3 is outside 0..2" in board[1]
    assert "C = 129 is outside 1..128 (int16 inputs)" in host[3] and "C = 129 is outside 1..128" in board[3]


# ---- the quantizer -------------------------------------------------------------------

def test_inputs_span_the_calibrated_range_in_int16(models):
    fm, x, q16, q16x16 = models
    x8, x16 = model_inputs(q16, x), model_inputs(q16x16, x)
    flat = x.reshape(-1, x.shape[2])
    for c in range(x.shape[2]):  # min/max calibration: the extremes land on the ends of the range
        lo, hi = flat[:, c].argmin(), flat[:, c].argmax()
        assert abs(int(x16.reshape(-1, x.shape[2])[lo, c]) + 32768) <= 2
        assert abs(int(x16.reshape(-1, x.shape[2])[hi, c]) - 32767) <= 2
    # 65535 steps over the range instead of 255: 257 int16 steps to an int8 one
    assert np.abs((x16 + 32768) / 257.0 - 128 - x8).max() <= 1.01
    # readings past the calibrated range clamp at int16's ends, not int8's
    raw = to_raw(np.stack([flat.min(0) - 10 * fm.std, flat.max(0) + 10 * fm.std]), q16x16.inputs)
    assert np.array_equal(quantize_raw(raw, q16x16.inputs, 16), [[-32768] * 4, [32767] * 4])


def test_int16_inputs_need_a_16_bit_state_and_at_most_128_channels(rng):
    fm = random_model(rng, n_in=3, hidden=4, layers=1, classes=2)
    x = rng.normal(0, 1, (2, 5, 3))
    with pytest.raises(UserError, match="int16 inputs come with a 16-bit hidden state"):
        quantize(fm, x, x_bits=16)
    with pytest.raises(UserError, match="input width 12"):
        quantize(fm, x, h_bits=16, x_bits=12)
    wide_fm = random_model(rng, n_in=129, hidden=4, layers=1, classes=2)
    with pytest.raises(UserError, match="at most 128 channels"):
        quantize(wide_fm, rng.normal(0, 1, (2, 5, 129)), h_bits=16, x_bits=16)
    quantize(wide_fm, rng.normal(0, 1, (2, 5, 129)), h_bits=16)  # int8 inputs: any width
    with pytest.raises(UserError, match="--input-bits 16 comes with a 16-bit hidden state"):
        quantize_calibrated(fm, x, state_bits="8", input_bits="16")


def off_grid_model(seed: int):
    """exact_model's long memory with inputs off the int8 grid: the inputs' resolution
    decides as much as the state's."""
    fm, x = exact_model(seed)
    x = x + np.random.default_rng(seed).uniform(-0.5, 0.5, x.shape) / 128
    return fm, x


@pytest.mark.parametrize("seed", [0, 1])
def test_int16_inputs_stay_closer_to_float_where_inputs_decide(seed):
    fm, x = off_grid_model(seed)
    err = {x_bits: logits_rms(fm, x, quantize(fm, x, h_bits=16, x_bits=x_bits)) for x_bits in (8, 16)}
    assert err[16] < 0.5 * err[8], err


def test_auto_takes_int16_inputs_where_a_16_bit_state_still_loses_decisions():
    fm, x = off_grid_model(1)
    qm, report = quantize_calibrated(fm, x, state_bits="auto", input_bits="auto")
    by_format = {tag: max(s["agreement"] for n, s in report["candidates"].items() if n.endswith(tag))
                 for tag in ("/h16x16", "/h16")}
    best8 = max(s["agreement"] for n, s in report["candidates"].items() if "/" not in n)
    assert max(best8, by_format["/h16"]) < 0.99  # both cheaper formats lose decisions here
    assert (report["h_bits"], report["x_bits"]) == (qm.h_bits, qm.x_bits) == (16, 16)
    assert report["agreement"] == by_format["/h16x16"] > max(best8, by_format["/h16"])
    # forced, the chooser does not widen
    qm, report = quantize_calibrated(fm, x, calibration="minmax", state_bits="16", input_bits="8")
    assert qm.x_bits == 8 and not any(n.endswith("x16") for n in report["candidates"])


# ---- host == board, bit for bit ----------------------------------------------------------

@pytest.mark.parametrize("first", range(0, 60, 20))
def test_int16_inputs_bit_exact_on_the_unix_port(first):
    """1 to 3 layers, weights, inputs and cells at their bounds: every layer's h and c
    after every step, and the logits."""
    for seed in range(first, first + 20):
        qm, rng = random_quant_model(5000 + seed, 1 + seed % 3, h_bits=16, x_bits=16)
        x_q = extreme_inputs(rng, (3, 12, qm.n_inputs), 16)
        lengths = np.array([12, int(rng.integers(1, 12)), 12])
        got, h, c = run_traced(qm, x_q, lengths)
        assert_traces_equal(qm, x_q, lengths, got, h, c, f"seed {5000 + seed}")


@pytest.mark.parametrize("seed", range(8))
def test_int16_inputs_stream_and_quantize_alike_on_the_unix_port(seed):
    """Decisions from int16 readings quantized by the board's own kernel (odd seeds),
    or from int16 inputs (even), equal the reference's."""
    qm, rng = random_quant_model(6000 + seed, h_bits=16, x_bits=16)
    window = int(rng.integers(1, 15))
    hop = int(rng.integers(1, window + 1))
    continuous, raw = bool(seed % 3 == 2), bool(seed % 2)
    total = int(rng.integers(window, 60))
    if raw:
        samples = extreme_inputs(rng, (total, qm.n_inputs), 16)
        x_q = quantize_raw(samples, qm.inputs, 16)
        assert np.abs(x_q).max() > 127  # the readings use the int16 range
    else:
        samples = x_q = extreme_inputs(rng, (total, qm.n_inputs), 16)
    assert_stream_equal(qm, samples, x_q, window, hop, continuous, raw)


# ---- the command line ------------------------------------------------------------------

def test_cli_input_bits(tmp_path, demo_paths):
    out = tmp_path / "m.bin"
    args = ["quantize", "--model", demo_paths["model"], "--calib", demo_paths["data"], "--out", out,
            "--calibration", "minmax", "--calib-windows", 40]
    proc = run_cli(*args, "--state-bits", "16", "--input-bits", "16")
    assert proc.returncode == 0, proc.stderr
    assert "16-bit inputs" in proc.stdout and (blob.read(out).h_bits, blob.read(out).x_bits) == (16, 16)
    proc = run_cli("evaluate", "--model", demo_paths["model"], "--blob", out, "--data", demo_paths["data"])
    assert proc.returncode == 0, proc.stderr
    assert "integer accuracy" in proc.stdout and "(numpy, int16 state and inputs)" in proc.stdout
    out.unlink()
    for bad, words in ((("--state-bits", "8", "--input-bits", "16"), "16-bit hidden state"),
                       (("--input-bits", "12"), "--input-bits")):
        proc = run_cli(*args, *bad)
        assert proc.returncode != 0 and not out.exists()
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


# ---- the board: RAM, and no allocation per sample ----------------------------------------

BOARD_CHECK = """
import array, gc, sys, blob, cell, layout
m16 = layout.BoardModel(blob.load(sys.argv[1]))
m16x16 = layout.BoardModel(blob.load(sys.argv[2]))
c16, c16x16 = cell.Cell(m16), cell.Cell(m16x16)
print(m16.state_bytes, m16x16.state_bytes, m16.arena_bytes, m16x16.arena_bytes, len(c16.x), len(c16x16.x))
c, st = c16x16, cell.State(m16x16)
raw = array.array("h", [0] * m16x16.n_inputs)
c.quantize(raw)
c.step(st)
c.head(st)
gc.collect()
gc.disable()
before = gc.mem_alloc()
for t in range(50):
    raw[0] = (t * 2731) & 0x7FFF
    c.quantize(raw)
    c.step(st)
    c.head(st)
print(gc.mem_alloc() - before)
"""


def test_board_ram_and_no_allocation_per_sample(tmp_path, models):
    _, _, q16, q16x16 = models
    sizes, alloc = run_board_script(BOARD_CHECK, [blob.pack(q16), blob.pack(q16x16)], tmp_path)
    state_a, state_b, arena_a, arena_b, x_a, x_b = map(int, sizes.split())
    assert (state_a, arena_a) == (state_b, arena_b)  # the same state and weights
    assert x_b == 2 * x_a == 2 * 8  # the input buffer: 2 bytes a (padded) channel instead of 1
    assert int(alloc) == 0
