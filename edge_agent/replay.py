"""Replay a recording through the emulator: the detections the board would publish."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .blob import QuantModel
from .errors import UserError
from .evaluate import int8_inputs
from .recording import Recording
from .reference import IntegerLSTM, decide, score_fraction, stream_decisions

Q15 = 32768


def threshold_q15(thresholds: dict[str, float], label: str) -> int:
    value = thresholds.get(label, thresholds.get("default", 0.0))
    return int(round(value * Q15))


def detections(rec: Recording, qmodel: QuantModel, window: int, hop: int,
               thresholds: dict[str, float], labels: list[str] | None = None,
               continuous: bool = False, progress=None) -> Iterator[dict]:
    if rec.x.shape[1] != qmodel.n_inputs:
        raise UserError(f"recording has {rec.x.shape[1]} channels, the model takes {qmodel.n_inputs}")
    labels = labels or qmodel.class_names
    if len(labels) != qmodel.n_classes:
        raise UserError(f"{len(labels)} labels configured for a model with {qmodel.n_classes} classes")
    x_q = int8_inputs(qmodel, rec.x)
    engine = IntegerLSTM(qmodel)
    limits = np.array([threshold_q15(thresholds, label) for label in labels])
    points = stream_decisions(engine, x_q, window, hop, continuous)
    if not points:
        return
    classes, scores = decide(np.stack([logits for _, logits in points]), qmodel)
    seq = 0
    for (t, _), cls, score in zip(points, classes, scores):
        if progress is not None:
            progress(1)
        if score >= limits[cls]:
            seq += 1
            yield {"seq": seq, "t": round(float(rec.t[t]), 3),
                   "class": int(cls), "label": labels[cls], "score": score_fraction(score)}
