"""The RP2040's Thumb kernel (device/kernel_thumb.py): the machine code mpy-cross
emits for armv6m, run on an emulated Cortex-M (Unicorn), equals numpy and the
viper kernel that the conformance tests hold to the reference, and uses only
16-bit Thumb instructions (armv6m). Unicorn stands in for the board's CPU: no
RP2040 is attached here."""
import json
import re
import struct
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

import armv6m
from edge_agent.board import unixport
from edge_agent.board.flash import runner_files

SHAPES = [(1, 8), (3, 16), (128, 8), (128, 40), (12, 264), (4, 1024)]


@pytest.fixture(scope="module")
def kernel():
    return armv6m.ThumbMatvec(armv6m.compile_kernel("armv6m"))


def _case(rng, rows, n, fill=None):
    if fill is not None:
        return np.full((rows, n), fill), np.full(n, fill)
    return rng.integers(0, 256, (rows, n)), rng.integers(0, 256, n)


@pytest.mark.parametrize("rows,n", SHAPES)
def test_thumb_kernel_equals_numpy(kernel, rows, n):
    rng = np.random.default_rng(rows * 1000 + n)
    for fill in (None, 0, 255):  # random, and both ends of the byte range
        w, x = _case(rng, rows, n, fill)
        assert np.array_equal(kernel(w, x), w.astype(np.int64) @ x)


def test_thumb_kernel_preserves_callee_saved_registers_and_sp(kernel):
    """AAPCS: r4-r11 and SP come back as they went in (MicroPython's native code keeps
    its own values there across the call); the kernel uses r4-r7 as scratch."""
    from unicorn.arm_const import UC_ARM_REG_R4, UC_ARM_REG_SP

    regs = [UC_ARM_REG_R4 + i for i in range(8)]  # r4..r11 are consecutive in unicorn's numbering
    sentinels = [0x4A4A0004 + 0x01010000 * i for i in range(8)]
    for reg, value in zip(regs, sentinels):
        kernel.cpu.uc.reg_write(reg, value)
    for rows, n in ((5, 24), (128, 40)):
        w, x = _case(np.random.default_rng(rows), rows, n)
        assert np.array_equal(kernel(w, x), w @ x)
        assert [kernel.cpu.uc.reg_read(reg) for reg in regs] == sentinels
        assert kernel.cpu.uc.reg_read(UC_ARM_REG_SP) == armv6m.RAM_BASE + armv6m.RAM_SIZE


def test_thumb_kernel_writes_only_its_rows(kernel):
    """Every output row is written (the buffer starts as junk) and nothing past it."""
    w, x = _case(np.random.default_rng(1), 5, 24)
    out_at = armv6m.RAM_BASE + 24 + 5 * 24
    kernel.cpu.uc.mem_write(out_at + 20, b"\x5a" * 8)
    assert np.array_equal(kernel(w, x), w @ x)
    assert bytes(kernel.cpu.uc.mem_read(out_at + 20, 8)) == b"\x5a" * 8


