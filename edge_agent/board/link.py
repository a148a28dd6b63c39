"""The serial line protocol, host side (board twin: device/link.py).

Board -> host: ``EA1 <kind> <json>*<crc32 hex>``; anything else on the line is
stray console output. Host -> board: ``s v1 v2 ...`` (a sample of raw int16
readings) and ``c <json>`` (a command).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

PREFIX = "EA1 "
MAX_LINE = 1 << 19  # bytes: the longest board line, a ready message naming 4096 labels of 64 characters, fits
INT32 = (-(1 << 31), (1 << 31) - 1)


# ---- payload schemas (what device/main.py sends; docs/mqtt.md for the MQTT side) ----

def _int(lo=INT32[0], hi=INT32[1]):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _text(most=256):
    return lambda v: isinstance(v, str) and len(v) <= most


def _number(lo, hi):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi


def _labels(v):
    return isinstance(v, list) and len(v) <= 4096 and all(isinstance(x, str) and len(x) <= 256 for x in v)


def _flag(v):
    return isinstance(v, bool)


COUNT = _int(0, INT32[1])
# kind -> (required fields, optional fields): field -> check. Other fields pass through.
SCHEMAS = {
    "det": ({"seq": _int(1), "t_ms": _int(), "sample": COUNT, "class": COUNT, "label": _text(),
             "score": _number(0, 1)}, {"boot": _text(64)}),
    "status": ({"samples": COUNT}, {"uptime_ms": _int(), "windows": COUNT, "detections": COUNT,
                                    "sensor_errors": COUNT, "mem_free": COUNT}),
    "ready": ({"boot": _text(64)}, {"device_id": _text(64), "labels": _labels, "inputs": COUNT,
                                    "hidden": COUNT, "layers": COUNT, "classes": COUNT, "window": COUNT,
                                    "hop": COUNT, "continuous": _flag, "model_crc": _text(8)}),
    "ack": ({"samples": COUNT}, {"window": COUNT, "hop": COUNT, "continuous": _flag}),
    "error": ({"what": _text(1024)}, {"reason": _text(4096), "action": _text(1024)}),
    "anom": ({"seq": _int(1), "t_ms": _int(), "sample": COUNT, "event": lambda v: v in ("onset", "end"),
              "level": COUNT, "threshold": COUNT, "score": _number(0, 1e6), "onset_ms": _int(),
              "end_ms": lambda v: v is None or _int()(v)}, {"boot": _text(64)}),
}


def schema_problem(payload, required: dict, optional: dict | None = None) -> str | None:
    """Why payload does not fit (a JSON object with these fields), or None."""
    if not isinstance(payload, dict):
        return f"a JSON object was expected, not {type(payload).__name__}"
    for name, ok in required.items():
        if name not in payload:
            return f"'{name}' is missing"
        if not ok(payload[name]):
            return f"'{name}' is out of range or of the wrong type"
    for name, ok in (optional or {}).items():
        if name in payload and not ok(payload[name]):
            return f"'{name}' is out of range or of the wrong type"
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def loads(text: str | bytes):
    """json.loads that refuses NaN, Infinity, numbers beyond float and deep nesting (ValueError)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass
class Message:
    kind: str  # det, status, ready, ack, error
    payload: dict


class CorruptLine(ValueError):
    """A protocol line whose checksum does not match: damaged in transit."""


class InvalidPayload(CorruptLine):
    """A protocol line with a good checksum whose payload breaks its kind's schema."""


def frame(kind: str, payload: dict) -> str:
    """A board line, as device/link.py writes it (for tests and the virtual board)."""
    body = f"{kind} {json.dumps(payload, allow_nan=False)}"
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
        payload = loads(text)
    except ValueError:
        raise InvalidPayload(f"bad payload: {line[:60]!r}") from None
    problem = schema_problem(payload, *SCHEMAS.get(kind, ({}, {})))
    if problem:
        raise InvalidPayload(f"bad {kind[:10]!r} payload ({problem}): {line[:60]!r}")
    return Message(kind, payload)


def sample_line(raw) -> bytes:
    return ("s " + " ".join(str(int(v)) for v in raw) + "\n").encode()


FRAME_SYNC = 0xA5  # device/link.py: a binary frame of int16 samples
FRAME_MAX = 512


def audio_frames(samples, size: int = 256):
    """Binary frames of int16 samples (device/link.py): sync, u16 n, samples, CRC-32."""
    data = np.clip(np.asarray(samples, np.int64), -32768, 32767).astype("<i2")
    for at in range(0, len(data), size):
        part = data[at:at + size]
        body = struct.pack("<H", len(part)) + part.tobytes()
        yield bytes([FRAME_SYNC]) + body + struct.pack("<I", zlib.crc32(body))


def command_line(command: dict) -> bytes:
    return ("c " + json.dumps(command, allow_nan=False) + "\n").encode()


class Reader:
    """Bytes from a serial port in, protocol messages out; stray output is
    skipped; corrupted lines, valid lines with a bad payload and lines longer
    than MAX_LINE are dropped and counted. Work and memory are linear in the input."""

    def __init__(self, max_line: int = MAX_LINE):
        self.pending = bytearray()
        self.max_line = max_line
        self.skipping = False  # inside an overlong line: drop until its newline
        self.corrupt = 0  # bad checksum
        self.invalid = 0  # good checksum, payload outside its schema
        self.overlong = 0

    @property
    def dropped(self) -> int:
        return self.corrupt + self.invalid + self.overlong

    def _line(self, line: bytes, out: list) -> None:
        try:
            msg = parse(bytes(line))
        except InvalidPayload:
            self.invalid += 1
            return
        except CorruptLine:
            self.corrupt += 1
            return
        if msg is not None:
            out.append(msg)

    def feed(self, chunk: bytes) -> list[Message]:
        out: list[Message] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self.skipping:
                self.skipping = False
            elif len(self.pending) + end - start > self.max_line:
                self.overlong += 1
            else:
                self.pending += chunk[start:end]
                self._line(self.pending, out)
            self.pending = bytearray()
            start = end + 1
        if not self.skipping:
            if len(self.pending) + len(chunk) - start > self.max_line:
                self.overlong += 1
                self.skipping = True
                self.pending = bytearray()
            else:
                self.pending += chunk[start:]
        return out


def open_serial(port: str, timeout: float = 0.1):
    """A pyserial port, or one clear UserError."""
    import serial

    from ..errors import UserError

    try:
        return serial.Serial(port, 115200, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise UserError(f"{port}: cannot open the serial port ({exc})") from None
