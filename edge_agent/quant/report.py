"""Quantization error figures: float internals beside the integer reference's."""
from __future__ import annotations

import numpy as np

from ..learn import model as float_model
from ..blob import QuantModel
from ..learn.model import FloatModel, valid_steps
from ..reference.inputs import model_inputs
from ..reference.lstm import IntegerLSTM, Trace
from .lut import GATE_FRAC
from .ptq import GATE_NAMES, OUT_FRAC


def _stats(err: np.ndarray, ref: np.ndarray) -> dict:
    err = err.ravel()
    scale = float(np.sqrt(np.mean(ref.ravel() ** 2))) or 1.0
    return {"mean_abs": float(np.mean(np.abs(err))), "max_abs": float(np.max(np.abs(err))),
            "rms": float(np.sqrt(np.mean(err**2))), "rms_relative": float(np.sqrt(np.mean(err**2)) / scale)}


def error_report(model: FloatModel, qmodel: QuantModel, x: np.ndarray, lengths=None,
                 samples: dict | None = None) -> dict:
    """Per-layer, per-gate error of the integer model against the float one on x.
    With `samples` (a dict), the raw error arrays are put there too, keyed
    "layer k <gate>", for histograms."""
    ftrace = float_model.Trace()
    flogits = model.forward(x, lengths, ftrace)
    itrace = Trace()
    x_q = model_inputs(qmodel, x)
    ilogits = IntegerLSTM(qmodel).run(x_q, lengths, itrace)
    valid = valid_steps(x.shape[0], x.shape[1], lengths)
    x_deq = (x_q - qmodel.inputs.zero) * qmodel.inputs.scale
    report = {
        "windows": int(len(x)),
        "inputs": [dict(channel=c, scale=float(qmodel.inputs.scale[c]), zero=int(qmodel.inputs.zero[c]),
                        **_stats((x_deq[..., c] - x[..., c])[valid], x[..., c][valid]))
                   for c in range(x.shape[2])],
        "layers": [],
    }
    H = qmodel.hidden
    for k, qlayer in enumerate(qmodel.layers):
        fg, ig = ftrace.gates[k][valid], itrace.gates[k][valid] / 2.0**GATE_FRAC
        gates = {}
        for g, name in enumerate(GATE_NAMES):
            cols = slice(g * H, (g + 1) * H)
            target = np.clip(fg[:, cols], -8, 8 - 2.0**-GATE_FRAC)  # Q3.12 saturates by design
            gates[name] = dict(**_stats(ig[:, cols] - target, target),
                               saturated=float(np.mean(np.abs(fg[:, cols]) >= 8)))
            if samples is not None:
                samples[f"layer {k} {name}"] = (ig[:, cols] - target).ravel()
        fc, ic = ftrace.cell[k][valid], itrace.cell[k][valid] / 2.0**qlayer.c_frac
        fh, ih = ftrace.hidden[k][valid], itrace.hidden[k][valid] * qmodel.h_scale
        report["layers"].append({"layer": k, "c_frac": qlayer.c_frac, "gates": gates,
                                 "cell": _stats(ic - fc, fc), "hidden": _stats(ih - fh, fh)})
    report["logits"] = _stats(ilogits / 2.0**OUT_FRAC - flogits, flogits)
    report["agreement"] = float(np.mean(ilogits.argmax(1) == flogits.argmax(1)))
    return report
