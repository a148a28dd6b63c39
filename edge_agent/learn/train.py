"""Training in numpy: a stacked LSTM + dense head by BPTT with Adam, and
quantization-aware fine-tuning (QAT) through the PTQ path's own quantizers.

The forward pass takes hooks (FloatHooks: exact float; FakeQuant: the int8
model's grids) so float training and QAT share one implementation; QAT uses
straight-through gradients (rounding and clamping pass the gradient unchanged).
Float training runs in float32, as PyTorch does, and its time loops (forward
and backward through time) are C (_bptt.c); QAT's grids run in numpy.

The defaults are the recipe measured on small real data sets
(bench/small_data.py): a budget of optimizer steps rather than a fixed epoch
count (20 epochs of one batch each was far too little for 40 windows), Adam at
1e-2 decaying exponentially to 1/64 of it, batch 32, forget-gate bias +1,
every window trained on (no early stopping on a validation split of a handful
of windows), and Gaussian input noise of 4 int8 input steps: the float model
then keeps its decisions under the int8 inputs' rounding on long windows,
where without it PTQ lost up to 23% of them (bench/long_windows.py), while
small-data accuracy stays beside PyTorch's (bench/small_data.py). A
validation split with early stopping and, optionally, a refit on all windows
for the epochs it chose are flags; both measured worse there.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..quant import lut
from ..quant.ptq import H_SCALE, quantize, row_quant
from .model import FloatModel, LSTMLayer, valid_steps


STEP_BUDGET = 1200  # optimizer steps that the default epoch count aims for
EPOCH_RANGE = (20, 600)
DECAY = 64.0  # the learning rate falls exponentially to lr / DECAY over the planned epochs


# the recipe for audio (a WAV folder through a spectral front-end), measured on the
# espeak-ng keyword corpus (bench/keywords.py): what `edge-agent train` uses there
# for the flags not given. Weight decay (AdamW) is the largest gain on voices
# training never heard. Validation accuracy over seeds 0, 1, 2: 0.902, 0.903, 0.907
# with 0.05 and 60 epochs, against 0.908, 0.881, 0.878 with 0.02 and 40 epochs, and
# 0.866, 0.884 (seeds 0, 1) without it; 0.910, 0.913, 0.912 with 0.05 once the
# corpus drew keywords.HARD_UNKNOWN three times as often. Frequency shifts, random
# equaliser curves, wider voice perturbation in the corpus, more clips, weight
# averaging, distilling an ensemble, other learning rates, masks, label smoothing
# and 90 epochs stayed inside the seed-to-seed spread (issue 13).
AUDIO_RECIPE = {"hidden": 64, "epochs": 60, "label_smoothing": 0.1, "time_mask": 10, "channel_mask": 6, "tilt": 0.0,
                "class_weights": False, "input_noise": 0.0, "weight_decay": 0.05}


@dataclass
class TrainConfig:
    hidden: int = 32
    layers: int = 1
    epochs: int | None = None  # None: resolve_epochs() (about STEP_BUDGET steps)
    batch: int = 32
    lr: float = 1e-2
    clip: float = 1.0  # global gradient norm
    weight_decay: float = 0.0  # decoupled (AdamW)
    val_fraction: float = 0.0  # > 0: hold out a stratified split, stop early, restore the best
    patience: int | None = None  # epochs without a better validation loss; None: epochs // 5
    refit: bool = False  # with a validation split: retrain on every window for the epochs it chose
    forget_bias: float = 1.0  # added to the forget gate's initial bias: remember by default
    seed: int = 0
    class_weights: bool = True
    qat_epochs: int = 5
    qat_lr: float = 1e-3
    dtype: str = "float32"  # float64 for gradient checks and the lockstep comparison
    label_smoothing: float = 0.0  # targets (1 - e) on the label, e spread over the classes
    time_mask: int = 0  # SpecAugment-style: per window, up to this many steps set to the mean (0: off)
    channel_mask: int = 0  # ... and up to this many adjacent channels (bands)
    tilt: float = 0.0  # per window, add a line across the channels from -a to a, a in [-tilt, tilt]
    input_noise: float = 4.0  # Gaussian noise on every input, sd in int8 input steps (channel range / 255)


def resolve_epochs(cfg: TrainConfig, n_train: int) -> int:
    """cfg.epochs, or enough epochs for about STEP_BUDGET optimizer steps: 600
    epochs on 40 windows, 38 on 1,000 (what small data needs, not a fixed count)."""
    if cfg.epochs is not None:
        return cfg.epochs
    steps = max(1, math.ceil(n_train / cfg.batch))
    return int(np.clip(math.ceil(STEP_BUDGET / steps), *EPOCH_RANGE))


def planned_epochs(cfg: TrainConfig, y, qat: bool = False) -> int:
    """The most epochs train() will run (for a progress bar): the float run,
    its refit, and QAT's (with its refit)."""
    n_fit = len(y) - _val_count(y, cfg.val_fraction)
    twice = 2 if cfg.refit and cfg.val_fraction > 0 else 1
    return twice * (resolve_epochs(cfg, n_fit) + (cfg.qat_epochs if qat else 0))


