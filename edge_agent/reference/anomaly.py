"""The anomaly head's integer score, exactly as device/anomaly.py computes it
(docs/arithmetic.md, "Anomaly score").

The LSTM runs over the stream with its state reset every `window` steps; after
each step its dense head predicts the next step's int8 input, in Q.12. When
that input arrives, the distance between prediction and observation is one
step's error; an exponential moving average of the errors is the score; an
anomaly starts when the score reaches the threshold stored in the blob and
ends when it falls below three quarters of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..blob import AnomalyHead, QuantModel
from .lstm import IntegerLSTM

ERR_SHIFT = 8  # |pred - x << 12| >> 8: a channel's error in 1/16 int8 steps
ERR_CAP = 2047  # ... at most 128 int8 steps
WEIGHT_FRAC = 6  # per-channel weights are Q.6 (0..255)
STEP_CAP = (1 << 19) - 1  # one step's error: with shift <= 10 the average stays below 2**29
MAX_SHIFT = 10


@dataclass
class Event:
    onset: int  # sample index where the score reached the threshold
    end: int | None  # sample index where it fell below 3/4 of it (None: still on)
    peak: int  # the largest score in between
    onset_score: int = 0  # the score at the onset


def predictions(qmodel: QuantModel, x_q: np.ndarray, window: int, engine: IntegerLSTM | None = None,
                batch: int = 4096) -> np.ndarray:
    """pred [N, C] int64 (Q.12 int8 units): the head after stepping sample t, the
    state reset at every multiple of `window` (windows `batch` at a time)."""
    x_q = np.asarray(x_q, dtype=np.int64)
    n, channels = x_q.shape
    engine = engine or IntegerLSTM(qmodel)
    pad = -n % window
    seq = np.concatenate([x_q, np.zeros((pad, channels), np.int64)]).reshape(-1, window, channels)
    lengths = np.full(len(seq), window)
    if pad:
        lengths[-1] = window - pad
    out = []
    for first in range(0, len(seq), batch):
        hs = engine.hidden_sequence(seq[first:first + batch], lengths[first:first + batch])  # int8 [w, T, H]
        out.append(engine.logits(hs.reshape(-1, hs.shape[2]).astype(np.int32)))
    return np.concatenate(out)[:n]


def scored(n: int, window: int, warmup: int) -> np.ndarray:
    """bool [N]: sample t is scored when the prediction for it came from at least
    `warmup` steps of a window (t - 1 is step (t - 1) % window + 1 of its window)."""
    t = np.arange(n)
    return (t >= 1) & ((t - 1) % window + 1 >= warmup)


def step_errors(pred: np.ndarray, x_q: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """e [N]: the weighted L1 distance between sample t and the prediction made
    at t - 1 (e[0] = 0), int, at most STEP_CAP."""
    x_q = np.asarray(x_q, dtype=np.int64)
    diff = np.abs(pred[:-1] - (x_q[1:] << 12)) >> ERR_SHIFT
    total = (np.minimum(diff, ERR_CAP) * np.asarray(weights, np.int64)).sum(axis=1) >> WEIGHT_FRAC
    return np.concatenate([[0], np.minimum(total, STEP_CAP)])


def smooth(errors: np.ndarray, valid: np.ndarray, shift: int) -> np.ndarray:
    """score [N]: s = s - (s >> shift) + e at every scored step, score = s >> shift
    (held between scored steps)."""
    out = np.empty(len(errors), np.int64)
    s = 0
    for t, (e, ok) in enumerate(zip(errors.tolist(), valid.tolist())):
        if ok:
            s = s - (s >> shift) + e
        out[t] = s >> shift
    return out


def events(score: np.ndarray, threshold: int) -> list[Event]:
    """Onsets (score >= threshold) and ends (score < threshold - threshold // 4)."""
    found: list[Event] = []
    release = threshold - (threshold >> 2)
    active = None
    for t, s in enumerate(score.tolist()):
        if active is None:
            if s >= threshold:
                active = Event(t, None, s, s)
                found.append(active)
        elif s < release:
            active.end = t
            active = None
        elif s > active.peak:
            active.peak = s
    return found


def scores(qmodel: QuantModel, x_q: np.ndarray, head: AnomalyHead | None = None) -> np.ndarray:
    """The board's score after every sample of an int8 input stream [N, C]."""
    head = head or qmodel.anomaly
    if head is None:
        raise ValueError("not an anomaly model")
    pred = predictions(qmodel, x_q, head.window)
    errors = step_errors(pred, x_q, head.weights)
    return smooth(errors, scored(len(errors), head.window, head.warmup), head.smooth_shift)


def ratio(score: int, threshold: int) -> float:
    """The published score: score / threshold rounded half up to four decimals
    with integers, so board and host print the same number."""
    return ((int(score) * 10000 + max(threshold, 1) // 2) // max(threshold, 1)) / 10000
