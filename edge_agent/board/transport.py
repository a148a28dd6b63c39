"""Raw-REPL access to a board over serial: the small interface flash needs.

Built on mpremote's SerialTransport (MicroPython's own tool: pyserial port
handling, raw-paste mode, the raw REPL's output framing), pinned in
pyproject.toml because its API moves between releases. What is ours: raw-REPL
entry retried the way it has to be with boards that are busy running main.py,
and file transfer in base64 chunks with a hash check.
"""
from __future__ import annotations

import base64
import hashlib
import time

from ..errors import UserError

CHUNK = 8192  # bytes of file per raw-REPL exec: few round trips, ~20 KB transient on the board


_SHA_HELPER = """
def _sha(p):
    import hashlib, binascii
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    while True:
        c = f.read(512)
        if not c:
            break
        h.update(c)
    f.close()
    return binascii.hexlify(h.digest()).decode()
"""


class BoardError(UserError):
    """The board did not answer as a MicroPython raw REPL should."""


class RawRepl:
    def __init__(self, port: str, baudrate: int = 115200):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self._errors = (TransportError, OSError)
        try:
            self.t = SerialTransport(port, baudrate=baudrate)
        except self._errors as exc:
            raise BoardError(f"{port}: cannot open the serial port ({exc})") from None
        self.port = port

    def enter(self, attempts: int = 4) -> None:
        """Interrupt whatever runs and enter the raw REPL without a reset."""
        serial = self.t.serial
        for _ in range(attempts):
            serial.write(b"\r\x03")
            time.sleep(0.05)
            serial.write(b"\x03")  # twice: a first Ctrl-C may land in a busy loop's except
            self._drain(0.2)  # boot output, tracebacks, the friendly prompt
            serial.write(b"\r\x01")
            data = self.t.read_until(1, b"raw REPL; CTRL-B to exit\r\n", timeout=1, timeout_overall=3)
            if data.endswith(b"raw REPL; CTRL-B to exit\r\n"):
                self.t.in_raw_repl = True
                return
        raise BoardError(f"{self.port}: no MicroPython raw REPL answered (tried {attempts} times)")

    def _drain(self, quiet: float) -> None:
        serial = self.t.serial
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            waiting = serial.in_waiting
            if waiting:
                serial.read(waiting)
                end = time.monotonic() + quiet
            else:
                time.sleep(0.01)

    def exec(self, code: str, timeout: float = 10) -> str:
        """Run code in the raw REPL; its printed output, or BoardError with the board's error."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout)
        except self._errors as exc:
            raise BoardError(f"{self.port}: raw REPL failed ({exc})") from None
        if err:
            last = err.decode(errors="replace").strip().splitlines()
            raise BoardError(f"board error: {last[-1] if last else err!r}")
        return out.decode(errors="replace")

    def eval(self, expression: str):
        import ast

        return ast.literal_eval(self.exec(f"print(repr({expression}))").strip())

    def sha256(self, paths: list[str]) -> list[str | None]:
        """Hex digests of files on the board (None where a file does not exist), in one round trip."""
        self.exec(_SHA_HELPER)
        return self.eval(f"[_sha(p) for p in {paths!r}]")

    def write_file(self, path: str, data: bytes, progress=None) -> None:
        """Write `path` on the board in base64 chunks; verify its sha256."""
        self.exec(f"import binascii\n_f = open({path!r}, 'wb')\n_w = lambda s: _f.write(binascii.a2b_base64(s))")
        for start in range(0, len(data), CHUNK):
            chunk = data[start:start + CHUNK]
            self.exec(f"_w({base64.b64encode(chunk).decode()!r})")
            if progress:
                progress(len(chunk))
        self.exec("_f.close()\ndel _f, _w")
        if self.sha256([path])[0] != hashlib.sha256(data).hexdigest():
            raise BoardError(f"{path}: the board holds different bytes than were sent")

    def rename(self, old: str, new: str) -> None:
        self.exec(f"import os\nos.rename({old!r}, {new!r})")

    def remove(self, path: str) -> None:
        self.exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass")

    def reset(self) -> None:
        """Leave the raw REPL and soft-reset, so main.py runs (the virtual board restarts)."""
        serial = self.t.serial
        serial.write(b"\r\x02")  # friendly REPL
        time.sleep(0.05)
        serial.write(b"\x04")  # Ctrl-D: soft reset
        self.t.in_raw_repl = False

    def close(self) -> None:
        try:
            self.t.close()
        except self._errors:
            pass
