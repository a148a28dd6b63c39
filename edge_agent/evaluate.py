"""Float model vs its quantized blob on labelled windows."""
from __future__ import annotations

import numpy as np

from .blob import QuantModel
from .dataset import Split
from .errors import UserError
from .learn.model import FloatModel
from .reference.inputs import int8_inputs
from .reference.lstm import IntegerLSTM
from .reference.stream import decide

BACKENDS = ("numpy", "micropython")


def check_match(model: FloatModel, qmodel: QuantModel) -> None:
    """Refuse a blob that was not quantized from this float model."""
    ours = (model.n_inputs, model.hidden, len(model.layers), model.n_classes)
    theirs = (qmodel.n_inputs, qmodel.hidden, len(qmodel.layers), qmodel.n_classes)
    if ours != theirs:
        fmt = "inputs={} hidden={} layers={} classes={}".format
        raise UserError(f"blob does not match the model: blob has {fmt(*theirs)}, model has {fmt(*ours)}")
    if qmodel.fingerprint and qmodel.fingerprint != model.fingerprint():
        raise UserError("blob does not match the model: it was quantized from other weights")


def int_logits(qmodel: QuantModel, x: np.ndarray, lengths=None, backend: str = "numpy") -> np.ndarray:
    """int32 logits from the reference (numpy) or from device/ under MicroPython."""
    x_q = int8_inputs(qmodel, x)
    if backend == "numpy":
        return IntegerLSTM(qmodel).run(x_q, lengths)
    if backend == "micropython":
        from . import blob
        from .board import unixport

        return unixport.run_windows(blob.pack(qmodel), x_q, lengths)
    raise UserError(f"backend {backend!r} is not available (choose from {', '.join(BACKENDS)})")


def evaluate(model: FloatModel, qmodel: QuantModel, split: Split, backend: str = "numpy"):
    """Summary figures and the per-window arrays for --dump."""
    check_match(model, qmodel)
    if split.x.shape[2] != model.n_inputs:
        raise UserError(f"data has {split.x.shape[2]} channels, the model takes {model.n_inputs}")
    if split.y.max() >= model.n_classes:
        raise UserError(f"data holds label {split.y.max()}, the model has {model.n_classes} classes")
    float_pred = model.forward(split.x, split.lengths).argmax(axis=1)
    logits = int_logits(qmodel, split.x, split.lengths, backend)
    pred, score = decide(logits, qmodel)
    summary = {
        "float_accuracy": float(np.mean(float_pred == split.y)),
        "int8_accuracy": float(np.mean(pred == split.y)),
        "agreement": float(np.mean(pred == float_pred)),
        "n": int(len(split.y)),
        "backend": backend,
    }
    dump = {"logits": logits.astype(np.int32), "pred": pred.astype(np.int32),
            "score": score.astype(np.int32), "float_pred": float_pred.astype(np.int32),
            "y": split.y.astype(np.int32)}
    return summary, dump
