"""The emulated RP2040: the official MicroPython firmware on rp2040js, on a pseudo-terminal.

Node.js runs rp2040js/emulator.mjs: a Raspberry Pi Pico (RP2040, B1 bootrom) booting
the MicroPython UF2 a user downloads for their board. Its USB CDC serial port is
bridged to a pseudo-terminal (/dev/pts/N) that flash, replay, mpremote or a terminal
open like a real board's port. DIR holds the board's flash file system
(rp2040-flash.bin, flash offset 0xA0000 onward), so files survive restarts as on a
real board across power cycles. A watchdog expiry, or machine.reset(), resets the
chip and keeps its flash; the port stays the same.

The guest reads the emulator's cycle counter (125 MHz, exact) at CYCLES_LO/CYCLES_HI:
WATCHDOG SCRATCH0/1, registers the firmware leaves to the user. A real Pico reads
whatever was last written there, so only benches and tests use it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from ..errors import UserError
from .ptyboard import PtyBoard, die_with_parent

JS_DIR = Path(__file__).with_name("rp2040js")
FIRMWARE_ENV = "EDGE_AGENT_FIRMWARE_DIR"
FLASH_FILE = "rp2040-flash.bin"
CYCLES_LO = 0x4005800C  # machine.mem32[CYCLES_LO]: board clock in cycles, low 32 bits
CYCLES_HI = 0x40058010
HZ = 125_000_000
GET_FIRMWARE = ("the MicroPython UF2 for the Raspberry Pi Pico (RPI_PICO, micropython.org/download/"
                "RPI_PICO) and the RP2040 B1 bootrom (raspberrypi/pico-bootrom, b1.bin)")


def find_firmware(firmware: str | Path | None = None) -> tuple[Path, Path]:
    """(UF2, bootrom): --firmware is a UF2 or a folder; else $EDGE_AGENT_FIRMWARE_DIR.
    The bootrom is the one *bootrom*.bin beside the UF2 (or in that folder)."""
    given = firmware or os.environ.get(FIRMWARE_ENV)
    if not given:
        raise UserError(f"no RP2040 firmware: give --firmware FILE.uf2|DIR or set {FIRMWARE_ENV} "
                        f"to a folder holding {GET_FIRMWARE}")
    path = Path(given).expanduser()
    if path.is_dir():
        uf2s = sorted(path.glob("*.uf2"))
        if len(uf2s) != 1:
            raise UserError(f"{path}: expected one .uf2 firmware, found {len(uf2s)}")
        uf2 = uf2s[0]
    elif path.is_file():
        if path.suffix.lower() != ".uf2":
            raise UserError(f"{path}: not a .uf2 firmware file")
        uf2 = path
    else:
        raise UserError(f"{path}: no such firmware file or folder")
    roms = sorted(uf2.parent.glob("*bootrom*.bin"))
    if len(roms) != 1:
        raise UserError(f"{uf2.parent}: expected one *bootrom*.bin beside the firmware "
                        f"(the RP2040 B1 bootrom, raspberrypi/pico-bootrom), found {len(roms)}")
    return uf2, roms[0]


def node_command() -> list[str]:
    node = shutil.which("node")
    if not node:
        raise UserError("Node.js not found on PATH: the emulated RP2040 runs on Node.js >= 18")
    if not (JS_DIR / "node_modules" / "rp2040js" / "package.json").exists():
        raise UserError(f"the npm package rp2040js is not installed: run `npm ci` in {JS_DIR}")
    return [node, str(JS_DIR / "emulator.mjs")]


class RP2040Board(PtyBoard):
    def __init__(self, flash_dir: str | Path | None = None, firmware: str | Path | None = None,
                 log=None, boot_timeout: float = 60):
        self.uf2, self.bootrom = find_firmware(firmware)
        self.command = node_command()
        super().__init__(flash_dir, log, "edge-agent-rp2040-")
        self.boot_timeout = boot_timeout
        os.set_blocking(self.master, False)  # the emulator polls it between slices
        self.events: list[str] = []
        self._changed = threading.Condition()
        self._stderr: list[str] = []
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        args = self.command + ["--uf2", str(self.uf2), "--bootrom", str(self.bootrom),
                               "--flash", str(self.dir / FLASH_FILE), "--fd", str(self.master)]
        self._proc = subprocess.Popen(args, pass_fds=(self.master,), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True, preexec_fn=die_with_parent)
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self.wait_event("connected", self.boot_timeout)
        except UserError:
            self.stop()
            raise

    def _read_events(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            line = line.strip()
            if line.startswith("reset"):
                self.resets += 1
                self.log(f"{line} (reset {self.resets}; flash kept)")
            elif line.startswith("halt"):
                self.log(line)
            with self._changed:
                self.events.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())
            self.log(line.rstrip())

    def wait_event(self, prefix: str, timeout: float, after: int = 0) -> str:
        """The first event line starting with `prefix` at index >= after."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.events[after:]:
                    if line.startswith(prefix):
                        return line
                if self._proc is None or self._proc.poll() is not None:
                    time.sleep(0.1)  # let stderr be read
                    why = self._stderr[-1] if self._stderr else f"exit status {self._proc and self._proc.returncode}"
                    raise UserError(f"the emulated RP2040 stopped: {why}")
                left = end - time.monotonic()
                if left <= 0:
                    raise UserError(f"the emulated RP2040 did not report '{prefix}' within {timeout:.0f} s")
                self._changed.wait(min(left, 0.5))

    def _halt(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: the emulator closes the flash file
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
