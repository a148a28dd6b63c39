"""Anomaly mode: an LSTM that predicts the next input frame, trained on normal
recordings only.

Why prediction rather than reconstructing the window: the board then scores
every step as it comes (one head product per step, no window buffer, no
decoder), the score reacts within the smoothing span instead of once per
window, and the same stateful cell serves both heads. The state is reset
every `window` steps, exactly as in training (windows from a zero state), so
the deployed model never runs longer than it learned to; predictions from
fewer than `warmup` steps of context are not scored.

Training reuses train.py's BPTT (forward/backward through time, Adam,
gradient clipping); only the loss differs: mean squared error of the
normalized next frame at every step from `warmup - 1` on.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_open
from .model import FloatModel, _lstm_layer, full_lengths, load_model

NORMAL_NAMES = ("0", "normal", "ok", "healthy", "good")
HELD_BACK = 0.2  # the last part of each normal recording: never trained on, calibrates the threshold
MAX_WINDOWS = 3000


@dataclass
class AnomalyMeta:
    """What the blob needs beyond the weights; stored beside them in the .npz."""

    window: int = 64  # state reset period = training window (steps)
    warmup: int = 8  # steps of context before a prediction counts
    smoothing: int = 64  # EMA span of the score, in steps
    quantile: float = 0.999  # of the held-back normal scores ...
    margin: float = 1.5  # ... times this is the threshold
    headroom: float = 2.0  # int8 input range, times the normal one

    @property
    def smooth_shift(self) -> int:
        """EMA factor 2**-shift nearest 2 / (span + 1)."""
        return int(np.clip(round(math.log2(max(self.smoothing + 1, 2) / 2)), 0, 10))

    def check(self) -> "AnomalyMeta":
        if self.window < 2 or not 1 <= self.warmup < self.window:
            raise UserError(f"anomaly: need window >= 2 and 1 <= warmup < window (got {self.window}, {self.warmup})")
        if self.smoothing < 1 or not 0 < self.quantile <= 1 or self.margin <= 0 or self.headroom < 1:
            raise UserError("anomaly: smoothing >= 1, 0 < quantile <= 1, margin > 0 and headroom >= 1 are needed")
        return self


def is_normal(label) -> bool:
    return str(label).strip().lower() in NORMAL_NAMES


# ---- data: normal recordings only -------------------------------------------------------

def _runs(x: np.ndarray, labels) -> list[np.ndarray]:
    """The stretches of a recording labelled normal (all of it without labels):
    an anomalous sample never reaches training, and no window spans a gap."""
    if labels is None:
        return [x]
    normal = np.array([is_normal(v) for v in labels])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], normal.astype(np.int8), [0]])))
    return [x[a:b] for a, b in zip(edges[::2], edges[1::2])]


def normal_streams(path, rate_hz: float = 50.0) -> tuple[list[np.ndarray], float]:
    """Normal samples [N, C] per stretch, from a CSV / recording .npz, a folder of
    them, or a DATA .npz (its class-0 windows, train and test); and the sample
    rate (from the recordings' time column where they have one)."""
    from .. import recording

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".npz"))
        if not files:
            raise UserError(f"{path}: no .csv or .npz recordings in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{path}: data not found")
    streams: list[np.ndarray] = []
    for f in files:
        if f.suffix == ".npz" and _is_dataset(f):
            streams += _dataset_streams(f)
            continue
        rec = recording.load(f, rate_hz)
        rate_hz = sample_rate(rec.t, rate_hz)
        streams += _runs(rec.x, rec.labels)
    streams = [s for s in streams if len(s)]
    if not streams:
        raise UserError(f"{path}: no normal samples (label 0 / normal) to learn from")
    channels = {s.shape[1] for s in streams}
    if len(channels) != 1:
        raise UserError(f"{path}: recordings differ in channel count ({sorted(channels)})")
    return streams, rate_hz


def sample_rate(t: np.ndarray, default: float) -> float:
    """Samples per second from a time column, else the default: over the whole
    recording, so float32 times (coarse late in a long recording) still give it."""
    t = np.asarray(t, np.float64)
    if len(t) < 2 or not t[-1] > t[0]:
        return default
    return float(round((len(t) - 1) / (t[-1] - t[0]), 3))


# ---- the spectral front-end for vibration (edge_agent/reference/frontend.py) -------------

