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


def anomaly_png(path: str | Path, dump: dict) -> None:
    """evaluate --plot for an anomaly model: the int8 score over time, the stored
    threshold, the labelled anomalous spans shaded and the alarms marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'edge-agent[plot]'") from None
    from .evaluate import spans

    step = np.arange(len(dump["score"]))
    fig, ax = plt.subplots(figsize=(14, 4.5), layout="constrained")
    for a, b in spans(dump["y"].astype(bool)):
        ax.axvspan(a, b, color="tab:red", alpha=0.15, lw=0)
    for a, b in spans(dump["active"].astype(bool)):
        ax.axvspan(a, b, ymin=0, ymax=0.03, color="tab:red", lw=0)
    ax.plot(step, dump["score"], lw=0.8, color="tab:blue", label="int8 score (board)")
    threshold = int(dump["threshold"])
    # the float score is in the int8 score's units (evaluate.float_anomaly_scores)
    ax.plot(step, dump["float_score"], lw=0.6, color="tab:gray", alpha=0.7, label="float score")
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("model step (shaded: labelled anomalous; red bar: alarm on)")
    ax.set_ylabel("score")
    ax.set_yscale("symlog", linthresh=max(threshold / 10, 1))
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
