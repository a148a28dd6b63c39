"""Choosing the calibration and the hidden-state width by what they do.

Each candidate is judged on windows it was not calibrated on: the calibration
windows are split in two folds, each fold's blob runs in the integer reference
on the other fold, and the candidate whose decisions agree most with the float
model's there (then the fewest windows at risk, then the smallest logit error) is kept, then quantized again on
all the windows. Judged on its own windows a candidate's ranges flatter it.

Calibrations: each of ptq.CALIBRATIONS, alone or with bias correction ("+bias").
State width: 8 bits unless the best 8-bit candidate keeps under AGREEMENT_GOAL
of the decisions, or leaves over AT_RISK_MOST of the windows at risk (see
_score), and a 16-bit one does better (more decisions kept, or as many and
fewer windows at risk) (16 bits cost cycles on the board: ~2.1x
per step on the RP2040, bench/state16.py; and allow at most WIDE_MAX_HIDDEN units).
bench/long_windows.py measures them on held-out data."""
from __future__ import annotations

import numpy as np

from ..blob import WIDE_MAX_HIDDEN, QuantModel
from ..errors import UserError
from ..learn.model import FloatModel
from .ptq import CALIBRATIONS, OUT_FRAC, quantize

CANDIDATES = CALIBRATIONS + tuple(f"{name}+bias" for name in CALIBRATIONS)
CHOICES = ("auto",) + CANDIDATES
STATE_BITS = ("auto", "8", "16")
AGREEMENT_GOAL = 0.99  # below it on held-out windows, 8 bits are judged to lose the float model's decisions
AT_RISK_MOST = 0.02  # or when more of them than this are at risk (_score): one or two windows are chance


def _quantize(model, calib, lengths, name: str, h_bits: int, kwargs) -> QuantModel:
    if h_bits != 8:
        kwargs = {**kwargs, "h_bits": h_bits}
    return quantize(model, calib, lengths, calibration=name.removesuffix("+bias"),
                    bias_correction=name.endswith("+bias"), **kwargs)


def _folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(calibrate on, judge on) index pairs: two folds, or the windows themselves
    when there are too few to split."""
    if n < 4:
        every = np.arange(n)
        return [(every, every)]
    order = np.random.default_rng(0).permutation(n)
    a, b = np.sort(order[: n // 2]), np.sort(order[n // 2:])
    return [(a, b), (b, a)]


def _score(model, calib, lengths, want, name, h_bits, kwargs) -> dict:
    """Held-out agreement, logit rms error, and the share of windows at risk: where
    some logit is off by at least half the float model's top-two gap, so that a
    little more error would flip the decision (agreement alone cannot see how near
    the edge a small calibration set's windows are)."""
    from ..reference.inputs import int8_inputs
    from ..reference.lstm import IntegerLSTM

    agree, risky, sq, count = 0, 0, 0.0, 0
    top2 = np.sort(want, axis=1)[:, -2:]
    for fit, judge in _folds(len(calib)):
        qm = _quantize(model, calib[fit], None if lengths is None else lengths[fit], name, h_bits, kwargs)
        held = None if lengths is None else lengths[judge]
        got = IntegerLSTM(qm).run(int8_inputs(qm, calib[judge]), held) / 2.0 ** OUT_FRAC
        err = got - want[judge]
        agree += int(np.sum(got.argmax(1) == want[judge].argmax(1)))
        gap = top2[judge, 1] - top2[judge, 0]
        risky += int(np.sum(np.abs(err).max(1) >= gap / 2))
        sq += float(np.sum(err ** 2))
        count += len(judge)
    return {"agreement": agree / count, "at_risk": risky / count,
            "logits_rms": float(np.sqrt(sq / (count * want.shape[1])))}


def _rank(score: dict) -> tuple:
    return score["agreement"], -score["at_risk"], -score["logits_rms"]


def quantize_calibrated(model: FloatModel, calib: np.ndarray, lengths=None, calibration: str = "auto",
                        state_bits: str = "8", **kwargs) -> tuple[QuantModel, dict]:
    """quantize() with `calibration` ("auto": the candidate that best keeps the
    float model's decisions on held-out folds) and `state_bits` ("8", "16" or
    "auto"). Returns the blob and a report: per candidate ("name" or
    "name/h16") {"agreement", "logits_rms"} on held-out folds, "chosen" (the
    calibration) and "h_bits"."""
    if calibration not in CHOICES:
        raise UserError(f"--calibration {calibration!r}: choose from {', '.join(CHOICES)}")
    if str(state_bits) not in STATE_BITS:
        raise UserError(f"--state-bits {state_bits!r}: choose from {', '.join(STATE_BITS)}")
    calib = np.asarray(calib, dtype=np.float64)
    lengths = None if lengths is None else np.asarray(lengths)
    names = CANDIDATES if calibration == "auto" else (calibration,)
    want = model.forward(calib, lengths)
    scores: dict[str, dict] = {}

    def best(h_bits: int) -> tuple[str, dict]:
        tag = "" if h_bits == 8 else f"/h{h_bits}"
        for name in names:
            scores[name + tag] = _score(model, calib, lengths, want, name, h_bits, kwargs)
        # most agreement, then fewest windows at risk, then the least logit error; ties keep
        # CANDIDATES' order (min/max first)
        name = max(names, key=lambda n: _rank(scores[n + tag]) + (-names.index(n),))
        return name, scores[name + tag]

    if state_bits == "auto":
        chosen, h_bits = best(8)[0], 8
        narrow = scores[chosen]
        losing = narrow["agreement"] < AGREEMENT_GOAL or narrow["at_risk"] > AT_RISK_MOST
        if losing and model.hidden <= WIDE_MAX_HIDDEN:
            wide, wide_score = best(16)
            if _rank(wide_score)[:2] > _rank(narrow)[:2]:  # more agreement, or as much and fewer at risk
                chosen, h_bits = wide, 16
    else:
        h_bits = int(state_bits)
        chosen = best(h_bits)[0]
    qm = _quantize(model, calib, lengths, chosen, h_bits, kwargs)
    key = chosen + ("" if h_bits == 8 else f"/h{h_bits}")
    return qm, {"chosen": chosen, "h_bits": h_bits, "candidates": scores, "agreement": scores[key]["agreement"]}