FRONTEND_BANDS = 20


def choose_frontend(setting: str, rate_hz: float):
    """log bands from the sample rate (auto: from 1 kHz up), or None for raw samples."""
    from ..reference.frontend import FrontendParams

    if setting == "none" or (setting == "auto" and rate_hz < 1000):
        return None
    rate = int(round(rate_hz))
    frame = 512 if rate <= 4000 else 1024
    return FrontendParams(kind="log", rate_hz=rate, frame=frame, hop=frame // 4, bands=FRONTEND_BANDS,
                          f_lo=max(10.0, 2 * rate / frame), f_hi=rate / 2).build()


def frontend_for(settings, rate_hz: float):
    """config.yaml's frontend: auto is log bands for recordings at 1 kHz or more
    (vibration), none below; another kind is built as configured."""
    fs = getattr(settings, "frontend", None)
    kind = getattr(fs, "kind", "auto")
    if kind in ("auto", "none"):
        return choose_frontend(kind, rate_hz)
    from ..reference.frontend import FrontendParams

    return FrontendParams(kind, fs.rate_hz, fs.frame, fs.hop, fs.bands, fs.f_lo, fs.f_hi, fs.floor).build()


def frontend_samples(x: np.ndarray) -> np.ndarray:
    """A front-end takes one stream: the channels' sum in sensor counts, as
    device/main.py feeds it (an accelerometer's three axes in one spectrum)."""
    return np.clip(np.floor(np.asarray(x, np.float64).sum(axis=1) + 0.5), -32768, 32767).astype(np.int64)


def sensor_frames(x: np.ndarray, frontend) -> tuple[np.ndarray, np.ndarray]:
    """(the model's input steps [F, C] as floats, the sample index each completes
    at): the samples themselves, or the front-end's int16 features per frame."""
    x = np.asarray(x, np.float64)
    if frontend is None:
        return x, np.arange(len(x))
    from ..reference.frontend import frame_sample_index, run

    feats = run(frontend_samples(x), frontend).astype(np.float64)
    return feats, frame_sample_index(len(feats), frontend)


def frontend_to_array(frontend) -> np.ndarray:
    return np.zeros(0, np.float64) if frontend is None else np.array(frontend.ints(), np.float64)


def frontend_from_array(values: np.ndarray):
    from ..reference.frontend import KINDS, FrontendParams

    if len(values) == 0:
        return None
    version, kind, rate, frame, hop, bands, f_lo, f_hi, floor = (int(v) for v in values)
    names = {code: name for name, code in KINDS.items()}
    if kind not in names:
        raise UserError(f"front-end kind {kind} is unknown")
    return FrontendParams(names[kind], rate, frame, hop, bands, float(f_lo), float(f_hi), floor).build()


def _is_dataset(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return "X_train" in z.files
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz ({exc})") from None


def _dataset_streams(path: Path) -> list[np.ndarray]:
    from ..dataset import load

    data = load(path)
    return [w for split in (data.train, data.test) for w in split.x[split.y == 0].astype(np.float64)]


def split_held_back(streams: list[np.ndarray], fraction: float = HELD_BACK):
    """(train, held back): the last `fraction` of each stream is held back; with
    many short streams (windows), the last `fraction` of the streams."""
    if len(streams) >= 10:
        cut = max(1, int(round(len(streams) * (1 - fraction))))
        return streams[:cut], streams[cut:]
    train, held = [], []
    for s in streams:
        cut = int(round(len(s) * (1 - fraction)))
        train.append(s[:cut])
        held.append(s[cut:])
    return train, held


def default_meta(streams: list[np.ndarray], **overrides) -> AnomalyMeta:
    """Window, warm-up and smoothing from the data: 64 steps, or what the
    shortest stretch allows; warm-up an eighth of it; smoothing one window."""
    shortest = min(len(s) for s in streams)
    window = overrides.pop("window", None) or int(np.clip(shortest - 1, 4, 64))
    warmup = overrides.pop("warmup", None) or max(1, window // 8)
    smoothing = overrides.pop("smoothing", None) or window
    given = {k: v for k, v in overrides.items() if v is not None}
    return AnomalyMeta(window=window, warmup=warmup, smoothing=smoothing, **given).check()


def training_windows(streams: list[np.ndarray], window: int, seed: int = 0, limit: int = MAX_WINDOWS) -> np.ndarray:
    """[n, window + 1, C]: inputs are [:, :-1], next-frame targets [:, 1:]."""
    span = window + 1
    hop = max(1, window // 4)
    out = [s[a:a + span] for s in streams for a in range(0, len(s) - span + 1, hop)]
    if not out:
        raise UserError(f"the normal data is shorter than one training window ({span} steps)")
    x = np.stack(out)
    if len(x) > limit:
        x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])]
    return x


