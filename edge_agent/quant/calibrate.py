"""Choosing the calibration and the hidden-state width by what they do.

Each candidate is judged on windows it was not calibrated on: the calibration
windows are split in two folds, each fold's blob runs in the integer reference
on the other fold, and the candidate whose decisions agree most with the float
model's there (then the fewest windows at risk, then the smallest logit error) is kept, then quantized again on
all the windows. Judged on its own windows a candidate's ranges flatter it.

Calibrations: each of ptq.CALIBRATIONS, alone or with bias correction ("+bias").
Widths, in FORMATS' order (int8 everything; an int16 state; int16 inputs too):
the first, unless it does not hold the float decisions (_holds: its best
candidate keeps under AGREEMENT_GOAL of them or leaves over AT_RISK_MOST of the
windows at risk, see _score; or there are too few windows to tell); then the
next is tried, and kept if it does as well (as many decisions kept and no more
windows at risk: its finer arithmetic breaks the tie). Wider costs about one
percent of cycles and a few bytes per unit on the board (bench/state16.py:
+1.2 % per step on the RP2040) and allows at most WIDE_MAX_HIDDEN units (and,
with int16 inputs, channels). bench/long_windows.py measures them on held-out
data."""
from __future__ import annotations

import numpy as np

from ..blob import WIDE_MAX_HIDDEN, QuantModel
from ..errors import UserError
from ..learn.model import FloatModel
from .ptq import CALIBRATIONS, OUT_FRAC, quantize

CANDIDATES = CALIBRATIONS + tuple(f"{name}+bias" for name in CALIBRATIONS)
CHOICES = ("auto",) + CANDIDATES
STATE_BITS = ("auto", "8", "16")
INPUT_BITS = ("auto", "8", "16")
FORMATS = ((8, 8), (16, 8), (16, 16))  # (state bits, input bits), cheapest first
FORMAT_NAMES = {(8, 8): "h8", (16, 8): "h16", (16, 16): "h16x16"}  # in reports and benches
AGREEMENT_GOAL = 0.99  # below it on held-out windows, a format is judged to lose the float model's decisions
AT_RISK_MOST = 0.02  # or when more of them than this are at risk (_score): one or two windows are chance


def _tag(fmt: tuple[int, int]) -> str:
    """A format's suffix on a candidate's name in the report: "", "/h16", "/h16x16"."""
    return "" if fmt == FORMATS[0] else "/" + FORMAT_NAMES[fmt]


def _quantize(model, calib, lengths, name: str, fmt: tuple[int, int], kwargs) -> QuantModel:
    if fmt != (8, 8):
        kwargs = {**kwargs, "h_bits": fmt[0], "x_bits": fmt[1]}
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


def _score(model, calib, lengths, want, name, fmt, kwargs) -> dict:
    """Held-out agreement, logit rms error, and the share of windows at risk: where
    some logit is off by at least half the float model's top-two gap, so that a
    little more error would flip the decision (agreement alone cannot see how near
    the edge a small calibration set's windows are)."""
    from ..reference.inputs import model_inputs
    from ..reference.lstm import IntegerLSTM

    agree, risky, sq, count = 0, 0, 0.0, 0
    top2 = np.sort(want, axis=1)[:, -2:]
    for fit, judge in _folds(len(calib)):
        qm = _quantize(model, calib[fit], None if lengths is None else lengths[fit], name, fmt, kwargs)
        held = None if lengths is None else lengths[judge]
        got = IntegerLSTM(qm).run(model_inputs(qm, calib[judge]), held) / 2.0 ** OUT_FRAC
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


def _holds(score: dict, judged: int) -> bool:
    """A format keeps the float decisions, as far as `judged` held-out windows can tell:
    with fewer than 1 / (1 - AGREEMENT_GOAL) of them a single lost decision would pass
    the goal unseen, so a small calibration set never shows that it holds."""
    return score["agreement"] >= AGREEMENT_GOAL and score["at_risk"] <= AT_RISK_MOST \
        and judged * (1 - AGREEMENT_GOAL) >= 1 - 1e-9


def formats(model: FloatModel, state_bits: str = "auto", input_bits: str = "auto") -> list[tuple[int, int]]:
    """The FORMATS that --state-bits and --input-bits allow for this model, cheapest first."""
    if str(state_bits) not in STATE_BITS:
        raise UserError(f"--state-bits {state_bits!r}: choose from {', '.join(STATE_BITS)}")
    if str(input_bits) not in INPUT_BITS:
        raise UserError(f"--input-bits {input_bits!r}: choose from {', '.join(INPUT_BITS)}")
    if str(state_bits) == "8" and str(input_bits) == "16":
        raise UserError("--input-bits 16 comes with a 16-bit hidden state (--state-bits 16 or auto)")
    forced = [f for f in FORMATS if str(state_bits) in ("auto", str(f[0])) and str(input_bits) in ("auto", str(f[1]))]
    if "auto" not in (str(state_bits), str(input_bits)) or len(forced) == 1:
        return forced  # the user's choice: quantize() names what the model cannot take
    # auto: only the formats this model fits (none fitting: the first, for quantize() to refuse)
    fits = [f for f in forced if f == (8, 8) or (model.hidden <= WIDE_MAX_HIDDEN
                                                 and (f[1] == 8 or model.n_inputs <= WIDE_MAX_HIDDEN))]
    return fits or forced[:1]


def quantize_calibrated(model: FloatModel, calib: np.ndarray, lengths=None, calibration: str = "auto",
                        state_bits: str = "8", input_bits: str = "8", **kwargs) -> tuple[QuantModel, dict]:
    """quantize() with `calibration` ("auto": the candidate that best keeps the
    float model's decisions on held-out folds), `state_bits` and `input_bits`
    ("8", "16" or "auto"). Returns the blob and a report: per candidate ("name",
    "name/h16" or "name/h16x16") {"agreement", "logits_rms"} on held-out folds,
    "chosen" (the calibration), "h_bits" and "x_bits"."""
    if calibration not in CHOICES:
        raise UserError(f"--calibration {calibration!r}: choose from {', '.join(CHOICES)}")
    allowed = formats(model, state_bits, input_bits)
    calib = np.asarray(calib, dtype=np.float64)
    lengths = None if lengths is None else np.asarray(lengths)
    names = CANDIDATES if calibration == "auto" else (calibration,)
    want = model.forward(calib, lengths)
    scores: dict[str, dict] = {}

    def best(fmt: tuple[int, int]) -> tuple[str, dict]:
        tag = _tag(fmt)
        for name in names:
            scores[name + tag] = _score(model, calib, lengths, want, name, fmt, kwargs)
        # most agreement, then fewest windows at risk, then the least logit error; ties keep
        # CANDIDATES' order (min/max first)
        name = max(names, key=lambda n: _rank(scores[n + tag]) + (-names.index(n),))
        return name, scores[name + tag]

    fmt = allowed[0]
    chosen, score = best(fmt)
    for wider in allowed[1:]:  # only while the cheaper format does not hold (module docstring)
        if _holds(score, len(calib)):
            break
        name, wide_score = best(wider)
        if _rank(wide_score)[:2] >= _rank(score)[:2]:  # as many decisions kept, no more at risk
            chosen, score, fmt = name, wide_score, wider
    qm = _quantize(model, calib, lengths, chosen, fmt, kwargs)
    return qm, {"chosen": chosen, "h_bits": fmt[0], "x_bits": fmt[1], "candidates": scores,
                "agreement": score["agreement"]}
