"""Replay a recording through the emulator: the detections the board would publish.

Windows start every `hop` samples and each runs from a zero state, which is what
the board's ceil(window / hop) staggered cells compute when hop < window.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .blob import QuantModel
from .errors import UserError
from .evaluate import int8_inputs
from .recording import Recording, windows
from .reference import IntegerLSTM, decide

Q15 = 32768


def threshold_q15(thresholds: dict[str, float], label: str) -> int:
    value = thresholds.get(label, thresholds.get("default", 0.0))
    return int(round(value * Q15))


def detections(rec: Recording, qmodel: QuantModel, window: int, hop: int,
               thresholds: dict[str, float], labels: list[str] | None = None,
               batch: int = 256, progress=None) -> Iterator[dict]:
    if rec.x.shape[1] != qmodel.n_inputs:
        raise UserError(f"recording has {rec.x.shape[1]} channels, the model takes {qmodel.n_inputs}")
    labels = labels or qmodel.class_names
    if len(labels) != qmodel.n_classes:
        raise UserError(f"{len(labels)} labels configured for a model with {qmodel.n_classes} classes")
    x_q = int8_inputs(qmodel, rec.x)
    starts = windows(len(x_q), window, hop)
    engine = IntegerLSTM(qmodel)
    limits = np.array([threshold_q15(thresholds, label) for label in labels])
    seq = 0
    for first in range(0, len(starts), batch):
        chunk = starts[first:first + batch]
        batch_x = np.stack([x_q[s:s + window] for s in chunk])
        classes, scores = decide(engine.run(batch_x), qmodel)
        for start, cls, score in zip(chunk, classes, scores):
            if score >= limits[cls]:
                seq += 1
                yield {"seq": seq, "t": round(float(rec.t[start + window - 1]), 3),
                       "class": int(cls), "label": labels[cls], "score": round(score / Q15, 4)}
        if progress is not None:
            progress(len(chunk))