# ---- the float model ------------------------------------------------------------------------

def float_predictions(model: FloatModel, x: np.ndarray, window: int, batch: int = 2048) -> np.ndarray:
    """pred [N, C] in sensor units: the head after step t, state reset every `window`
    (windows `batch` at a time: hours of raw samples fit in memory)."""
    x = np.asarray(x, dtype=np.float64)
    n, channels = x.shape
    pad = -n % window
    windows = ((np.concatenate([x, np.zeros((pad, channels))]) - model.mean) / model.std).reshape(-1, window, channels)
    out = []
    for first in range(0, len(windows), batch):
        seq = windows[first:first + batch]
        lengths = full_lengths(len(seq), window, None)
        for layer in model.layers:
            seq, _, _ = _lstm_layer(layer, seq, lengths)
        out.append(seq.reshape(-1, model.hidden) @ model.head_w.T + model.head_b)
    return np.concatenate(out)[:n] * model.std + model.mean


def train_anomaly(streams: list[np.ndarray], meta: AnomalyMeta, hidden: int = 32, layers: int = 1,
                  epochs: int | None = None, seed: int = 0, lr: float = 1e-2, batch: int = 32,
                  progress=None) -> tuple[FloatModel, dict]:
    """A next-frame predictor fit to normal streams (the held-back part excluded
    by the caller). Returns the model and the loss history."""
    from .train import Adam, FloatHooks, _layer_backward, _layer_forward, clip_global, init_model, params_of, set_params

    rng = np.random.default_rng(seed)
    data = training_windows(streams, meta.window, seed)
    channels = data.shape[2]
    model = init_model(channels, hidden, layers, channels, rng)
    flat = np.concatenate(streams)
    model.mean, model.std = flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6)
    model.class_names = None
    norm = ((data - model.mean) / model.std).astype(np.float32)
    xs, target = norm[:, :-1], norm[:, 1:]
    steps = meta.window
    loss_mask = (np.arange(steps) >= meta.warmup - 1).astype(np.float32)  # which predictions count
    mask = np.ones((batch, steps), np.float32)
    if epochs is None:  # about 1500 optimizer steps
        epochs = int(np.clip(math.ceil(1500 / max(1, math.ceil(len(xs) / batch))), 5, 300))
    params = {k: v.astype(np.float32) for k, v in params_of(model).items()}
    opt = Adam(params, lr)
    hooks = FloatHooks()
    history = []
    count = float(loss_mask.sum() * channels)
    for epoch in range(epochs):
        opt.lr = lr * (1 / 64) ** (epoch / max(1, epochs))  # exponential decay to lr / 64
        order = rng.permutation(len(xs))
        total = 0.0
        for start in range(0, len(order), batch):
            b = order[start:start + batch]
            seq, m = xs[b], mask[:len(b)]
            inputs, caches = [], []
            for k in range(layers):
                bias = params[f"lstm.bias_ih_l{k}"] + params[f"lstm.bias_hh_l{k}"]
                inputs.append(seq)
                seq, cache = _layer_forward(params[f"lstm.weight_ih_l{k}"], params[f"lstm.weight_hh_l{k}"],
                                            bias, seq, m, hooks, k)
                caches.append(cache)
            pred = seq @ params["head.weight"].T + params["head.bias"]
            err = (pred - target[b]) * loss_mask[None, :, None]
            loss = float((err * err).sum() / (count * len(b)))
            dpred = (2.0 / (count * len(b))) * err
            grads = {"head.weight": dpred.reshape(-1, channels).T @ seq.reshape(-1, hidden),
                     "head.bias": dpred.sum(axis=(0, 1))}
            dhs = (dpred @ params["head.weight"]).astype(np.float32)
            for k in reversed(range(layers)):
                dwx, dwh, db, dxs = _layer_backward(params[f"lstm.weight_ih_l{k}"], params[f"lstm.weight_hh_l{k}"],
                                                    inputs[k], m, caches[k], dhs)
                grads[f"lstm.weight_ih_l{k}"], grads[f"lstm.weight_hh_l{k}"] = dwx, dwh
                grads[f"lstm.bias_ih_l{k}"] = grads[f"lstm.bias_hh_l{k}"] = db
                dhs = dxs.astype(np.float32)
            clip_global(grads, 1.0)
            opt.step(params, {k: v.astype(np.float32) for k, v in grads.items()})
            total += loss * len(b)
        record = {"epoch": epoch + 1, "epochs": epochs, "loss": total / len(xs)}
        history.append(record)
        if progress:
            progress(record)
    set_params(model, {k: v.astype(np.float64) for k, v in params.items()})
    return model, {"history": history, "windows": len(xs), "epochs": epochs}


