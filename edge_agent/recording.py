"""Sensor recordings: CSV (header row, optional t/timestamp and label columns,
one column per channel) or .npz (x [N, C], optional t [N], label [N])."""
from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

TIME_COLUMNS = ("t", "timestamp")


@dataclass
class Recording:
    x: np.ndarray  # [N, C] float, sensor units
    t: np.ndarray  # [N] seconds
    labels: list[str] | None  # per sample, when recorded
    channels: list[str]


def _read_csv(path: Path, rate_hz: float) -> Recording:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read recording ({exc})") from None
    if len(rows) < 2:
        raise UserError(f"{path}: a recording needs a header row and at least one sample")
    header = [h.strip() for h in rows[0]]
    time_col = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    label_col = next((i for i, h in enumerate(header) if h.lower() == "label"), None)
    channel_cols = [i for i in range(len(header)) if i not in (time_col, label_col)]
    if not channel_cols:
        raise UserError(f"{path}: no channel columns in the header")
    values = np.empty((len(rows) - 1, len(header) if header else 0), dtype=np.float64)
    labels = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{path}: line {n} has {len(row)} fields, the header has {len(header)}")
        for i, cell in enumerate(row):
            if i == label_col:
                labels.append(cell.strip())
                continue
            try:
                values[n - 2, i] = float(cell)
            except ValueError:
                raise UserError(f"{path}: line {n}, column {header[i]!r}: {cell!r} is not a number") from None
    x = values[:, channel_cols]
    t = values[:, time_col] if time_col is not None else np.arange(len(x)) / rate_hz
    return Recording(x, t, labels if label_col is not None else None, [header[i] for i in channel_cols])


def _read_npz(path: Path, rate_hz: float) -> Recording:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise UserError(f"{path}: a recording .npz needs an array 'x' [N, C]")
            x = np.asarray(z["x"], dtype=np.float64)
            t = np.asarray(z["t"], dtype=np.float64) if "t" in z.files else None
            labels = [str(s) for s in z["label"].tolist()] if "label" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable recording ({exc})") from None
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"{path}: x has shape {x.shape}, expected [N>0, C]")
    t = np.arange(len(x)) / rate_hz if t is None else t
    if t.shape != (len(x),) or (labels is not None and len(labels) != len(x)):
        raise UserError(f"{path}: t and label need one entry per sample")
    return Recording(x, t, labels, [f"ch{c}" for c in range(x.shape[1])])


def load(path: str | Path, rate_hz: float = 50.0) -> Recording:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recording not found")
    rec = _read_npz(path, rate_hz) if path.suffix == ".npz" else _read_csv(path, rate_hz)
    if not np.all(np.isfinite(rec.x)):
        raise UserError(f"{path}: the recording holds NaN or infinite values")
    return rec


def save_csv(path: str | Path, x: np.ndarray, rate_hz: float, channels, labels=None) -> None:
    from .fileio import atomic_open

    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["t", *channels] + (["label"] if labels is not None else []))
        for n, row in enumerate(x):
            extra = [labels[n]] if labels is not None else []
            writer.writerow([f"{n / rate_hz:.3f}", *(f"{v:.5g}" for v in row), *extra])

