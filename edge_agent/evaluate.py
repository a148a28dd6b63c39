"""Float model vs its quantized blob on labelled windows."""
from __future__ import annotations

import numpy as np

from .blob import QuantModel
from .dataset import Split
from .errors import UserError
from .learn.model import FloatModel
from .reference.inputs import model_inputs
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
    x_q = model_inputs(qmodel, x)
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


# ---- anomaly models: scores over labelled recordings --------------------------------------

def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that an anomalous step scores
    above a normal one (ties count half), from ranks."""
    score = np.asarray(score, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # ties: their mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def event_metrics(active: np.ndarray, onsets: list[int], positive: np.ndarray, t: np.ndarray) -> dict:
    """Per recording: episodes detected (an alarm on at some step of the span),
    delays (span start to the first step with the alarm on), alarms that start
    in normal running (false), and alarms that start inside an episode (true)."""
    episodes = spans(positive)
    delays, detected = [], 0
    for a, b in episodes:
        on = np.flatnonzero(active[a:b])
        if len(on):
            detected += 1
            delays.append(float(t[a + on[0]] - t[a]))
    true = sum(1 for k in onsets if positive[k])
    return {"episodes": len(episodes), "detected": detected, "delays": delays,
            "true_alarms": true, "false_alarms": len(onsets) - true}


def float_anomaly_scores(model: FloatModel, qmodel: QuantModel, frames: np.ndarray) -> np.ndarray:
    """The float model's score, computed like the board's without rounding: the
    same distance in int8 input steps, the same weights and average."""
    from .learn.anomaly import float_predictions
    from .reference import anomaly as ref

    head = qmodel.anomaly
    scale = qmodel.inputs.scale.astype(np.float64)
    zero = qmodel.inputs.zero.astype(np.float64)
    pred = float_predictions(model, frames, head.window) / scale + zero
    obs = frames / scale + zero
    diff = np.minimum(np.abs(pred[:-1] - obs[1:]) * 16, ref.ERR_CAP)
    e = np.concatenate([[0.0], diff @ (head.weights / 64.0)])
    valid = ref.scored(len(e), head.window, head.warmup)
    alpha = 2.0 ** -head.smooth_shift
    out = np.empty(len(e))
    s = 0.0
    for k, (v, ok) in enumerate(zip(e.tolist(), valid.tolist())):
        if ok:
            s += alpha * (v - s)
        out[k] = s
    return out


def int_anomaly_scores(qmodel: QuantModel, frames: np.ndarray, backend: str = "numpy") -> np.ndarray:
    from .reference import anomaly as ref

    x_q = model_inputs(qmodel, frames)
    if backend == "numpy":
        return ref.scores(qmodel, x_q)
    if backend == "micropython":
        from . import blob
        from .board import unixport

        return unixport.run_anomaly(blob.pack(qmodel), x_q)[0]
    raise UserError(f"backend {backend!r} is not available (choose from {', '.join(BACKENDS)})")


def evaluate_anomaly(model: FloatModel, qmodel: QuantModel, recordings, backend: str = "numpy"):
    """recordings: [(x [N, C], labels [N] (normal: 0 / normal), t [N])]. Summary
    (float_roc_auc, int8_roc_auc, precision, recall, detection delay,
    false_alarms_per_hour) and per-step arrays for --dump and --plot."""
    from .learn.anomaly import is_normal, sensor_frames
    from .reference import anomaly as ref

    check_match(model, qmodel)
    if qmodel.anomaly is None:
        raise UserError("this is a classifier model blob; an anomaly model blob is expected here")
    head = qmodel.anomaly
    parts = {k: [] for k in ("t", "y", "float_score", "score", "active")}
    totals = {"episodes": 0, "detected": 0, "delays": [], "true_alarms": 0, "false_alarms": 0}
    normal_seconds = 0.0
    for x, labels, t in recordings:
        if labels is None:
            raise UserError("evaluation recordings need a 'label' column (0 / normal, anything else anomalous)")
        frames, index = sensor_frames(x, qmodel.frontend)
        if frames.shape[1] != model.n_inputs:
            raise UserError(f"data has {frames.shape[1]} inputs per step, the model takes {model.n_inputs}")
        if len(frames) < 2:
            continue
        positive = np.array([not is_normal(labels[k]) for k in index])
        steps_t = np.asarray(t, np.float64)[index]
        score = int_anomaly_scores(qmodel, frames, backend)
        fscore = float_anomaly_scores(model, qmodel, frames)
        events = ref.events(score, head.threshold)
        active = np.zeros(len(score), bool)
        for ev in events:
            active[ev.onset:len(score) if ev.end is None else ev.end] = True
        m = event_metrics(active, [ev.onset for ev in events], positive, steps_t)
        for key in totals:
            totals[key] += m[key]
        step_s = float(np.median(np.diff(steps_t))) if len(steps_t) > 1 else 0.0
        normal_seconds += step_s * int((~positive).sum())
        for key, value in (("t", steps_t), ("y", positive), ("float_score", fscore), ("score", score),
                           ("active", active)):
            parts[key].append(value)
    if not parts["y"]:
        raise UserError("the evaluation data is shorter than two model steps")
    y = np.concatenate(parts["y"])
    score = np.concatenate(parts["score"])
    fscore = np.concatenate(parts["float_score"])
    alarms = totals["true_alarms"] + totals["false_alarms"]
    delays = totals["delays"]
    summary = {
        "float_roc_auc": roc_auc(fscore, y),
        "int8_roc_auc": roc_auc(score, y),
        "precision": totals["true_alarms"] / alarms if alarms else float("nan"),
        "recall": totals["detected"] / totals["episodes"] if totals["episodes"] else float("nan"),
        "episodes": totals["episodes"],
        "detected": totals["detected"],
        "median_delay_s": float(np.median(delays)) if delays else float("nan"),
        "false_alarms": totals["false_alarms"],
        "normal_hours": normal_seconds / 3600,
        "false_alarms_per_hour": totals["false_alarms"] / (normal_seconds / 3600) if normal_seconds else float("nan"),
        "threshold": head.threshold,
        "n": int(len(y)),
        "backend": backend,
    }
    dump = {"t": np.concatenate(parts["t"]), "y": y.astype(np.int8), "score": score.astype(np.int64),
            "float_score": fscore, "active": np.concatenate(parts["active"]).astype(np.int8),
            "threshold": np.array(head.threshold)}
    return summary, dump


def anomaly_recordings(path, rate_hz: float):
    """Labelled recordings (a CSV / recording .npz, or a folder of them) for
    evaluate_anomaly: [(x, labels, t)]."""
    from pathlib import Path

    from . import recording

    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".npz")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no .csv or .npz recordings in this folder")
    out = []
    for f in files:
        rec = recording.load(f, rate_hz)
        if rec.labels is None:
            raise UserError(f"{f}: an evaluation recording needs a 'label' column (0 / normal, else anomalous)")
        out.append((rec.x, rec.labels, rec.t))
    return out