# ---- on disk: the float model's .npz plus the meta ----------------------------------------

META_KEY = "anomaly_meta"  # float64 [6]: window, warmup, smoothing, quantile, margin, headroom
META_FIELDS = ("window", "warmup", "smoothing", "quantile", "margin", "headroom")
FRONTEND_KEY = "anomaly_frontend"  # the front-end's FEPR integers, or empty for raw samples


def save(model: FloatModel, meta: AnomalyMeta, path, frontend=None) -> None:
    if str(path).endswith((".pt", ".pth")):
        raise UserError("an anomaly model is saved as .npz (it carries its window and smoothing)")
    arrays = {k: v.astype(np.float32) for k, v in model.arrays().items()}
    arrays[META_KEY] = np.array([asdict(meta)[f] for f in META_FIELDS], np.float64)
    arrays[FRONTEND_KEY] = frontend_to_array(frontend)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_meta(path):
    """(meta, front-end or None) of an anomaly .npz, or None for a classifier (or a .pt)."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                return None
            values = z[META_KEY]
            fe_values = z[FRONTEND_KEY] if FRONTEND_KEY in z.files else np.zeros(0)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # EOFError: a 0-byte file
        raise UserError(f"{path}: not a readable .npz model ({exc})") from None
    if values.shape != (len(META_FIELDS),) or not np.all(np.isfinite(values)):
        raise UserError(f"{path}: {META_KEY} must be {len(META_FIELDS)} finite numbers")
    d = dict(zip(META_FIELDS, values.tolist()))
    for k in ("window", "warmup", "smoothing"):
        d[k] = int(d[k])
    try:
        frontend = frontend_from_array(fe_values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: {FRONTEND_KEY}: {exc}") from None
    return AnomalyMeta(**d).check(), frontend


def load(path):
    """(model, meta, front-end) of an anomaly model; a classifier's file is refused with one line."""
    found = read_meta(path)
    model = load_model(path)
    if found is None:
        raise UserError(f"{path}: this is a classifier model; an anomaly model (train --task anomaly) is expected")
    if model.n_classes != model.n_inputs:
        raise UserError(f"{path}: the anomaly head predicts {model.n_classes} values for {model.n_inputs} inputs")
    return (model, *found)


# ---- from a path to a trained model (the CLI's train --task anomaly) ----------------------

def train_from_data(path, settings, hidden: int = 32, layers: int = 1, epochs: int | None = None,
                    seed: int = 0, progress=None):
    """Normal recordings -> (model, meta, front-end, report). Only samples labelled
    normal are read; the last HELD_BACK of them is left for the threshold."""
    streams, rate = normal_streams(path, settings.sensor.rate_hz)
    frontend = frontend_for(settings, rate)
    frames = [sensor_frames(s, frontend)[0] for s in streams]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise UserError(f"{path}: the normal data is shorter than one front-end frame")
    train_part, held = split_held_back(frames)
    a = settings.anomaly
    meta = default_meta(train_part, window=a.window, warmup=a.warmup, smoothing=a.smoothing,
                        quantile=a.quantile, margin=a.margin, headroom=a.headroom)
    model, report = train_anomaly(train_part, meta, hidden, layers, epochs, seed, progress=progress)
    report.update(rate_hz=rate, steps=int(sum(len(f) for f in train_part)),
                  held_back=int(sum(len(f) for f in held)))
    return model, meta, frontend, report
