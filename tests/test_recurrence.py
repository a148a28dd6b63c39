"""The compiled time loop (edge_agent/_recurrence.c).

Every matmul kernel, and builds of the same source for other instruction sets,
must give the same integers (tests/test_device_conformance.py holds the default
one to device/ under MicroPython); the int32 checks must flag exactly the
values that leave int32; the binding must refuse bad buffers, never crash.
"""
from __future__ import annotations

import importlib.util
import platform
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from edge_agent.reference import recurrence
from edge_agent.reference.inputs import model_inputs
from edge_agent.quant import quantize
from edge_agent.quant.fixedpoint import INT32_MAX, INT32_MIN, OverflowProofError
from edge_agent.reference.lstm import IntegerLSTM, Trace

from helpers import random_model

SOURCE = Path(recurrence.__file__).with_name("_recurrence.c")
# (hidden, inputs, layers): 4*hidden below, at and past one 16-row vector block
SHAPES = [(5, 3, 1), (16, 6, 2), (33, 6, 3)]


def _quantized(rng, hidden, n_in, layers, windows=7, steps=24):
    fm = random_model(rng, n_in=n_in, hidden=hidden, layers=layers)
    x = rng.normal(0, 1.5, (windows, steps, n_in)) * fm.std + fm.mean
    qm = quantize(fm, x)
    return qm, model_inputs(qm, x)


def _everything(engine: IntegerLSTM, x_q: np.ndarray) -> list[np.ndarray]:
    """Logits, every traced internal, with ragged lengths, and the streaming state."""
    lengths = np.arange(len(x_q)) * 5 % x_q.shape[1] + 1
    trace = Trace()
    out = [engine.run(x_q, lengths, trace=trace)]
    out += trace.gates + trace.cell + trace.hidden
    engine.reset(len(x_q))
    for t in range(x_q.shape[1]):
        engine.step(x_q[:, t])
    return out + engine.h + engine.c + [engine.logits()]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y)


@pytest.mark.parametrize("hidden,n_in,layers", SHAPES)
def test_every_kernel_gives_the_same_integers(rng, hidden, n_in, layers):
    qm, x_q = _quantized(rng, hidden, n_in, layers)
    want = _everything(IntegerLSTM(qm, kernel="int32"), x_q)
    assert np.abs(want[0]).max() > 0
    for kernel in recurrence.KERNELS:
        _assert_same(_everything(IntegerLSTM(qm, kernel=kernel), x_q), want)