def _val_count(y, fraction: float) -> int:
    return len(_split(np.asarray(y), fraction, np.random.default_rng(0))[1]) if fraction > 0 else 0


def check_config(cfg: TrainConfig) -> None:
    """One clear line for a setting that cannot train."""
    if not 1 <= cfg.layers <= 3:
        raise UserError("--layers must be 1, 2 or 3")
    if cfg.hidden < 1 or (cfg.epochs is not None and cfg.epochs < 0):
        raise UserError("--hidden must be >= 1 and --epochs >= 0")
    if cfg.batch < 1:
        raise UserError("--batch-size must be >= 1")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)) or not (cfg.qat_lr > 0 and math.isfinite(cfg.qat_lr)):
        raise UserError("--lr must be a positive number")
    if not 0 <= cfg.val_fraction < 1:
        raise UserError("--val-fraction must be in [0, 1)")
    if cfg.patience is not None and cfg.patience < 1:
        raise UserError("--patience must be >= 1")
    if not 0 <= cfg.weight_decay < 1:
        raise UserError("--weight-decay must be in [0, 1)")
    if cfg.qat_epochs < 0:
        raise UserError("--qat-epochs must be >= 0")
    if cfg.dtype not in ("float32", "float64"):
        raise UserError("dtype must be float32 or float64")
    if not 0 <= cfg.label_smoothing < 1:
        raise UserError("--label-smoothing must be in [0, 1)")
    if cfg.time_mask < 0 or cfg.channel_mask < 0 or not cfg.tilt >= 0:
        raise UserError("--time-mask, --channel-mask and --tilt must be >= 0")
    if not (0 <= cfg.input_noise <= 255):
        raise UserError(f"--input-noise must be in [0, 255] int8 steps, not {cfg.input_noise}")


# ---- hooks: float, or the int8 model's grids ---------------------------------------

class FloatHooks:
    def x(self, x):
        return x

    def weights(self, model: FloatModel, params: dict) -> dict:
        return params

    def z(self, z):
        return z

    def sigmoid(self, z):
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def tanh(self, z):
        return np.tanh(z)

    def cell(self, c, k):
        return c

    def hidden(self, h):
        return h


