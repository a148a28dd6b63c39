"""_recurrence.c's binding against hostile sizes and buffers (issue 15, item 10),
and the whole loop built with -fsanitize=undefined (no -fwrapv to hide behind).

Each hostile call runs in a child process: before the fix, n = 2**62 wrapped the
size products to 0 and run() segfaulted, which would take pytest down with it."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from edge_agent.reference import recurrence

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(recurrence.__file__).with_name("_recurrence.c")

SETUP = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from helpers import random_model
from edge_agent.quant import quantize
from edge_agent.reference import recurrence
from edge_agent.reference.inputs import model_inputs
from edge_agent.reference.lstm import IntegerLSTM
rng = np.random.default_rng(5)
fm = random_model(rng, n_in=6, hidden=4, layers=1)
x = rng.normal(0, 1.5, (2, 5, 6)) * fm.std + fm.mean
qm = quantize(fm, x)
x_q = model_inputs(qm, x)
engine = IntegerLSTM(qm, kernel="int32")
k = engine.layers[0]
R, H = k.rows, k.hidden
lut = engine._lut
seq = np.zeros((2, 5, 6), np.int8)
lengths = np.full(2, 5, np.int64)
h = np.zeros((2, H), np.int32)
c = np.zeros((2, H), np.int32)
hs = np.empty((2, 5, H), np.int8)
none = np.empty(0, np.int32)
def call(n=2, steps=5, n_in=6, hidden=H, rows=R, seq=seq, lengths=lengths, h=h, c=c, w=k.w,
         params=k.params, lut=lut, hs=hs):
    try:
        recurrence._recurrence.run_layer(n, steps, n_in, hidden, rows, k.c_frac,
                                          recurrence.KERNELS["int32"], seq, lengths, h, c, w, params,
                                          lut, hs, none, none)
        print("accepted")
    except ValueError as e:
        print("ValueError:", e)
"""

HOSTILE = {
    # the crash: with T = 4 and H = 4, n * T * n_in, n * 8, n * H * 4 and n * T * H all wrap to 0
    "n = 2**62 (products wrap to 0)": "call(n=2**62, steps=4, seq=np.zeros(0, np.int8), "
                                      "lengths=np.zeros(0, np.int64), h=np.zeros(0, np.int32), "
                                      "c=np.zeros(0, np.int32), hs=np.zeros(0, np.int8))",
    "steps = 2**62": "call(steps=2**62, seq=np.zeros(0, np.int8), hs=np.zeros(0, np.int8))",
    "n_in = 2**61": "call(n_in=2**61)",
    "hidden = 2**40": "call(hidden=2**40, rows=2**42)",
    "negative n": "call(n=-1)",
    "rows not a multiple of 16": "call(rows=R + 1)",
    "padding row's table offset": "p = k.params.copy(); p[recurrence.P_OFF, R - 1] = 10**9; call(params=p)",
    "padding row's shift": "p = k.params.copy(); p[recurrence.P_SH, R - 1] = 0; call(params=p)",
    "misaligned h": "b = np.zeros(2 * H * 4 + 1, np.uint8); call(h=memoryview(b)[1:])",
    "misaligned params": "b = np.zeros(k.params.nbytes + 2, np.uint8); b[2:] = k.params.view(np.uint8).ravel(); "
                         "call(params=memoryview(b)[2:])",
    "misaligned lengths": "b = np.zeros(17, np.uint8); call(lengths=memoryview(b)[1:])",
    "short lut": "call(lut=lut[:-2])",
}


def run_child(code: str, module: str | None = None) -> subprocess.CompletedProcess:
    swap = f"import importlib.util as u; s = u.spec_from_file_location('rebuilt._recurrence', {module!r}); " \
           f"m = u.module_from_spec(s); s.loader.exec_module(m); recurrence._recurrence = m\n" if module else ""
    src = SETUP.format(tests=str(ROOT / "tests")) + swap + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("what", list(HOSTILE))
def test_binding_refuses_hostile_sizes_and_buffers(what):
    proc = run_child(HOSTILE[what])
    assert proc.returncode == 0, f"crashed ({proc.returncode}): {proc.stderr[-400:]}"
    assert proc.stdout.startswith("ValueError: run_layer:"), proc.stdout + proc.stderr[-400:]


def test_a_valid_call_is_still_accepted():
    proc = run_child("call()")
    assert proc.returncode == 0 and proc.stdout.strip() == "accepted", proc.stderr


@pytest.fixture(scope="module")
def ubsan_build(tmp_path_factory):
    """_recurrence.c with -fsanitize=undefined and no -fwrapv: signed overflow,
    misaligned loads, shifts out of range abort the process."""
    out = tmp_path_factory.mktemp("ubsan") / ("_recurrence" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = sysconfig.get_config_var("CC").split()[0]
    proc = subprocess.run([cc, "-O1", "-g", "-std=c11", "-fsanitize=undefined", "-fno-sanitize-recover=undefined",
                           "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(SOURCE), "-o", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0 and "sanitize" in proc.stderr:
        pytest.skip(f"{cc} cannot build with -fsanitize=undefined here")
    assert proc.returncode == 0, proc.stderr
    return out


def test_ubsan_build_agrees_and_finds_no_undefined_behaviour(ubsan_build):
    code = """
    from edge_agent.quant.fixedpoint import INT32_MAX, INT32_MIN, OverflowProofError
    native = recurrence._recurrence
    def everything(qm, x_q, kernel):
        e = IntegerLSTM(qm, kernel=kernel)
        lengths = np.arange(len(x_q)) * 5 % x_q.shape[1] + 1
        return [e.run(x_q, lengths).tobytes(), e.run(x_q).tobytes()]
    checked = 0
    for hidden, n_in, layers in [(5, 3, 1), (16, 6, 2), (33, 6, 3)]:
        fm = random_model(rng, n_in=n_in, hidden=hidden, layers=layers)
        xx = rng.normal(0, 1.5, (7, 24, n_in)) * fm.std + fm.mean
        q = quantize(fm, xx)
        xq = model_inputs(q, xx)
        for kernel in ("int32", "float32"):
            recurrence._recurrence = native
            want = everything(q, xq, kernel)
            recurrence._recurrence = sanitized
            assert everything(q, xq, kernel) == want
            checked += 1
    # the int32 edges (tests/test_recurrence.py): the range check itself must be free of UB
    layer = qm.layers[0]
    layer.bx[:] = np.where(np.arange(16) % 2, INT32_MAX, INT32_MIN + 1)
    layer.mx[:4] = [INT32_MAX, 1, -INT32_MAX, 3]
    recurrence._recurrence = sanitized
    for kernel in ("int32", "float32"):
        try:
            IntegerLSTM(qm, kernel=kernel).run(x_q)
        except OverflowProofError:
            checked += 1
    print("checked", checked)
    """
    swap = f"""
    import importlib.util as u
    s = u.spec_from_file_location('rebuilt._recurrence', {str(ubsan_build)!r})
    sanitized = u.module_from_spec(s); s.loader.exec_module(sanitized)
    """
    proc = run_child(textwrap.dedent(swap) + textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "runtime error" not in proc.stderr
    assert proc.stdout.split() == ["checked", "8"]


@pytest.mark.parametrize("what", list(HOSTILE))
def test_ubsan_build_refuses_hostile_calls_without_undefined_behaviour(ubsan_build, what):
    proc = run_child(HOSTILE[what], module=str(ubsan_build))
    assert proc.returncode == 0 and "runtime error" not in proc.stderr, proc.stderr[-800:]
    assert proc.stdout.startswith("ValueError: run_layer:")
