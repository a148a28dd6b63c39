"""The virtual board: the MicroPython unix port on a pseudo-terminal.

The interpreter holds the master side; the slave (/dev/pts/N, in raw mode) is
the board's serial port, which flash, replay, mpremote or a terminal open like
a USB CDC port. DIR is the board's flash: the interpreter runs in it and imports
from it, and main.py there is run at every (re)start, as on a board. When the
interpreter ends (Ctrl-D at the REPL, or in the raw REPL) the board "resets":
it starts again on the same port.
"""
from __future__ import annotations

import os
import pty
import shutil
import subprocess
import tempfile
import threading
import time
import tty
from pathlib import Path

from ..errors import UserError
from .unixport import binary


class VirtualBoard:
    def __init__(self, flash_dir: str | Path | None = None, log=None):
        self._tmp = None
        if flash_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="edge-agent-board-")
            flash_dir = self._tmp
        self.dir = Path(flash_dir).resolve()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.dir}: cannot use as the board's flash ({exc.strerror})") from None
        self.log = log or (lambda msg: None)
        self.binary = binary()  # here, not in the board's thread: a missing interpreter is one clear line
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no echo, no line editing, no CR/LF rewriting
        self.port = os.ttyname(self.slave)
        self.resets = 0
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _die_with_parent() -> None:
        """In the child: be killed if the board's thread goes away without stop()
        (a crashed test, a killed CLI), instead of spinning on a dead terminal."""
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def _spawn(self) -> subprocess.Popen:
        main = self.dir / "main.py"
        args = [self.binary, "-X", "heapsize=2M"]
        if main.exists():
            args += ["-i", str(main)]  # run main.py, then the REPL (after Ctrl-C), like a board
        # HOME elsewhere: the REPL's history file must not land in the board's flash
        env = {"MICROPYPATH": f"{self.dir}:.frozen", "HOME": tempfile.gettempdir()}
        return subprocess.Popen(args, stdin=self.master, stdout=self.master, stderr=self.master,
                                cwd=self.dir, env=env, start_new_session=True,
                                preexec_fn=self._die_with_parent)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = self._spawn()
            while self._proc.poll() is None and not self._stop.is_set():
                time.sleep(0.02)
            if self._stop.is_set():
                break
            self.resets += 1
            self.log(f"reset {self.resets} (interpreter ended with status {self._proc.returncode})")

    def start(self) -> "VirtualBoard":
        import atexit

        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._thread:
            self._thread.join(timeout=5)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "VirtualBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