class FakeQuant(FloatHooks):
    """The integer model's arithmetic grids in float, from a PTQ QuantModel of the
    current weights: int8 inputs per channel, int8 per-row weights (PTQ's own
    row_quant on the same folded matrices), Q3.12 gates, the sigmoid/tanh
    tables, the calibrated int16 cell format, int8 h."""

    def __init__(self, model: FloatModel, calib: np.ndarray, lengths=None):
        self.qm = quantize(model, calib, lengths)
        self.scale = self.qm.inputs.scale.astype(np.float64)
        self.zero = self.qm.inputs.zero.astype(np.float64)
        self.c_frac = [layer.c_frac for layer in self.qm.layers]
        self.sig_full = lut.lookup(self.qm.sigmoid, np.arange(-32768, 32768)) / 32768.0
        self.tanh_full = lut.lookup(self.qm.tanh, np.arange(-32768, 32768)) / 32768.0
        self.model = model

    def x(self, x):
        q = np.clip(np.round(x / self.scale) + self.zero, -128, 127)
        return (q - self.zero) * self.scale

    def weights(self, model: FloatModel, params: dict) -> dict:
        out = dict(params)
        for k in range(len(model.layers)):
            w_ih, b = params[f"lstm.weight_ih_l{k}"], params[f"lstm.bias_ih_l{k}"] + params[f"lstm.bias_hh_l{k}"]
            # layer 0 is quantized after folding the normalisation and the input scale in
            col = self.scale / model.std if k == 0 else np.full(w_ih.shape[1], H_SCALE)
            bias = (b - (w_ih / model.std) @ model.mean) if k == 0 else b
            q, s = row_quant(w_ih * col, bias)
            out[f"lstm.weight_ih_l{k}"] = q * s[:, None] / col
            q, s = row_quant(params[f"lstm.weight_hh_l{k}"] * H_SCALE)
            out[f"lstm.weight_hh_l{k}"] = q * s[:, None] / H_SCALE
        q, s = row_quant(params["head.weight"] * H_SCALE, params["head.bias"])
        out["head.weight"] = q * s[:, None] / H_SCALE
        return out

    def z(self, z):
        return np.clip(np.round(z * 4096), -32768, 32767) / 4096

    def sigmoid(self, z):
        idx = np.clip(np.round(z * 4096), -32768, 32767).astype(np.int64) + 32768
        return self.sig_full[idx]

    def tanh(self, z):
        idx = np.clip(np.round(z * 4096), -32768, 32767).astype(np.int64) + 32768
        return self.tanh_full[idx]

    def cell(self, c, k):
        step = 2.0 ** self.c_frac[k]
        return np.clip(np.round(c * step), -32768, 32767) / step

    def hidden(self, h):
        return np.clip(np.round(h * 128), -128, 127) / 128


# ---- the network -----------------------------------------------------------------------

def init_model(n_in: int, hidden: int, layers: int, n_cls: int, rng: np.random.Generator,
               forget_bias: float = 0.0) -> FloatModel:
    """PyTorch's default initialisation: U(-1/sqrt(H), 1/sqrt(H)) everywhere
    (plus forget_bias on the forget gate's input bias)."""
    bound = 1.0 / math.sqrt(hidden)
    u = lambda *shape: rng.uniform(-bound, bound, shape)
    lstm = [LSTMLayer(u(4 * hidden, n_in if k == 0 else hidden), u(4 * hidden, hidden),
                      u(4 * hidden), u(4 * hidden)) for k in range(layers)]
    for layer in lstm:
        layer.b_ih[hidden:2 * hidden] += forget_bias
    return FloatModel(lstm, u(n_cls, hidden), u(n_cls), np.zeros(n_in), np.ones(n_in))


def params_of(model: FloatModel) -> dict:
    return {k: v for k, v in model.arrays().items() if k not in ("mean", "std")}


def set_params(model: FloatModel, params: dict) -> None:
    for k, layer in enumerate(model.layers):
        layer.w_ih = params[f"lstm.weight_ih_l{k}"]
        layer.w_hh = params[f"lstm.weight_hh_l{k}"]
        layer.b_ih = params[f"lstm.bias_ih_l{k}"]
        layer.b_hh = params[f"lstm.bias_hh_l{k}"]
    model.head_w, model.head_b = params["head.weight"], params["head.bias"]


try:
    from . import _bptt
except ImportError:  # a source tree without `pip install`: the numpy loops below do the same
    _bptt = None


def _compiled(H: int, *arrays) -> bool:
    """The C loops take operands of one float type (float32 or float64)."""
    return (_bptt is not None and H <= _bptt.MAX_H and len({a.dtype for a in arrays}) == 1
            and arrays[0].dtype in (np.float32, np.float64))


