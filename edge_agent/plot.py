"""evaluate --plot: confusion matrices (float, int8) and per-gate quantization
error histograms in one PNG. matplotlib is an optional extra."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_open


def confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def report_png(path: str | Path, y, float_pred, int_pred, labels: list[str], gate_errors: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'edge-agent[plot]'") from None
    n = len(labels)
    rows = 1 + (len(gate_errors) + 3) // 4
    fig = plt.figure(figsize=(14, 4.2 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 4)
    for col, (title, pred) in enumerate((("float", float_pred), ("int8", int_pred))):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        m = confusion(y, pred, n)
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set_xticks(range(n), labels, rotation=30)
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: accuracy {np.mean(pred == y):.3f}")
    for i, (name, err) in enumerate(gate_errors.items()):
        ax = fig.add_subplot(grid[1 + i // 4, i % 4])
        ax.hist(err, bins=80, color="tab:orange")
        ax.set_yscale("log")
        ax.set_title(f"{name}: rms {np.sqrt(np.mean(err ** 2)):.4f}")
        ax.set_xlabel("int8 - float gate pre-activation")
    fig.suptitle("float vs int8: confusion and quantization error")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    plt.close(fig)