def _build(tmp_path: Path, flags: list[str]):
    """_recurrence.c compiled by hand with other flags, loaded as its own module."""
    out = tmp_path / ("_recurrence" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = sysconfig.get_config_var("CC").split()[0]
    subprocess.run([cc, "-O2", "-std=c11", "-fwrapv", "-shared", "-fPIC", *flags,
                    "-I", sysconfig.get_paths()["include"], str(SOURCE), "-o", str(out)],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("rebuilt._recurrence", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the baseline build (SSE2 on x86-64: 4 lanes, scalar table lookups), AVX2 (8
# lanes), and AVX-512 without VNNI (the gather paths with the portable matvecs)
BUILDS = [([], None)] + ([(["-march=x86-64-v3"], "avx2"), (["-march=skylake-avx512"], "avx512f")]
                         if platform.machine() == "x86_64" else [])


@pytest.mark.parametrize("flags,needs", BUILDS, ids=lambda f: " ".join(f or []) or "baseline")
def test_builds_for_other_instruction_sets_agree(rng, tmp_path, monkeypatch, flags, needs):
    if needs and needs not in Path("/proc/cpuinfo").read_text().split():
        pytest.skip(f"this CPU has no {needs}: it cannot run that build")
    rebuilt = _build(tmp_path, flags)
    assert rebuilt.HAS_VNNI == 0  # none of these builds has AVX-512 VNNI
    qm, x_q = _quantized(rng, 33, 6, 2)
    want = _everything(IntegerLSTM(qm), x_q)  # the installed, native build
    monkeypatch.setattr(recurrence, "_recurrence", rebuilt)
    for kernel in ("int32", "float32"):
        _assert_same(_everything(IntegerLSTM(qm, kernel=kernel), x_q), want)


def _largest_safe_multiplier(v: int, half: int) -> int:
    """The largest m with |v * m + half| <= 2**31 - 1 (v != 0)."""
    return (INT32_MAX - half) // v if v > 0 else (INT32_MAX + half) // -v


@pytest.mark.parametrize("kernel", list(recurrence.KERNELS))
def test_range_check_is_exact_at_the_int32_edge(rng, kernel):
    qm, x_q = _quantized(rng, 8, 6, 1, windows=1, steps=2)
    layer = qm.layers[0]
    trace = Trace()
    IntegerLSTM(qm).run(x_q, trace=trace)
    # input accumulator of step 0, and recurrent accumulator of step 1 (h after step 0)
    acc_x = layer.wx.astype(np.int64) @ x_q[0, 0] + layer.bx
    acc_h = layer.wh.astype(np.int64) @ trace.hidden[0][0, 0]
    # the input case runs step 0 alone: step 1 would meet the new multiplier too
    for field, shifts, acc, what, steps in (("mx", layer.sx, acc_x, "input", 1),
                                            ("mh", layer.sh, acc_h, "recurrent", 2)):
        window = x_q[:, :steps]
        # below sqrt(2**31), the multiplier moves the edge by less than one accumulator step
        small = np.where(np.abs(acc) < 40000, np.abs(acc), 0)
        row = int(np.argmax(small))
        v, half = int(acc[row]), 1 << (int(shifts[row]) - 1)
        assert abs(v) > 1000
        edge = _largest_safe_multiplier(v, half)
        bias = int(layer.bx[row]) if field == "mx" else 0
        a = v - bias  # what the kernel checks: the accumulator before the bias
        side = 1 if v > 0 else 0  # the bound the accumulator is pressing on: hi, or lo
        assert recurrence.safe_accumulators(edge, half, bias)[side] == a
        assert recurrence.safe_accumulators(edge + 1, half, bias)[side] == a - np.sign(v)
        mults = getattr(layer, field)
        original = mults[row]
        mults[row] = edge  # the accumulator sits exactly on its last safe value: accepted
        IntegerLSTM(qm, kernel=kernel).run(window)
        mults[row] = edge + 1  # now one past it: refused, naming the requantization
        with pytest.raises(OverflowProofError, match=f"layer 0 {what} requantization"):
            IntegerLSTM(qm, kernel=kernel).run(window)
        mults[row] = original


@settings(max_examples=300)
@given(st.integers(INT32_MIN, INT32_MAX), st.integers(1, 31), st.integers(INT32_MIN, INT32_MAX))
@example(0, 1, 1)  # a zero multiplier: every accumulator fits, whatever the bias
def test_safe_accumulators_is_the_exact_range(mult, shift, bias):
    half = 1 << (shift - 1)
    lo, hi = recurrence.safe_accumulators(mult, half, bias)

    def fits(acc: int) -> bool:
        return abs((acc + bias) * mult + half) <= INT32_MAX

    if lo > hi:  # none: then not even the accumulators nearest the zero of the product fit
        assert not any(fits(a) for a in (INT32_MIN, INT32_MAX, -bias) if INT32_MIN <= a <= INT32_MAX)
        return
    assert fits(lo) and fits(hi) and fits((lo + hi) // 2)
    assert lo == INT32_MIN or not fits(lo - 1)
    assert hi == INT32_MAX or not fits(hi + 1)


def test_unknown_kernel_is_refused(rng):
    qm, _ = _quantized(rng, 4, 6, 1)
    with pytest.raises(ValueError, match="no matmul kernel 'avx9000' in this build"):
        IntegerLSTM(qm, kernel="avx9000")


def test_binding_refuses_buffers_of_the_wrong_size(rng):
    qm, x_q = _quantized(rng, 4, 6, 1, windows=2)
    engine = IntegerLSTM(qm)
    kernel = engine.layers[0]
    h, c = np.zeros((2, 4), np.int32), np.zeros((1, 4), np.int32)  # c is one window short
    with pytest.raises(ValueError, match="run_layer: c has 16 bytes, expected 32"):
        kernel.run(x_q.astype(np.int8), np.full(2, x_q.shape[1]), h, c, engine._lut)
    params = kernel.params.copy()
    params[recurrence.P_SX, 0] = 0  # a shift the loop cannot take
    bad = recurrence.LayerKernel(**{**kernel.__dict__, "params": params})
    with pytest.raises(ValueError, match="a shift or table offset is out of range"):
        bad.run(x_q.astype(np.int8), np.full(2, x_q.shape[1]), h, np.zeros_like(h), engine._lut)


def test_inputs_outside_int8_are_refused(rng):
    qm, x_q = _quantized(rng, 4, 6, 1)
    with pytest.raises(ValueError, match="model inputs must be int8"):
        IntegerLSTM(qm).run(x_q + 200)


def test_extreme_requantization_constants_agree_across_kernels(rng):
    """Biases and multipliers at the ends of int32: the modulo-2**32 constants
    are built without overflow, and every kernel reaches the same verdict."""
    qm, x_q = _quantized(rng, 4, 6, 1, windows=2, steps=3)
    layer = qm.layers[0]
    layer.bx[:] = np.where(np.arange(16) % 2, INT32_MAX, INT32_MIN + 1)
    layer.mx[:4] = [INT32_MAX, 1, -INT32_MAX, 3]
    verdicts = set()
    for kernel in recurrence.KERNELS:
        try:
            verdicts.add(IntegerLSTM(qm, kernel=kernel).run(x_q).tobytes())
        except OverflowProofError as e:
            verdicts.add(str(e))
    assert verdicts == {"layer 0 input requantization: a value left the int32 range"}