def _layer_forward(w_ih, w_hh, bias, xs, mask, hooks, k):
    n, steps, _ = xs.shape
    H = w_hh.shape[1]
    if type(hooks) is FloatHooks and _compiled(H, xs, w_ih, w_hh, mask):  # QAT's grids: numpy
        dt = xs.dtype
        # the transpose made contiguous: BLAS is ~10x slower on the strided one when n_in is small
        proj = xs.reshape(-1, xs.shape[2]) @ np.ascontiguousarray(w_ih.T)
        proj += bias.astype(dt)
        hs, c_prev, tcs = (np.empty((n, steps, H), dt) for _ in range(3))
        acts = np.empty((n, steps, 4 * H), dt)
        _bptt.forward(n, steps, H, dt.itemsize, proj, np.ascontiguousarray(w_hh.T),
                      np.ascontiguousarray(mask), hs, acts, c_prev, tcs)
        h_prev = np.concatenate([np.zeros((n, 1, H), dt), hs[:, :-1]], axis=1)
        return hs, (acts, c_prev, tcs, h_prev)
    dt = np.result_type(xs, w_hh)
    proj = xs @ w_ih.T + bias
    h, c = np.zeros((n, H), dt), np.zeros((n, H), dt)
    acts = np.empty((n, steps, 4 * H), dt)
    c_prev, tcs, h_prev, hs = (np.empty((n, steps, H), dt) for _ in range(4))
    for t in range(steps):
        z = hooks.z(proj[:, t] + h @ w_hh.T)
        a = np.concatenate([hooks.sigmoid(z[:, :2 * H]), hooks.tanh(z[:, 2 * H:3 * H]),
                            hooks.sigmoid(z[:, 3 * H:])], axis=1)
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_new = hooks.cell(f * c + i * g, k)
        tc = hooks.tanh(c_new)
        h_new = hooks.hidden(o * tc)
        m = mask[:, t, None]
        acts[:, t], c_prev[:, t], tcs[:, t], h_prev[:, t] = a, c, tc, h
        c = m * c_new + (1 - m) * c
        h = m * h_new + (1 - m) * h
        hs[:, t] = h
    return hs, (acts, c_prev, tcs, h_prev)


def _layer_backward(w_ih, w_hh, xs, mask, cache, dhs):
    acts, c_prev, tcs, h_prev = cache
    n, steps, _ = xs.shape
    H = w_hh.shape[1]
    if _compiled(H, acts, w_hh, mask, dhs):
        dz_all = np.empty((n, steps, 4 * H), acts.dtype)
        _bptt.backward(n, steps, H, acts.dtype.itemsize, np.ascontiguousarray(w_hh), np.ascontiguousarray(mask),
                       acts, c_prev, tcs, np.ascontiguousarray(dhs), dz_all)
    else:
        dz_all = _backward_steps(w_hh, mask, cache, dhs)
    flat = dz_all.reshape(-1, 4 * H)
    return (flat.T @ xs.reshape(-1, xs.shape[2]), flat.T @ h_prev.reshape(-1, H),
            flat.sum(axis=0), dz_all @ w_ih)


