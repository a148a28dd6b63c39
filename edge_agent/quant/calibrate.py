"""Choosing the calibration by what it does: each candidate's blob runs on the
calibration windows in the integer reference, and the one whose decisions
agree most with the float model's (then the smallest logit error) is kept.
Candidates: each of ptq.CALIBRATIONS, alone or with bias correction ("+bias").
bench/long_windows.py measures them on held-out data."""
from __future__ import annotations

import numpy as np

from ..blob import QuantModel
from ..errors import UserError
from ..learn.model import FloatModel
from .ptq import CALIBRATIONS, OUT_FRAC, quantize

CANDIDATES = CALIBRATIONS + tuple(f"{name}+bias" for name in CALIBRATIONS)
CHOICES = ("auto",) + CANDIDATES


def quantize_calibrated(model: FloatModel, calib: np.ndarray, lengths=None, calibration: str = "auto",
                        **kwargs) -> tuple[QuantModel, dict]:
    """quantize() with `calibration`, or with "auto" the candidate that best keeps
    the float model's decisions on calib. Returns the blob and, per candidate,
    {"agreement", "logits_rms"} (only the one tried unless auto) and "chosen"."""
    from ..reference.inputs import int8_inputs
    from ..reference.lstm import IntegerLSTM

    if calibration not in CHOICES:
        raise UserError(f"--calibration {calibration!r}: choose from {', '.join(CHOICES)}")
    candidates = CANDIDATES if calibration == "auto" else (calibration,)
    want = model.forward(calib, lengths)
    scores, blobs = {}, {}
    for name in candidates:
        qm = quantize(model, calib, lengths, calibration=name.removesuffix("+bias"),
                      bias_correction=name.endswith("+bias"), **kwargs)
        got = IntegerLSTM(qm).run(int8_inputs(qm, calib), lengths) / 2.0 ** OUT_FRAC
        scores[name] = {"agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
                        "logits_rms": float(np.sqrt(np.mean((got - want) ** 2)))}
        blobs[name] = qm
    # most agreement, then the least logit error; ties keep CALIBRATIONS' order (min/max first)
    chosen = max(candidates, key=lambda n: (scores[n]["agreement"], -scores[n]["logits_rms"],
                                            -candidates.index(n)))
    return blobs[chosen], {"chosen": chosen, "candidates": scores}
