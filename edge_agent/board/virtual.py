"""The virtual board: the MicroPython unix port on a pseudo-terminal.

The interpreter holds the master side of the board's port (ptyboard.py). DIR
is the board's flash: the interpreter runs in it and imports from it, and
main.py there is run at every (re)start, as on a board. When the interpreter
ends (Ctrl-D at the REPL, or in the raw REPL) the board "resets": it starts
again on the same port.
"""
from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .ptyboard import PtyBoard, die_with_parent
from .unixport import binary


class VirtualBoard(PtyBoard):
    def __init__(self, flash_dir: str | Path | None = None, log=None):
        self.binary = binary()  # here, not in the board's thread: a missing interpreter is one clear line
        super().__init__(flash_dir, log, "edge-agent-board-")
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen:
        main = self.dir / "main.py"
        args = [self.binary, "-X", "heapsize=2M"]
        if main.exists():
            args += ["-i", str(main)]  # run main.py, then the REPL (after Ctrl-C), like a board
        # HOME elsewhere: the REPL's history file must not land in the board's flash
        env = {"MICROPYPATH": f"{self.dir}:.frozen", "HOME": tempfile.gettempdir()}
        return subprocess.Popen(args, stdin=self.master, stdout=self.master, stderr=self.master,
                                cwd=self.dir, env=env, start_new_session=True,
                                preexec_fn=die_with_parent)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = self._spawn()
            while self._proc.poll() is None and not self._stop.is_set():
                time.sleep(0.02)
            if self._stop.is_set():
                break
            self.resets += 1
            self.log(f"reset {self.resets} (interpreter ended with status {self._proc.returncode})")

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._thread:
            self._thread.join(timeout=5)