def _backward_steps(w_hh, mask, cache, dhs):
    """dz at every step, in numpy (as _bptt.backward)."""
    acts, c_prev, tcs, _ = cache
    n, steps, _ = acts.shape
    H = w_hh.shape[1]
    dz_all = np.empty((n, steps, 4 * H), acts.dtype)
    dh, dc = np.zeros((n, H), acts.dtype), np.zeros((n, H), acts.dtype)
    for t in reversed(range(steps)):
        dh = dh + dhs[:, t]
        m = mask[:, t, None]
        a = acts[:, t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        tc = tcs[:, t]
        dh_new, dc_new = m * dh, m * dc
        dc_new = dc_new + dh_new * o * (1 - tc * tc)
        dz = np.concatenate([dc_new * g * i * (1 - i), dc_new * c_prev[:, t] * f * (1 - f),
                             dc_new * i * (1 - g * g), dh_new * tc * o * (1 - o)], axis=1)
        dz_all[:, t] = dz
        dc = dc_new * f + (1 - m) * dc
        dh = dz @ w_hh + (1 - m) * dh
    return dz_all


def loss_and_grads(model: FloatModel, params: dict, x: np.ndarray, y: np.ndarray, mask: np.ndarray,
                   weights: np.ndarray, hooks: FloatHooks = FloatHooks(), need_grads: bool = True,
                   smoothing: float = 0.0):
    """Weighted cross-entropy of the logits at each window's last valid step, and
    its gradient for every parameter (through the hooks, straight through). With
    smoothing e, the target is 1 - e on the label plus e / K on every class."""
    used = hooks.weights(model, params)
    seq = (hooks.x(x) - model.mean) / model.std
    inputs, caches = [], []
    for k in range(len(model.layers)):
        bias = used[f"lstm.bias_ih_l{k}"] + used[f"lstm.bias_hh_l{k}"]
        inputs.append(seq)
        seq, cache = _layer_forward(used[f"lstm.weight_ih_l{k}"], used[f"lstm.weight_hh_l{k}"], bias,
                                    seq, mask, hooks, k)
        caches.append(cache)
    last = seq[:, -1]  # state is frozen after a window's length: this is its last valid step
    logits = last @ used["head.weight"].T + used["head.bias"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(shifted)
    prob /= prob.sum(axis=1, keepdims=True)
    w = weights[y]
    target = np.zeros_like(prob)
    target[np.arange(len(y)), y] = 1.0
    if smoothing:
        target = target * (1 - smoothing) + smoothing / prob.shape[1]
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # finite where prob underflows
    loss = float(-(w * (target * log_prob).sum(axis=1)).sum() / w.sum())
    if not need_grads:
        return loss, logits, None
    dlogits = prob - target
    dlogits *= (w / w.sum())[:, None]
    grads = {"head.weight": dlogits.T @ last, "head.bias": dlogits.sum(axis=0)}
    dhs = np.zeros_like(seq)
    dhs[:, -1] = dlogits @ used["head.weight"]
    for k in reversed(range(len(model.layers))):
        dwx, dwh, db, dxs = _layer_backward(used[f"lstm.weight_ih_l{k}"], used[f"lstm.weight_hh_l{k}"],
                                            inputs[k], mask, caches[k], dhs)
        grads[f"lstm.weight_ih_l{k}"], grads[f"lstm.weight_hh_l{k}"] = dwx, dwh
        grads[f"lstm.bias_ih_l{k}"] = grads[f"lstm.bias_hh_l{k}"] = db
        dhs = dxs
    return loss, logits, grads


# ---- optimisation ------------------------------------------------------------------------

class Adam:
    """Adam; with weight_decay, AdamW's decoupled decay (PyTorch's torch.optim.AdamW)."""

    def __init__(self, params: dict, lr: float, betas=(0.9, 0.999), eps=1e-8, weight_decay: float = 0.0):
        self.lr, (self.b1, self.b2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            if self.weight_decay:
                params[k] = params[k] * (1 - self.lr * self.weight_decay)
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] = params[k] - self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def clip_global(grads: dict, max_norm: float) -> None:
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    if norm > max_norm:
        for k in grads:
            grads[k] = grads[k] * (max_norm / norm)


def _split(y: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / validation indices."""
    train, val = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        cut = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        val += list(idx[:cut])
        train += list(idx[cut:])
    return np.sort(np.array(train, int)), np.sort(np.array(val, int))


def learning_rate(lr: float, epoch: int, epochs: int) -> float:
    """Exponential decay from lr to lr / DECAY over the planned epochs."""
    return lr * DECAY ** (-epoch / max(epochs, 1))


def fit(model: FloatModel, x, y, lengths, cfg: TrainConfig, epochs: int, lr: float, rng,
        hooks_for=None, progress=None, select=None, split=None) -> dict:
    """Adam (exponential learning-rate decay, global-norm clipping, optional
    weight decay); with a validation split (cfg.val_fraction, or split = (train,
    val) indices), early stopping after cfg.patience stale epochs and the best
    weights restored. select(model, val_idx) -> a score to maximise instead
    of the validation loss (QAT: the real int8 model's validation accuracy).
    Returns the history and, with validation, the best epoch (0: the start)."""
    n_cls = model.n_classes
    if split is None:
        split = _split(y, cfg.val_fraction, rng) if cfg.val_fraction > 0 else (np.arange(len(y)), [])
    train_idx, val_idx = split
    counts = np.bincount(y[train_idx], minlength=n_cls).astype(np.float64)
    weights = np.where(counts > 0, len(train_idx) / (n_cls * np.maximum(counts, 1)), 0.0) \
        if cfg.class_weights else np.ones(n_cls)
    weights = weights.astype(x.dtype)
    mask = valid_steps(len(y), x.shape[1], lengths).astype(x.dtype)
    noise_sd = input_noise_sd(x, mask, cfg.input_noise) if cfg.input_noise else None
    params = params_of(model)
    opt = Adam(params, lr, weight_decay=cfg.weight_decay)
    patience = cfg.patience if cfg.patience is not None else max(8, epochs // 5)

    def merit(loss: float) -> tuple:  # larger is better
        return (select(model, val_idx), -loss) if select else (-loss,)

    best = ((-math.inf,), {k: v.copy() for k, v in params.items()}, 0)
    if len(val_idx):  # the starting point competes too: fine-tuning never returns something worse
        start_loss, _, _ = loss_and_grads(model, params, x[val_idx], y[val_idx], mask[val_idx], weights,
                                          hooks_for(model) if hooks_for else FloatHooks(), need_grads=False)
        best = (merit(start_loss), best[1], 0)
    history, stale = [], 0
    for epoch in range(epochs):
        opt.lr = learning_rate(lr, epoch, epochs)
        hooks = hooks_for(model) if hooks_for else FloatHooks()
        order = train_idx[rng.permutation(len(train_idx))]
        total, correct = 0.0, 0
        for start in range(0, len(order), cfg.batch):
            b = order[start:start + cfg.batch]
            xb = spec_augment(x[b], model.mean, cfg, rng) if cfg.time_mask or cfg.channel_mask or cfg.tilt \
                else x[b]
            if noise_sd is not None:
                xb = xb + rng.standard_normal(xb.shape, dtype=xb.dtype) * noise_sd
            loss, logits, grads = loss_and_grads(model, params, xb, y[b], mask[b], weights, hooks,
                                                 smoothing=cfg.label_smoothing)
            clip_global(grads, cfg.clip)
            opt.step(params, grads)
            set_params(model, params)
            total += loss * len(b)
            correct += int((logits.argmax(1) == y[b]).sum())
        record = {"epoch": epoch + 1, "loss": total / len(order), "acc": correct / len(order)}
        if len(val_idx):
            v_loss, v_logits, _ = loss_and_grads(model, params, x[val_idx], y[val_idx], mask[val_idx],
                                                 weights, hooks, need_grads=False)
            record.update(val_loss=v_loss, val_acc=float((v_logits.argmax(1) == y[val_idx]).mean()))
            score = merit(v_loss)
            if score > best[0]:
                best, stale = (score, {k: v.copy() for k, v in params.items()}, epoch + 1), 0
            else:
                stale += 1
        history.append(record)
        if progress:
            progress(record)
        if len(val_idx) and stale >= patience:
            break
    if len(val_idx):
        set_params(model, best[1])  # restore the best validation weights
    return {"history": history, "best": list(best[0]) if len(val_idx) else None,
            "best_epoch": best[2] if len(val_idx) else len(history)}


def input_noise_sd(x: np.ndarray, mask: np.ndarray, steps: float) -> np.ndarray:
    """Per channel, `steps` int8 input steps as min/max calibration draws them
    (the channel's range over the valid steps / 255), in x's units and dtype.
    Training through noise of a few steps teaches the float model not to hinge
    on differences finer than the int8 inputs keep: over a long window such
    differences grow, and the integer model's decisions leave the float
    model's (bench/long_windows.py)."""
    valid = x[mask.astype(bool)]
    return (steps * (valid.max(0) - valid.min(0)) / 255).astype(x.dtype)


def spec_augment(x: np.ndarray, fill: np.ndarray, cfg: TrainConfig, rng) -> np.ndarray:
    """SpecAugment-style masking of a batch [n, T, C]: per window, one stretch of
    0..cfg.time_mask steps and one of 0..cfg.channel_mask adjacent channels set to
    `fill` (the channel means: zero after the model's normalisation); with
    cfg.tilt, first a random tilt across the channels (a spectral slope: another
    microphone, room or vocal tract; for log band energies, a line in dB)."""
    x = x.copy()
    n, steps, channels = x.shape
    fill = np.asarray(fill, x.dtype)
    if cfg.tilt:
        slope = rng.uniform(-cfg.tilt, cfg.tilt, (n, 1, 1)) * np.linspace(-1, 1, channels)
        x += slope.astype(x.dtype)
    for i in range(n):
        if cfg.time_mask:
            width = int(rng.integers(0, min(cfg.time_mask, steps) + 1))
            at = int(rng.integers(0, steps - width + 1))
            x[i, at:at + width] = fill
        if cfg.channel_mask:
            width = int(rng.integers(0, min(cfg.channel_mask, channels) + 1))
            at = int(rng.integers(0, channels - width + 1))
            x[i, :, at:at + width] = fill[at:at + width]
    return x


def int8_accuracy(model: FloatModel, calib, calib_len, x, y, lengths=None) -> float:
    """Accuracy of the blob quantize() makes of `model`, run by the integer reference."""
    from ..evaluate import int_logits

    qm = quantize(model, calib, calib_len)
    return float(np.mean(int_logits(qm, x, lengths).argmax(1) == y))


def qat_fit(model: FloatModel, x, y, lengths, cfg: TrainConfig, rng, calib, calib_len=None, progress=None) -> dict:
    """Fine-tune through FakeQuant; with a validation split, keep the epoch whose
    real int8 model is best on it (and with cfg.refit, fine-tune again on every
    window for that many epochs)."""
    def select(m, val_idx):
        return int8_accuracy(m, calib, calib_len, x[val_idx], y[val_idx],
                             None if lengths is None else np.asarray(lengths)[val_idx])

    def run(m, split=None, epochs=cfg.qat_epochs):
        return fit(m, x, y, lengths, cfg, epochs, cfg.qat_lr, rng,
                   hooks_for=lambda mm: FakeQuant(mm, calib, calib_len), progress=progress, select=select,
                   split=split)

    return _with_refit(model, cfg, run, len(y))


def _with_refit(model: FloatModel, cfg: TrainConfig, run, n: int) -> dict:
    """run(model) with a validation split; with cfg.refit, then run again from
    the same start on every window for the epochs validation chose (the whole
    learning-rate schedule fitted into them, so the refit ends at a low rate)."""
    if not (cfg.refit and cfg.val_fraction > 0):
        return run(model)
    start = copy.deepcopy(model)
    chosen = run(model)
    if chosen["best_epoch"] == 0:  # nothing beat the start on validation: keep it
        set_params(model, params_of(start))
        return {**chosen, "refit_epochs": 0}
    set_params(model, params_of(start))
    again = run(model, split=(np.arange(n), []), epochs=chosen["best_epoch"])
    return {**again, "selection": chosen, "refit_epochs": chosen["best_epoch"]}


def train(x: np.ndarray, y: np.ndarray, lengths=None, cfg: TrainConfig = TrainConfig(),
          class_names=None, qat: bool = False, progress=None) -> tuple[FloatModel, dict]:
    """A float model trained on raw windows x [n, T, C]; with qat, then fine-tuned
    through the int8 grids so the blob quantize() makes is the model trained."""
    check_config(cfg)
    dt = np.dtype(cfg.dtype)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 3 or len(x) != len(y) or len(x) < 2:
        raise UserError(f"training data: X has shape {x.shape}, y {y.shape}; need [n>=2, T, C] and [n]")
    rng = np.random.default_rng(cfg.seed)
    n_cls = int(y.max()) + 1 if class_names is None else len(class_names)
    model = init_model(x.shape[2], cfg.hidden, cfg.layers, n_cls, rng, cfg.forget_bias)
    mask = valid_steps(len(x), x.shape[1], lengths)
    valid = x[mask]
    model.mean, model.std = valid.mean(axis=0), np.maximum(valid.std(axis=0), 1e-6)
    model.class_names = list(class_names) if class_names is not None else None
    epochs = resolve_epochs(cfg, len(x) - _val_count(y, cfg.val_fraction))
    _cast(model, dt)
    with np.errstate(over="ignore"):
        xd = x.astype(dt)
    if not np.all(np.isfinite(xd)):  # checked after the cast: float64 1e300 is inf in float32
        raise UserError(f"training data: X holds NaN, infinite or {dt}-overflowing values")

    def run(m, split=None, epochs=epochs):
        return fit(m, xd, y, lengths, cfg, epochs, cfg.lr, rng, split=split,
                   progress=(lambda r: progress("train", r)) if progress else None)

    report = {"float": {**_with_refit(model, cfg, run, len(x)), "epochs": epochs}}
    if qat:
        calib_idx = rng.permutation(len(x))[:512]
        calib = x[calib_idx]
        calib_len = None if lengths is None else np.asarray(lengths)[calib_idx]
        _cast(model, np.float64)  # QAT's grids are PTQ's, computed in float64
        report["qat"] = qat_fit(model, x, y, lengths, cfg, rng, calib, calib_len,
                                progress=(lambda r: progress("qat", r)) if progress else None)
    _cast(model, np.float64)
    if not all(np.all(np.isfinite(v)) for v in model.arrays().values()):
        raise UserError("training diverged: the model holds NaN or infinite values (try a lower --lr)")
    return model, report


def _cast(model: FloatModel, dt) -> None:
    set_params(model, {k: v.astype(dt) for k, v in params_of(model).items()})
    model.mean, model.std = model.mean.astype(dt), model.std.astype(dt)
