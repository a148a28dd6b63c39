"""What the two emulated boards share: a flash folder and a pseudo-terminal.

The slave side (/dev/pts/N, raw mode) is the board's serial port, which flash,
replay, mpremote or a terminal open like a USB CDC port; the board's process
holds the master side. Subclasses start and stop that process.
"""
from __future__ import annotations

import os
import pty
import shutil
import tempfile
import tty
from pathlib import Path

from ..errors import UserError


def die_with_parent() -> None:
    """In the board's child process: be killed when its owner goes away without
    stop() (a crashed test, a killed CLI), instead of spinning on a dead terminal."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class PtyBoard:
    """port, dir, resets, start(), stop(), and use as a context manager."""

    def __init__(self, flash_dir: str | Path | None, log, tmp_prefix: str):
        self._tmp = None
        if flash_dir is None:
            self._tmp = tempfile.mkdtemp(prefix=tmp_prefix)
            flash_dir = self._tmp
        self.dir = Path(flash_dir).resolve()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.dir}: cannot use as the board's flash ({exc.strerror})") from None
        self.log = log or (lambda msg: None)
        self.resets = 0
        self._stopped = False
        # subclasses check what can refuse the board before this: nothing leaks if one does
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no echo, no line editing, no CR/LF rewriting
        self.port = os.ttyname(self.slave)

    def start(self):
        import atexit

        self._start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._halt()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _start(self) -> None:
        raise NotImplementedError

    def _halt(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
