"""Sensor recordings: CSV (header row, optional t/timestamp and label columns,
one column per channel), .npz (x [N, C], optional t [N], label [N]), or WAV
(16-bit PCM mono: one channel of raw int16 samples)."""
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
    rate_hz: float | None = None  # known from the file (WAV), else the config's


def _read_csv(path: Path, rate_hz: float) -> Recording:
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read recording ({str(exc)[:120]})") from None
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, ...
        raise UserError(f"{path}: not a CSV recording ({str(exc)[:120]})") from None
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
                raise UserError(f"{path}: line {n}, column {header[i][:40]!r}: {cell[:40]!r} is not a number") from None
    x = values[:, channel_cols]
    t = values[:, time_col] if time_col is not None else np.arange(len(x)) / rate_hz
    return Recording(x, t, labels if label_col is not None else None, [header[i] for i in channel_cols])


def _real(path: Path, values: np.ndarray, name: str) -> np.ndarray:
    """An array of real numbers as float64; a complex or text array is refused, not cast."""
    if values.dtype.kind not in "biuf":
        raise UserError(f"{path}: {name} holds {values.dtype} values, expected real numbers")
    return np.asarray(values, dtype=np.float64)


def _read_npz(path: Path, rate_hz: float) -> Recording:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise UserError(f"{path}: a recording .npz needs an array 'x' [N, C]")
            x = _real(path, z["x"], "x")
            t = _real(path, z["t"], "t") if "t" in z.files else None
            labels = [str(s) for s in z["label"].tolist()] if "label" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable recording ({str(exc)[:120]})") from None
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"{path}: x has shape {x.shape}, expected [N>0, C]")
    t = np.arange(len(x)) / rate_hz if t is None else t
    if t.shape != (len(x),) or (labels is not None and len(labels) != len(x)):
        raise UserError(f"{path}: t and label need one entry per sample")
    return Recording(x, t, labels, [f"ch{c}" for c in range(x.shape[1])])


def read_wav(path: str | Path, rate_hz: int | None = None) -> tuple[np.ndarray, int]:
    """int16 samples [N] and the rate of a 16-bit PCM mono WAV; anything else is one
    clear line (rate_hz: the rate it must have)."""
    import wave

    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if channels != 1 or width != 2:
                raise UserError(f"{path}: {channels} channel(s) of {8 * width}-bit samples; need 16-bit PCM mono")
            if rate_hz is not None and rate != rate_hz:
                raise UserError(f"{path}: sampled at {rate} Hz; need {rate_hz} Hz (resample it first)")
            data = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise UserError(f"{path}: not a 16-bit PCM WAV file ({str(exc)[:120]})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read WAV ({exc.strerror or exc})") from None
    if len(data) % 2:
        raise UserError(f"{path}: WAV data ends in half a sample")
    return np.frombuffer(data, "<i2").astype(np.int16), rate


def write_wav(path: str | Path, samples: np.ndarray, rate_hz: int) -> None:
    """A 16-bit PCM mono WAV, written atomically."""
    import wave

    from .fileio import atomic_open

    with atomic_open(path, "wb") as fh:
        with wave.open(fh, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate_hz))
            w.writeframes(np.asarray(samples, "<i2").tobytes())


def _read_wav(path: Path) -> Recording:
    samples, rate = read_wav(path)
    if len(samples) == 0:
        raise UserError(f"{path}: the WAV holds no samples")
    x = samples.astype(np.float64)[:, None]
    return Recording(x, np.arange(len(x)) / rate, None, ["audio"], float(rate))


def load(path: str | Path, rate_hz: float = 50.0) -> Recording:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recording not found")
    if path.suffix.lower() == ".wav":
        return _read_wav(path)
    rec = _read_npz(path, rate_hz) if path.suffix == ".npz" else _read_csv(path, rate_hz)
    if not np.all(np.isfinite(rec.x)):
        raise UserError(f"{path}: the recording holds NaN or infinite values")
    if not np.all(np.isfinite(rec.t)):
        raise UserError(f"{path}: the recording's timestamps hold NaN or infinite values")
    return rec


def save_csv(path: str | Path, x: np.ndarray, rate_hz: float, channels, labels=None) -> None:
    from .fileio import atomic_open

    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["t", *channels] + (["label"] if labels is not None else []))
        for n, row in enumerate(x):
            extra = [labels[n]] if labels is not None else []
            writer.writerow([f"{n / rate_hz:.3f}", *(f"{v:.5g}" for v in row), *extra])

