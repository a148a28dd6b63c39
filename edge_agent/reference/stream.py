"""Window semantics and the per-window decision, as device/stream.py makes them.

Which samples form a window (window_starts), where decisions fall in a stream
(stream_decisions: reset per window, overlapping windows, or continuous), and the
integer decision at a window's end (decide: class and Q0.15 score).
"""
from __future__ import annotations

import numpy as np

from ..blob import QuantModel
from ..quant.fixedpoint import rshift_round
from ..quant.lut import GATE_FRAC, OUT_FRAC, lookup
from .lstm import IntegerLSTM


def decide(logits: np.ndarray, model: QuantModel) -> tuple[np.ndarray, np.ndarray]:
    """(class, score) per window. The score is the softmax probability of the top
    class in Q0.15, from the exp table: 32768**2 // (32768 + sum exp(l_k - l_top))."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.int64))
    top = np.argmax(logits, axis=1)  # first index wins ties, as on the board
    diff = logits[np.arange(len(logits)), top][:, None] - logits  # >= 0
    F = model.head.out_frac
    if F > GATE_FRAC:
        t = rshift_round(diff, F - GATE_FRAC)
    else:
        t = diff << (GATE_FRAC - F)
    t = np.minimum(t, 32768)
    e = lookup(model.exp, -t, model.lut_shift)
    e[np.arange(len(logits)), top] = 0
    total = (1 << OUT_FRAC) + e.sum(axis=1)
    score = np.minimum(((1 << (2 * OUT_FRAC)) + total // 2) // total, (1 << OUT_FRAC) - 1)
    return top, score


def score_fraction(score_q15: int) -> float:
    """The published score: Q0.15 rounded half up to 4 decimals, in integers, so
    the board and the host print the same number."""
    return ((int(score_q15) * 10000 + 16384) >> 15) / 10000


def smoothed_scores(classes, scores, n: int = 1) -> np.ndarray:
    """At every decision, the current class's scores over the last n decisions
    (those of another class count 0), summed and // n: Q0.15, as
    device/stream.py's Smoother keeps them in its ring."""
    k, s = np.asarray(classes, dtype=np.int64), np.asarray(scores, dtype=np.int64)
    total = s.copy()
    for lag in range(1, min(n, len(k))):
        total[lag:] += np.where(k[lag:] == k[:-lag], s[:-lag], 0)
    return total // n


def after_refractory(candidates, refractory: int) -> list[int]:
    """The candidates (rising decision indices) that come more than `refractory`
    decisions after the last one kept."""
    kept: list[int] = []
    for i in candidates:
        if not kept or i > kept[-1] + refractory:
            kept.append(int(i))
    return kept


def smooth_detections(classes, scores, thresholds, n: int = 1, refractory: int = 0) -> list[tuple[int, int]]:
    """(decision index, smoothed score) of each published detection, as
    device/stream.py's Smoother makes them: the current class's smoothed score
    (smoothed_scores) at or above its threshold (Q0.15), and no detection in the
    previous `refractory` decisions."""
    total = smoothed_scores(classes, scores, n)
    if not len(total):
        return []
    limit = np.asarray(thresholds, dtype=np.int64)[np.asarray(classes, dtype=np.int64)]
    return [(i, int(total[i])) for i in after_refractory(np.flatnonzero(total >= limit), refractory)]


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start index of every full window, one every `hop` samples."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def stream_decisions(engine: IntegerLSTM, x_q: np.ndarray, window: int, hop: int,
                     continuous: bool = False, batch: int = 256):
    """Decision points of a sample stream x_q int8 [N, C], as device/stream.py
    makes them: [(sample index, logits [K])].

    Windowed (the default): a window starts every `hop` samples, runs from a zero
    state and decides at its last sample; overlapping windows (hop < window) are
    independent, which is what the board's staggered states compute. Continuous:
    one state never reset, a decision every `hop` samples once `window` have passed.
    """
    if window < 1 or not 1 <= hop <= window:
        raise ValueError("need 1 <= hop <= window")
    x_q = np.asarray(x_q, dtype=np.int64)
    out = []
    if continuous:
        engine.reset(1)
        for t in range(len(x_q)):
            engine.step(x_q[t][None, :])
            if t + 1 >= window and (t + 1 - window) % hop == 0:
                out.append((t, engine.logits()[0]))
        return out
    starts = window_starts(len(x_q), window, hop)
    for first in range(0, len(starts), batch):
        chunk = starts[first:first + batch]
        logits = engine.run(np.stack([x_q[s:s + window] for s in chunk]))
        out.extend((int(s) + window - 1, row) for s, row in zip(chunk, logits))
    return out
