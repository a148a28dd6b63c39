"""DATA files: an .npz of labelled windows (keys in docs/format.md)."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError


@dataclass
class Split:
    x: np.ndarray  # [n, T, C] float32, raw sensor units
    y: np.ndarray  # [n] int
    lengths: np.ndarray | None  # [n] valid steps per window, or None for all T


@dataclass
class Dataset:
    train: Split
    test: Split
    class_names: list[str] | None


def _split(z, path: Path, name: str, channels: int | None) -> Split:
    for key in (f"X_{name}", f"y_{name}"):
        if key not in z.files:
            raise UserError(f"{path}: missing array {key}")
    x, y = z[f"X_{name}"], z[f"y_{name}"]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{path}: X_{name} has shape {x.shape}, expected [n>0, T>0, C]")
    if channels is not None and x.shape[2] != channels:
        raise UserError(f"{path}: X_{name} has {x.shape[2]} channels, X_train has {channels}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise UserError(f"{path}: X_{name} must be finite numbers")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y_{name} must be {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    if y.min() < 0:
        raise UserError(f"{path}: y_{name} holds a negative label")
    lengths = z[f"lengths_{name}"] if f"lengths_{name}" in z.files else None
    if lengths is not None:
        lengths = lengths.astype(np.int64)
        if lengths.shape != y.shape or lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise UserError(f"{path}: lengths_{name} must be {len(y)} values in 1..{x.shape[1]}")
    return Split(x.astype(np.float32), y.astype(np.int64), lengths)


def from_recordings(folder: Path, window: int, hop: int, rate_hz: float, test_fraction: float = 0.2) -> Dataset:
    """Labelled CSV recordings (a `label` column) cut into windows every `hop`
    samples; a window's label is the one most of its samples carry. The last
    part of each recording is the test split (no window shared across splits)."""
    from .recording import load as load_recording
    from .reference.stream import window_starts

    files = sorted(folder.glob("*.csv"))
    if not files:
        raise UserError(f"{folder}: no .csv recordings in this folder")
    recs = [load_recording(f, rate_hz) for f in files]
    for f, rec in zip(files, recs):
        if rec.labels is None:
            raise UserError(f"{f}: a training recording needs a 'label' column")
        if rec.x.shape[1] != recs[0].x.shape[1]:
            raise UserError(f"{f}: {rec.x.shape[1]} channels, {files[0].name} has {recs[0].x.shape[1]}")
    names = sorted({label for rec in recs for label in rec.labels})
    index = {name: k for k, name in enumerate(names)}
    parts = {"train": ([], []), "test": ([], [])}
    for f, rec in zip(files, recs):
        labels = np.array([index[label] for label in rec.labels])
        starts = window_starts(len(rec.x), window, hop)
        if len(starts) == 0:
            raise UserError(f"{f}: shorter than one window ({window} samples)")
        cut = int(len(starts) * (1 - test_fraction))
        for n, start in enumerate(starts):
            # a test window must not overlap a training window
            split = "train" if n < cut else "test"
            if split == "test" and cut and start < starts[cut - 1] + window:
                continue
            xs, ys = parts[split]
            xs.append(rec.x[start:start + window])
            ys.append(np.bincount(labels[start:start + window], minlength=len(names)).argmax())
    if not parts["train"][0] or not parts["test"][0]:
        raise UserError(f"{folder}: too little data for a train and a test split at window {window}")
    make = lambda xs, ys: Split(np.stack(xs).astype(np.float32), np.array(ys, np.int64), None)
    return Dataset(make(*parts["train"]), make(*parts["test"]), names)


def load(path: str | Path, window: int = 100, hop: int = 100, rate_hz: float = 50.0) -> Dataset:
    """DATA: an .npz, or a folder of labelled CSV recordings cut by window/hop."""
    path = Path(path)
    if path.is_dir():
        return from_recordings(path, window, hop, rate_hz)
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            train = _split(z, path, "train", None)
            test = _split(z, path, "test", train.x.shape[2])
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz data file ({exc})") from None
    top = int(max(train.y.max(), test.y.max()))
    if names is not None and top >= len(names):
        raise UserError(f"{path}: label {top} has no entry in class_names ({len(names)} names)")
    return Dataset(train, test, names)
