"""The serial line protocol, host side (board twin: device/link.py).

Board -> host: ``EA1 <kind> <json>*<crc32 hex>``; anything else on the line is
stray console output. Host -> board: ``s v1 v2 ...`` (a sample of raw int16
readings) and ``c <json>`` (a command).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

PREFIX = "EA1 "


@dataclass
class Message:
    kind: str  # det, status, ready, ack, error
    payload: dict


class CorruptLine(ValueError):
    """A protocol line whose checksum does not match: damaged in transit."""


def frame(kind: str, payload: dict) -> str:
    """A board line, as device/link.py writes it (for tests and the virtual board)."""
    body = f"{kind} {json.dumps(payload)}"
    return f"{PREFIX}{body}*{zlib.crc32(body.encode()):08x}\n"


def parse(line: str | bytes) -> Message | None:
    """A Message, None for non-protocol output, CorruptLine for a damaged one."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    start = line.find(PREFIX)
    if start < 0:
        return None
    body, star, crc = line[start + len(PREFIX):].rpartition("*")
    if not star or len(crc) != 8:
        raise CorruptLine(f"protocol line without a checksum: {line[:60]!r}")
    try:
        ok = int(crc, 16) == zlib.crc32(body.encode())
    except ValueError:
        ok = False
    if not ok:
        raise CorruptLine(f"checksum mismatch: {line[:60]!r}")
    kind, _, text = body.partition(" ")
    try:
        payload = json.loads(text)
    except ValueError:
        raise CorruptLine(f"bad payload: {line[:60]!r}") from None
    return Message(kind, payload)


def sample_line(raw) -> bytes:
    return ("s " + " ".join(str(int(v)) for v in raw) + "\n").encode()


def command_line(command: dict) -> bytes:
    return ("c " + json.dumps(command) + "\n").encode()


class Reader:
    """Bytes from a serial port in, protocol messages out; stray output is
    skipped and corrupted lines are counted."""

    def __init__(self):
        self.pending = b""
        self.corrupt = 0

    def feed(self, chunk: bytes) -> list[Message]:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        out = []
        for line in lines:
            try:
                msg = parse(line)
            except CorruptLine:
                self.corrupt += 1
                continue
            if msg is not None:
                out.append(msg)
        return out


def open_serial(port: str, timeout: float = 0.1):
    """A pyserial port, or one clear UserError."""
    import serial

    from ..errors import UserError

    try:
        return serial.Serial(port, 115200, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise UserError(f"{port}: cannot open the serial port ({exc})") from None
