"""The 16-bit hidden state (docs/arithmetic.md, "16-bit hidden state"): the blob
marks it and both readers check it; the quantizer's pre-shifts keep the
rescaling precise and int32-safe; the reference checks it as it runs; it stays
closer to the float model than 8 bits over long windows; the CLI forces it; the
board runs it without allocating. Bit-exactness against device/ is in
test_device_conformance.py (unix port) and test_rp2040.py (emulated RP2040)."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.errors import UserError
from edge_agent.learn import model as fmodel
from edge_agent.quant import quantize
from edge_agent.quant.fixedpoint import (INT32_MAX, OverflowProofError, choose_multiplier,
                                         choose_prescaled_multiplier, pre_shift, prescaled_bound)
from edge_agent.reference.inputs import model_inputs
from edge_agent.reference.lstm import IntegerLSTM, Trace
from helpers import random_model, run_board_script, run_cli
from test_hardening_blob import entry, readers_agree, recrc, set_header, set_type, set_value, \
    zero_model

STATE_WORD = 28  # the header's state format (docs/format.md)


def wide(qm: blob.QuantModel) -> blob.QuantModel:
    """qm with a 16-bit state and every pre-shift 0."""
    rows = 4 * qm.hidden
    layers = [dataclasses.replace(layer, px=np.zeros(rows, np.uint8), ph=np.zeros(rows, np.uint8))
              for layer in qm.layers]
    head = dataclasses.replace(qm.head, p=np.zeros(qm.n_classes, np.uint8))
    return dataclasses.replace(qm, layers=layers, head=head, h_bits=16)


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(7)
    fm = random_model(rng, n_in=5, hidden=12, layers=2, classes=3)
    x = rng.normal(0, 1.5, (12, 30, 5)) * fm.std + fm.mean
    return fm, x, quantize(fm, x), quantize(fm, x, h_bits=16)


# ---- the blob ----------------------------------------------------------------------

def test_round_trip_marks_the_state_and_keeps_8_bits_byte_for_byte(models, demo_paths):
    fm, x, q8, q16 = models
    packed = blob.pack(q16)
    assert struct.unpack_from("<I", packed, STATE_WORD)[0] == 1
    back = blob.unpack(packed)
    assert back.h_bits == 16 and blob.pack(back) == packed
    for a, b in zip(back.layers, q16.layers):
        assert np.array_equal(a.px, b.px) and np.array_equal(a.ph, b.ph) and a.px.dtype == np.uint8
    assert np.array_equal(back.head.p, q16.head.p)
    for tag in (b"PX__", b"PH__"):
        assert [entry(packed, tag, k)[3] for k in range(2)] == [4 * 12, 4 * 12]
    assert entry(packed, b"PD__")[3] == 3
    # 8 bits: the format as it was, word 28 zero, no pre-shift sections, the same bytes
    p8 = blob.pack(q8)
    assert struct.unpack_from("<I", p8, STATE_WORD)[0] == 0 and blob.unpack(p8).h_bits == 8
    assert p8 == blob.pack(quantize(fm, x, h_bits=8))
    with pytest.raises(KeyError):
        entry(p8, b"PX__", 0)
    demo = demo_paths["blob"].read_bytes()
    assert blob.pack(blob.unpack(demo)) == demo
    # the same int8 weights, at either width (the biases here are small beside them)
    for a, b in zip(q8.layers, q16.layers):
        assert np.array_equal(a.wx, b.wx) and np.array_equal(a.wh, b.wh)
    assert np.array_equal(q8.head.w, q16.head.w)


def anomaly_zero_model() -> blob.QuantModel:
    qm = zero_model(C=3, K=3)
    return dataclasses.replace(qm, anomaly=blob.AnomalyHead(np.ones(3, np.int32), 1, 2, 10, 1), class_names=[])


def hostile_wide_blobs() -> list[tuple[str, bytes, bool]]:
    """(what, blob, should load) for every limit a 16-bit state adds."""
    base = blob.pack(wide(zero_model()))
    cases = [("16-bit zero model", base, True)]
    for v in (3, 255, 1 << 16, 2**32 - 1):
        cases.append((f"state format {v}", set_header(base, STATE_WORD, "<I", v), False))
    cases.append(("H 128", blob.pack(wide(zero_model(H=128))), True))
    cases.append(("H 129", blob.pack(wide(zero_model(H=129))), False))
    cases.append(("H 129, 8 bits", blob.pack(zero_model(H=129)), True))
    for tag, layer in ((b"PX__", 0), (b"PH__", 0), (b"PD__", 255)):
        for v, ok in ((0, True), (30, True), (31, False), (255, False)):
            cases.append((f"{tag.decode()}={v}", set_value(base, tag, layer, v), ok))
        cases.append((f"{tag.decode()} typed int8", set_type(base, tag, layer, 1), False))
        gone = bytearray(base)  # an unknown tag is skipped: the section is missing
        gone[entry(base, tag, layer)[0]] = ord("Q")
        cases.append((f"{tag.decode()} missing", recrc(gone), False))
    two = zero_model(L=2)
    short = wide(two)
    short.layers[1].ph = np.zeros(4 * two.hidden - 1, np.uint8)
    cases.append(("PH__ of layer 1 one short", blob.pack(short), False))
    cases.append(("2 layers", blob.pack(wide(two)), True))
    # an anomaly head keeps 8 bits
    cases.append(("anomaly, 8 bits", blob.pack(anomaly_zero_model()), True))
    cases.append(("anomaly, 16 bits", blob.pack(wide(anomaly_zero_model())), False))
    # the proof with |h| <= 32768: a recurrent row that 8 bits prove, 16 bits do not,
    # and its pre-shift proves again
    row = zero_model()
    row.layers[0].wh[0, 0] = 127
    row.layers[0].mh[0] = INT32_MAX // (256 * 127)
    row.layers[0].sh[0] = 30
    cases.append(("recurrent row, 8 bits", blob.pack(row), True))
    cases.append(("recurrent row, 16 bits", blob.pack(wide(row)), False))
    fixed = wide(row)
    fixed.layers[0].ph[0] = 9
    cases.append(("recurrent row, 16 bits, pre-shift 9", blob.pack(fixed), True))
    # the pre-shift's rounding half must fit beside the accumulator
    big = wide(zero_model())
    big.layers[0].bx[0] = INT32_MAX - 2**20
    big.layers[0].mx[0], big.layers[0].sx[0], big.layers[0].px[0] = 1, 1, 20
    cases.append(("bias beside a pre-shift of 20", blob.pack(big), True))
    big.layers[0].px[0] = 22
    cases.append(("bias beside a pre-shift of 22", blob.pack(big), False))
    # layers above 0 take int16 inputs: |x| <= 32768 there, 128 in layer 0
    above = zero_model(L=2)
    above.layers[1].wx[0, 0] = 127
    above.layers[1].mx[0] = INT32_MAX // (256 * 127)
    above.layers[0].wx[0, 0] = 127
    above.layers[0].mx[0] = INT32_MAX // (256 * 127)
    cases.append(("input rows, 16 bits", blob.pack(wide(above)), False))
    above.layers[1].mx[0] = 1
    cases.append(("layer 0 input row stays int8", blob.pack(wide(above)), True))
    head = zero_model()
    head.head.w[0, 0] = 127
    head.head.m[0] = INT32_MAX // (256 * 127)
    cases.append(("head, 8 bits", blob.pack(head), True))
    cases.append(("head, 16 bits", blob.pack(wide(head)), False))
    return cases


def test_both_readers_check_the_16_bit_limits_alike(tmp_path):
    host, board = readers_agree(hostile_wide_blobs(), tmp_path)
    assert "state format = 3 is outside 0..2" in host[1] and "state format = 3 is outside 0..2" in board[1]


# ---- the quantizer's pre-shift --------------------------------------------------------

@pytest.mark.parametrize("real,bound", [(2**-10, 2**26), (3.7e-4, 5 * 10**8), (0.01, 2**20), (1e-7, 2**30),
                                        (0.25, 1000), (2**-12, INT32_MAX - 2**24)])
def test_pre_shift_is_proven_and_no_worse_than_none(real, bound):
    p, m, s = choose_prescaled_multiplier(real, bound)
    half = (1 << p) >> 1
    assert bound + half <= INT32_MAX
    assert prescaled_bound(bound, p) * m + (1 << (s - 1)) <= INT32_MAX
    for acc in (bound, -bound, bound // 3, -(bound // 7), 1, 0):  # within int32 at every step, and close
        got = (pre_shift(acc, p) * m + (1 << (s - 1))) >> s
        assert abs(got - acc * real) <= half * real + abs(m / 2**s - real * 2**p) * bound / 2**p + 1
    try:
        m0, s0 = choose_multiplier(real, bound)
    except OverflowProofError:
        return
    assert half * real + abs(m / 2**s - real * 2**p) * prescaled_bound(bound, p) <= abs(m0 / 2**s0 - real) * bound


def test_16_bit_multipliers_keep_their_bits(models):
    """Proven against an int16 h's bound alone, a recurrent multiplier keeps ~8 bits
    fewer than with int8 h; the pre-shift wins most of them back."""
    _, _, _, q16 = models
    for layer in q16.layers:
        bound = 32768 * np.abs(layer.wh.astype(np.int64)).sum(axis=1)
        real = layer.mh / 2.0 ** (layer.sh.astype(np.int64) + layer.ph)
        plain = [choose_multiplier(float(r), int(b))[0] for r, b in zip(real, bound)]
        assert np.median(layer.ph) >= 6
        assert np.median(np.log2(layer.mh)) >= np.median(np.log2(plain)) + 5


def test_a_hidden_width_past_the_proof_is_refused(rng):
    fm = random_model(rng, n_in=2, hidden=129, layers=1, classes=2)
    with pytest.raises(UserError, match="at most 128 hidden units"):
        quantize(fm, rng.normal(0, 1, (2, 5, 2)), h_bits=16)
    with pytest.raises(UserError, match="hidden state width 12"):
        quantize(fm, rng.normal(0, 1, (2, 5, 2)), h_bits=12)


# ---- the reference ---------------------------------------------------------------------

def test_streaming_and_whole_windows_agree(models):
    """step/logits, hidden_sequence and run give the same int16 h and logits."""
    _, x, _, q16 = models
    x_q = model_inputs(q16, x)
    trace = Trace()
    engine = IntegerLSTM(q16)
    want = engine.run(x_q, trace=trace)
    assert np.abs(trace.hidden[-1]).max() > 127  # h uses the int16 range
    assert np.array_equal(engine.hidden_sequence(x_q), trace.hidden[-1])
    engine.reset(len(x_q))
    for t in range(x_q.shape[1]):
        top = engine.step(x_q[:, t])
        assert np.array_equal(top, trace.hidden[-1][:, t])
    assert np.array_equal(engine.logits(), want)


# ---- the reference checks int32 as it runs --------------------------------------------

@pytest.mark.parametrize("where", ["input", "recurrent", "head"])
def test_reference_stops_where_a_value_leaves_int32(where):
    """Models the quantizer would refuse (built by hand, past the readers' checks): the
    reference names the overflow instead of computing what a 64-bit host sees."""
    qm = wide(zero_model(C=3, H=4, K=2))
    layer = qm.layers[0]
    layer.wx[:], layer.wh[:], qm.head.w[:] = 100, 100, 100
    x_q = np.full((1, 6, 3), 127)
    if where == "input":
        layer.bx[:] = INT32_MAX - 100
        layer.px[:] = 4
    elif where == "recurrent":
        layer.mh[:], layer.sh[:], layer.ph[:] = 1 << 24, 24, 1  # gates saturate, h grows, acc * M passes 2^31
        layer.bx[:] = 10**6
        layer.mx[:], layer.sx[:] = 1 << 10, 10  # z = ax: every gate saturates
    else:
        layer.bx[:], layer.wh[:] = 10**6, 0
        layer.mx[:], layer.sx[:] = 1 << 10, 10  # z = ax: every gate saturates
        qm.head.b[:] = INT32_MAX - 1000
        qm.head.p[:] = 12
    with pytest.raises(OverflowProofError, match="head" if where == "head" else f"layer 0 {where}"):
        IntegerLSTM(qm).run(x_q)


# ---- closer to the float model over long windows --------------------------------------

def exact_model(seed: int, hidden=32, n_in=3, classes=4, scale=0.3):
    """A float model whose weights int8 rows hold exactly, and with inputs on the int8
    grid: what is left between float and integer is mostly the state's resolution."""
    rng = np.random.default_rng(seed)

    def on_grid(rows, cols, peak):
        k = rng.integers(-127, 128, (rows, cols))
        k[:, 0] = 127  # every row's peak is on the grid
        return k * (rng.uniform(0.5, 1.5, (rows, 1)) * peak) / 127

    bias = rng.normal(0, 0.1, 4 * hidden)
    bias[hidden:2 * hidden] += 2.0  # a long memory: forget gates near 1
    layer = fmodel.LSTMLayer(on_grid(4 * hidden, n_in, 128 * scale), on_grid(4 * hidden, hidden, scale),
                             bias, np.zeros(4 * hidden))
    fm = fmodel.FloatModel([layer], on_grid(classes, hidden, 1.0), np.zeros(classes), np.zeros(n_in),
                           np.ones(n_in))
    x = rng.integers(-128, 128, (48, 300, n_in)) / 128.0  # int8 steps of 1/128
    x[0, 0], x[0, 1] = -1.0, 127 / 128  # the calibrated range: scale 1/128, zero point 0
    return fm, x


def logits_rms(fm, x, qm) -> float:
    """The rms error of qm's logits (the integer reference) against the float model's on x."""
    got = IntegerLSTM(qm).run(model_inputs(qm, x)) / 2.0**qm.head.out_frac
    return float(np.sqrt(np.mean((got - fm.forward(x)) ** 2)))


@pytest.mark.parametrize("seed", [0, 1])
def test_16_bits_stay_closer_to_float_over_long_windows(seed):
    fm, x = exact_model(seed)
    err = {}
    for bits in (8, 16):
        qm = quantize(fm, x, h_bits=bits)
        assert np.array_equal(model_inputs(qm, x), np.round(x * 128))  # the inputs are exact: only the model differs
        err[bits] = logits_rms(fm, x, qm)
    assert err[16] < 0.4 * err[8], err  # measured: 0.18x and 0.19x


# ---- the command line ------------------------------------------------------------------

def test_cli_state_bits(tmp_path, demo_paths):
    out = tmp_path / "m.bin"
    args = ["quantize", "--model", demo_paths["model"], "--calib", demo_paths["data"], "--out", out,
            "--calibration", "minmax", "--calib-windows", 40]
    proc = run_cli(*args, "--state-bits", "16")
    assert proc.returncode == 0, proc.stderr
    assert "16-bit state" in proc.stdout and blob.read(out).h_bits == 16
    out.unlink()
    proc = run_cli(*args, "--state-bits", "12")
    assert proc.returncode != 0 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--state-bits" in lines[0] and "Traceback" not in proc.stderr


def test_anomaly_head_keeps_8_bits(models):
    from edge_agent.quant.anomaly import prediction_head

    fm, _, _, q16 = models
    with pytest.raises(UserError, match="8-bit hidden state"):
        prediction_head(fm, q16)


# ---- the board: RAM, and no allocation per step ----------------------------------------

BOARD_CHECK = """
import gc, sys, blob, cell, layout
m8 = layout.BoardModel(blob.load(sys.argv[1]))
m16 = layout.BoardModel(blob.load(sys.argv[2]))
print(m8.state_bytes, m16.state_bytes, m8.arena_bytes, m16.arena_bytes)

def allocated(c, st, n):
    c.step(st)
    c.head(st)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for t in range(n):
        c.x[0] = (t * 91) & 0xFF
        c.step(st)
        c.head(st)
    return gc.mem_alloc() - before

print(allocated(cell.Cell(m16), cell.State(m16), 50))
"""


def test_board_ram_and_no_allocation_per_step(tmp_path, models):
    _, _, q8, q16 = models
    sizes, alloc = run_board_script(BOARD_CHECK, [blob.pack(q8), blob.pack(q16)], tmp_path)
    state8, state16, arena8, arena16 = map(int, sizes.split())
    padded = -(-q8.hidden // 8) * 8
    assert state16 - state8 == len(q8.layers) * padded  # h: 2 bytes a unit instead of 1, per layer
    assert arena16 == arena8  # the same int8 weights and constants
    assert int(alloc) == 0