def viper_matvec(tmp_path, kernel: str, x_array: str, cases) -> list[list[int]]:
    """kernels.<kernel> on each (w, x) case under the real MicroPython unix port;
    x_array: how the script holds x (bytearray(x), array.array('H', x))."""
    script = tmp_path / f"{kernel}.py"
    script.write_text(
        "import json, sys, array, kernels\n"
        "for w, x in json.load(open(sys.argv[1])):\n"
        "    rows, n = len(w) // len(x), len(x)\n"
        "    out = array.array('i', [0] * rows)\n"
        f"    kernels.{kernel}(kernels.address({x_array}), kernels.address(bytearray(w)),\n"
        "                     kernels.address(out), n | rows << 16)\n"
        "    print(json.dumps(list(out)))\n")
    data = tmp_path / f"{kernel}.json"
    data.write_text(json.dumps([[w.ravel().tolist(), x.tolist()] for w, x in cases]))
    out = subprocess.run([unixport.binary(), str(script), str(data)], capture_output=True, text=True,
                         env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"}, check=True).stdout
    got = [json.loads(line) for line in out.splitlines()]
    assert len(got) == len(cases)
    return got


def test_thumb_kernel_equals_viper_kernel(kernel, tmp_path):
    """The same inputs through kernels.matvec_viper under the real MicroPython
    unix port: the Thumb kernel is a drop-in for the kernel the cell is proven with."""
    rng = np.random.default_rng(7)
    cases = [_case(rng, rows, n) for rows, n in SHAPES[:5]]
    for (w, x), got in zip(cases, viper_matvec(tmp_path, "matvec_viper", "bytearray(x)", cases)):
        assert kernel(w, x).tolist() == got


def test_thumb_kernel_is_thumb1_only(kernel):
    assert armv6m.wide_instructions(kernel.code) == []
    # the check itself sees a Thumb-2 encoding: movw r0, #7; bx lr
    assert armv6m.wide_instructions(bytes.fromhex("40f20700" "7047")) == [0]


def test_mpy_reader_refuses_other_code():
    with pytest.raises(ValueError, match="v6"):
        armv6m.asm_functions(b"C\x06\x00\x1f")
    cell_mpy = armv6m.compile_kernel("armv6m", unixport.DEVICE_DIR / "kernels.py")
    with pytest.raises(ValueError):  # viper children and constants: not a kernel module
        armv6m.asm_functions(cell_mpy)


def test_flash_sends_the_thumb_kernel_to_arm_boards_only():
    assert "kernel_thumb.py" in runner_files("armv6m")
    assert "kernel_thumb.py" not in runner_files("xtensawin")
    assert "kernel_thumb.py" not in runner_files("x64")  # the virtual board
    assert set(runner_files("armv6m")) - set(runner_files("xtensawin")) == {"kernel_thumb.py", "frontend_thumb.py"}


# ---- matvec16: a 16-bit state's matvec (docs/arithmetic.md, "16-bit hidden state") ----

SHAPES16 = [(1, 8), (3, 16), (128, 40), (13, 128), (4, 128)]  # n <= 128: the sums' int32 proof


@pytest.fixture(scope="module")
def kernel16():
    return armv6m.ThumbMatvec(armv6m.compile_kernel("armv6m"), armv6m.MATVEC16)


def _case16(rng, rows, n, fill=None):
    if fill is not None:
        return np.full((rows, n), fill[0]), np.full(n, fill[1])
    return rng.integers(0, 256, (rows, n)), rng.integers(0, 65536, n)


@pytest.mark.parametrize("rows,n", SHAPES16)
def test_thumb_matvec16_equals_numpy_and_viper(kernel16, tmp_path, rows, n):
    """Random, all zero, and every product at its largest (65535 * 255 * 128 < 2^31)."""
    rng = np.random.default_rng(rows * 1000 + n)
    cases = [_case16(rng, rows, n, fill) for fill in (None, (0, 0), (255, 65535))]
    for w, x in cases:
        assert np.array_equal(kernel16(w, x), w.astype(np.int64) @ x)
    for (w, x), got in zip(cases, viper_matvec(tmp_path, "matvec16_viper", "array.array('H', x)", cases)):
        assert kernel16(w, x).tolist() == got


def test_thumb_matvec16_is_thumb1_only(kernel16):
    assert armv6m.wide_instructions(kernel16.code) == []


# ---- lstm_update: either state width (meta M_XW, M_HW), against lstm_update_viper ----

KERNELS_SOURCE = (unixport.DEVICE_DIR / "kernels.py").read_text()
META = {m[1]: int(m[2]) for m in re.finditer(r"^M_(\w+) = const\((\d+)\)", KERNELS_SOURCE, re.M)}  # M_H -> "H"
INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def update():
    return armv6m.ThumbLstmUpdate(armv6m.compile_kernel("armv6m"))


@dataclass
class UpdateCase:
    arena: bytes
    meta: list[int]
    state: bytes
    x: bytes
    z_saturated: int  # rows whose pre-activation the row pass clamps


def _align4(n):
    return (n + 3) & ~3


def _update_case(rng, hidden: int, ip: int, xw: int, hw: int, ls: int, cf: int) -> UpdateCase:
    """Random dot products, row constants, tables, x, h and c for one lstm_update call:
    pre-shifts P > 0 with a 16-bit state (0 with 8 bits, as blob.pre_shifts gives), and
    a fifth of the tables' and c's values at int16's ends. Every accumulator (dot -
    offsets + K) and its requantization product fit int32 (blob.py's proof), and every
    dot product is >= 0 (a matvec's): the unix port's viper reads ptr32 zero-extended."""
    H, hp = hidden, (hidden + 7) // 8 * 8
    n_table = (1 << (16 - ls)) + 1

    def int16s(n):
        v = rng.integers(-32768, 32768, n)
        return np.where(rng.random(n) < 0.2, rng.choice([-32768, 32767], n), v)

    x = rng.integers(0, 256**xw, ip)
    hu = rng.integers(0, 256**hw, hp)
    sums = (128 * int(x.sum()), 128 * int(hu.sum()))
    rows, dots, z_saturated = [], [[], []], 0
    for _ in range(4 * H):
        z = 0
        for half in (0, 1):
            p = int(rng.integers(0, 13)) if hw == 2 else 0
            s = int(rng.integers(1, 31))
            acc = int(rng.integers(-2**29, 2**29)) >> int(rng.integers(0, 29))
            m_max = (INT32_MAX - (1 << (s - 1))) // ((abs(acc) >> p) + 1)
            m = int(np.exp(rng.uniform(0, np.log(m_max))))
            dot = int(rng.integers(0, 2**30))
            rows += [acc - dot + sums[half], m, s | p << 8]
            dots[half].append(dot)
            z += ((acc >> p) * m + (1 << (s - 1))) >> s
        z_saturated += not -32768 <= z <= 32767
    tables = [int16s(n_table) for _ in range(2)]
    for t in tables:  # index 0 at -32768 in both: o tanh(c) at its largest, (-2^15)^2
        t[0] = -32768
    rows_at, sig_at = 0, 24 * 4 * H
    tanh_at = sig_at + _align4(2 * n_table)
    arena = (np.asarray(rows, "<i4").tobytes() + tables[0].astype("<i2").tobytes().ljust(tanh_at - sig_at, b"\0")
             + tables[1].astype("<i2").tobytes())
    hu_at = 0
    c_at = _align4(hw * hp)
    dx_at = c_at + _align4(2 * H)
    dh_at, z_at = dx_at + 16 * H, dx_at + 32 * H
    state = (hu.astype(f"<u{hw}").tobytes().ljust(c_at, b"\0")
             + int16s(H).astype("<i2").tobytes().ljust(dx_at - c_at, b"\0")
             + np.asarray(dots[0], "<i4").tobytes() + np.asarray(dots[1], "<i4").tobytes()
             + rng.integers(0, 256, 8 * H).astype(np.uint8).tobytes())  # z: junk, every row written
    meta = [0] * len(META)
    for name, value in dict(ROWS=rows_at, IP=ip, H=H, HP=hp, CF=cf, LS=ls, SIG=sig_at, TANH=tanh_at, HU=hu_at,
                            C=c_at, DX=dx_at, DH=dh_at, Z=z_at, XW=xw, HW=hw).items():
        meta[META[name]] = value
    return UpdateCase(arena, meta, state, x.astype(f"<u{xw}").tobytes(), z_saturated)


def viper_update(tmp_path, cases: list[UpdateCase]) -> list[bytes]:
    """kernels.lstm_update_viper on each case under the real MicroPython unix port: the State after."""
    data = tmp_path / "update.bin"
    with data.open("wb") as f:
        for case in cases:
            f.write(struct.pack("<3I", len(case.arena), len(case.state), len(case.x)))
            f.write(struct.pack(f"<{len(META)}i", *case.meta) + case.arena + case.state + case.x)
    script = tmp_path / "update.py"
    script.write_text(
        "import sys, array, struct, binascii, kernels\n"
        "f = open(sys.argv[1], 'rb')\n"
        "while True:\n"
        "    head = f.read(12)\n"
        "    if not head:\n"
        "        break\n"
        "    na, ns, nx = struct.unpack('<3I', head)\n"
        f"    meta = array.array('i', f.read({4 * len(META)}))\n"
        "    arena, st, x = bytearray(f.read(na)), bytearray(f.read(ns)), bytearray(f.read(nx))\n"
        "    kernels.lstm_update_viper(arena, meta, kernels.address(st), kernels.address(x))\n"
        "    print(binascii.hexlify(st).decode())\n")
    out = subprocess.run([unixport.binary(), "-X", "heapsize=8M", str(script), str(data)], capture_output=True,
                         text=True, env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"}, check=True).stdout
    got = [bytes.fromhex(line) for line in out.split()]
    assert len(got) == len(cases)
    return got


def _outputs(case: UpdateCase, state: bytes):
    """h (stored) and c of a State, and its dot products (which lstm_update only reads);
    not z, which the viper kernel leaves as pre-activations and the Thumb one as gates."""
    m = {name: case.meta[i] for name, i in META.items()}
    hw, H = m["HW"], m["H"]
    h = np.frombuffer(state, f"<u{hw}", H, m["HU"])
    c = np.frombuffer(state, "<i2", H, m["C"])
    return h.astype(int) - (128 if hw == 1 else 32768), c, state[m["DX"]:m["Z"]]


# (hidden, stored inputs, bytes per x, bytes per h): 8-bit layers 0 and above; 16-bit
# layer 0 (int8 x) and above (x the layer below's int16 h), up to its 128 units
UPDATE_SHAPES = [(32, 8, 1, 1), (5, 16, 1, 1), (32, 8, 1, 2), (1, 8, 1, 2), (20, 24, 2, 2), (128, 128, 2, 2)]


@pytest.mark.parametrize("hidden,ip,xw,hw", UPDATE_SHAPES)
def test_thumb_lstm_update_equals_viper(update, tmp_path, hidden, ip, xw, hw):
    """Every unit's h and c after one call equal lstm_update_viper's, over lut_shift and
    the cell's fraction bits on both sides of 12 (tanh's input shifted right, or left and
    saturated); the pre-activations', c's and h's clamps all exercised."""
    rng = np.random.default_rng(hidden * 100 + ip + 10 * hw)
    settings = [(ls, cf) for ls in (1, 7, 15) for cf in (0, 12, 15)] + [(8, 5), (10, 14)]
    cases = [_update_case(rng, hidden, ip, xw, hw, ls, cf) for ls, cf in settings]
    h_max = 127 if hw == 1 else 32767
    z_clamped = c_clamped = h_clamped = 0
    for case, want in zip(cases, viper_update(tmp_path, cases)):
        got = update(case.arena, case.meta, case.state, case.x)
        h, c, dots = _outputs(case, got)
        h_want, c_want, dots_want = _outputs(case, want)
        assert h.tolist() == h_want.tolist() and c.tolist() == c_want.tolist()
        assert dots == dots_want == case.state[case.meta[META["DX"]]:case.meta[META["Z"]]]
        z_clamped += case.z_saturated
        c_clamped += int(np.isin(c, (-32768, 32767)).sum())
        h_clamped += int(np.isin(h, (-h_max - 1, h_max)).sum())
    assert z_clamped and c_clamped and h_clamped


def test_thumb_lstm_update_preserves_callee_saved_registers_and_sp(update):
    from unicorn.arm_const import UC_ARM_REG_R4, UC_ARM_REG_SP

    regs = [UC_ARM_REG_R4 + i for i in range(8)]
    sentinels = [0x4A4A0004 + 0x01010000 * i for i in range(8)]
    for hw in (1, 2):
        for reg, value in zip(regs, sentinels):
            update.cpu.uc.reg_write(reg, value)
        case = _update_case(np.random.default_rng(hw), 8, 8, 1, hw, 8, 12)
        update(case.arena, case.meta, case.state, case.x)
        assert [update.cpu.uc.reg_read(reg) for reg in regs] == sentinels
        assert update.cpu.uc.reg_read(UC_ARM_REG_SP) == armv6m.RAM_BASE + armv6m.RAM_SIZE


def test_thumb_lstm_update_is_armv6m_only(update):
    """16-bit encodings but for BL (its calls of the LUT and SUM subroutines), which armv6m has."""
    assert armv6m.wide_instructions(update.code, except_bl=True) == []
    assert len(armv6m.wide_instructions(update.code)) >= 4
