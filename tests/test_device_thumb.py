"""The RP2040's Thumb kernel (device/kernel_thumb.py): the machine code mpy-cross
emits for armv6m, run on an emulated Cortex-M (Unicorn), equals numpy and the
viper kernel that the conformance tests hold to the reference, and uses only
16-bit Thumb instructions (armv6m). Unicorn stands in for the board's CPU: no
RP2040 is attached here."""
import json
import subprocess

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
