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


def load(path: str | Path) -> Dataset:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: folders of CSV recordings are not read yet; give an .npz")
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
