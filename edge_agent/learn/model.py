"""The float model: stacked LSTM (PyTorch gate order i, f, g, o) plus a dense head.

Input normalisation (per-channel mean/std) is part of the model, so callers
always feed raw sensor values. Two on-disk forms load into it:

* the project's .npz: the PyTorch state_dict key names of
  ``nn.LSTM(batch_first=True)`` named ``lstm`` and ``nn.Linear`` named ``head``
  (``lstm.weight_ih_l0`` ... ``head.weight``, ``head.bias``) plus ``mean``,
  ``std`` and optional ``class_names``; see docs/format.md;
* a PyTorch checkpoint written by ``torch.save``: a bare state_dict, or a dict
  with ``state_dict`` and optional ``mean``/``std``.
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_open

GATES = ("i", "f", "g", "o")  # PyTorch's order of the four 4H row blocks


@dataclass
class LSTMLayer:
    w_ih: np.ndarray  # [4H, I]
    w_hh: np.ndarray  # [4H, H]
    b_ih: np.ndarray  # [4H]
    b_hh: np.ndarray  # [4H]


@dataclass
class Trace:
    """Per-layer float internals of a forward pass, for calibration and reports."""

    gates: list[np.ndarray] = field(default_factory=list)  # [n, T, 4H] pre-activations
    cell: list[np.ndarray] = field(default_factory=list)  # [n, T, H]
    hidden: list[np.ndarray] = field(default_factory=list)  # [n, T, H]


@dataclass
class FloatModel:
    layers: list[LSTMLayer]
    head_w: np.ndarray  # [K, H]
    head_b: np.ndarray  # [K]
    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]
    class_names: list[str] | None = None

    @property
    def n_inputs(self) -> int:
        return self.layers[0].w_ih.shape[1]

    @property
    def hidden(self) -> int:
        return self.layers[0].w_hh.shape[1]

    @property
    def n_classes(self) -> int:
        return self.head_w.shape[0]

    def labels(self) -> list[str]:
        return self.class_names or [str(k) for k in range(self.n_classes)]

    def validate(self) -> "FloatModel":
        if not 1 <= len(self.layers) <= 3:
            raise UserError(f"model has {len(self.layers)} LSTM layers; 1 to 3 are supported")
        if self.hidden < 1 or self.n_classes < 1 or self.n_inputs < 1:
            raise UserError(f"model has hidden {self.hidden}, {self.n_classes} classes and {self.n_inputs} "
                            "inputs; each must be at least 1")
        h = self.hidden
        n_in = self.n_inputs
        for k, layer in enumerate(self.layers):
            want = {
                "weight_ih": (4 * h, n_in if k == 0 else h),
                "weight_hh": (4 * h, h),
                "bias_ih": (4 * h,),
                "bias_hh": (4 * h,),
            }
            got = {
                "weight_ih": layer.w_ih.shape,
                "weight_hh": layer.w_hh.shape,
                "bias_ih": layer.b_ih.shape,
                "bias_hh": layer.b_hh.shape,
            }
            for name, shape in want.items():
                if tuple(got[name]) != shape:
                    raise UserError(f"lstm.{name}_l{k} has shape {tuple(got[name])}, expected {shape}")
        if self.head_w.ndim != 2 or self.head_w.shape[1] != h:
            raise UserError(f"head weight has shape {self.head_w.shape}, expected [classes, {h}]")
        if self.head_b.shape != (self.n_classes,):
            raise UserError(f"head bias has shape {self.head_b.shape}, expected ({self.n_classes},)")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.shape != (n_in,):
                raise UserError(f"{name} has shape {v.shape}, expected ({n_in},): one per input channel")
        if not np.all(self.std > 0):
            raise UserError("std must be positive for every input channel")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise UserError(f"{len(self.class_names)} class names for {self.n_classes} classes")
        if self.class_names is not None and any(not n or "\n" in n or len(n) > 64 for n in self.class_names):
            raise UserError("class names must be 1 to 64 characters on one line each")
        for arr in self.arrays().values():
            if not np.all(np.isfinite(arr)):
                raise UserError("model holds NaN or infinite values")
        return self

    # ---- forward -----------------------------------------------------------------

    def forward(self, x: np.ndarray, lengths: np.ndarray | None = None,
                trace: Trace | None = None) -> np.ndarray:
        """Logits [n, K] from raw windows x [n, T, C] at each window's last valid step."""
        x = np.asarray(x, dtype=np.float64)
        n, steps, _ = x.shape
        seq = (x - self.mean) / self.std
        lengths = full_lengths(n, steps, lengths)
        for layer in self.layers:
            seq, gates, cells = _lstm_layer(layer, seq, lengths)
            if trace is not None:
                trace.gates.append(gates)
                trace.cell.append(cells)
                trace.hidden.append(seq)
        last = seq[np.arange(n), lengths - 1]
        return last @ self.head_w.T + self.head_b

    # ---- saving ------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k, layer in enumerate(self.layers):
            out[f"lstm.weight_ih_l{k}"] = layer.w_ih
            out[f"lstm.weight_hh_l{k}"] = layer.w_hh
            out[f"lstm.bias_ih_l{k}"] = layer.b_ih
            out[f"lstm.bias_hh_l{k}"] = layer.b_hh
        out["head.weight"] = self.head_w
        out["head.bias"] = self.head_b
        out["mean"] = self.mean
        out["std"] = self.std
        return out

    def fingerprint(self) -> bytes:
        """8 bytes identifying the weights (as float32), whatever file they came from."""
        digest = hashlib.sha256()
        for name, value in self.arrays().items():
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value, dtype="<f4").tobytes())
        return digest.digest()[:8]

    def save_npz(self, path: str | Path) -> None:
        arrays = {k: v.astype(np.float32) for k, v in self.arrays().items()}
        if self.class_names:
            arrays["class_names"] = np.array(self.class_names)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)


def full_lengths(n: int, steps: int, lengths) -> np.ndarray:
    if lengths is None:
        return np.full(n, steps, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (n,) or lengths.min(initial=1) < 1 or lengths.max(initial=1) > steps:
        raise UserError(f"lengths must be {n} values in 1..{steps}")
    return lengths


def valid_steps(n: int, steps: int, lengths) -> np.ndarray:
    """bool [n, steps]: True at each window's valid timesteps (before its length)."""
    return np.arange(steps)[None, :] < full_lengths(n, steps, lengths)[:, None]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # no overflow for large |v|


def _lstm_layer(layer: LSTMLayer, seq: np.ndarray, lengths: np.ndarray):
    n, steps, _ = seq.shape
    hidden = layer.w_hh.shape[1]
    proj = seq @ layer.w_ih.T + (layer.b_ih + layer.b_hh)  # [n, T, 4H], all steps at once
    h = np.zeros((n, hidden))
    c = np.zeros((n, hidden))
    out_h = np.zeros((n, steps, hidden))
    out_c = np.zeros((n, steps, hidden))
    gates_all = np.zeros((n, steps, 4 * hidden))
    w_hh_t = layer.w_hh.T
    for t in range(steps):
        z = proj[:, t] + h @ w_hh_t
        gates_all[:, t] = z
        i, f, g, o = np.split(z, 4, axis=1)
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h_new = _sigmoid(o) * np.tanh(c_new)
        live = (t < lengths)[:, None]  # past a window's length its state is frozen
        c = np.where(live, c_new, c)
        h = np.where(live, h_new, h)
        out_h[:, t] = h
        out_c[:, t] = c
    return out_h, gates_all, out_c


# ---- loading ---------------------------------------------------------------------

_LSTM_KEY = re.compile(r"^(?P<prefix>.*?)(?P<name>weight_ih|weight_hh|bias_ih|bias_hh)_l(?P<k>\d+)(?P<rev>_reverse)?$")


def from_state_dict(state: dict[str, np.ndarray], mean=None, std=None,
                    class_names=None) -> FloatModel:
    """Find the LSTM by its tensor suffixes and the Linear head that follows it."""
    keys = list(state)
    found: dict[int, dict[str, np.ndarray]] = {}
    prefix = None
    last_lstm_pos = -1
    for pos, key in enumerate(keys):
        m = _LSTM_KEY.match(key)
        if not m:
            if key.endswith("weight_hr_l0"):
                raise UserError("LSTM with proj_size is not supported")
            continue
        if m["rev"]:
            raise UserError("bidirectional LSTM is not supported (a streaming cell runs forward only)")
        if prefix is None:
            prefix = m["prefix"]
        elif m["prefix"] != prefix:
            continue  # only the first LSTM module is the model
        value = np.asarray(state[key])
        if value.dtype.kind not in "biuf" or value.ndim != (1 if m["name"].startswith("bias") else 2):
            raise UserError(f"{key[:80]}: expected a real {'vector' if m['name'].startswith('bias') else 'matrix'}, "
                            f"got {value.dtype} of shape {value.shape}")
        found.setdefault(int(m["k"]), {})[m["name"]] = np.asarray(state[key], dtype=np.float64)
        last_lstm_pos = pos
    if not found:
        raise UserError("no LSTM tensors (weight_ih_l0, weight_hh_l0, ...) found in the model")
    layers = []
    for k in range(len(found)):
        parts = found.get(k, {})
        missing = [n for n in ("weight_ih", "weight_hh") if n not in parts]
        if missing:
            raise UserError(f"LSTM layer {k} lacks {', '.join(missing)}")
        rows = parts["weight_ih"].shape[0]
        layers.append(LSTMLayer(parts["weight_ih"], parts["weight_hh"],
                                parts.get("bias_ih", np.zeros(rows)),
                                parts.get("bias_hh", np.zeros(rows))))
    hidden = layers[0].w_hh.shape[1]
    head_w = head_b = None
    for key in keys[last_lstm_pos + 1:] + keys[:last_lstm_pos]:
        value = np.asarray(state[key])
        if key.endswith("weight") and value.ndim == 2 and value.shape[1] == hidden and value.dtype.kind in "biuf":
            head_w = value.astype(np.float64)
            bias_key = key[: -len("weight")] + "bias"
            head_b = (np.asarray(state[bias_key], dtype=np.float64) if bias_key in state
                      else np.zeros(value.shape[0]))
            break
    if head_w is None:
        raise UserError(f"no Linear head (weight [classes, {hidden}]) follows the LSTM")
    n_in = layers[0].w_ih.shape[1]
    mean = np.zeros(n_in) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.ones(n_in) if std is None else np.asarray(std, dtype=np.float64).reshape(-1)
    names = [str(s) for s in class_names] if class_names is not None else None
    return FloatModel(layers, head_w, head_b, mean, std, names).validate()


def load_npz(path: Path) -> FloatModel:
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz model ({str(exc)[:120]})") from None
    names = state.pop("class_names", None)
    mean = state.pop("mean", None)
    std = state.pop("std", None)
    return from_state_dict(state, mean, std, names.tolist() if names is not None else None)


def load_torch(path: Path) -> FloatModel:
    try:
        import torch
    except ImportError:
        raise UserError("loading a PyTorch checkpoint needs torch: pip install 'edge-agent[torch]'") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad or unsafe file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state_dict or a dict with 'state_dict'")
    mean = std = names = None
    if "state_dict" in obj:
        mean, std = obj.get("mean"), obj.get("std")
        names = obj.get("class_names")
        obj = obj["state_dict"]
    as_np = lambda t: t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t)
    state = {k: as_np(v) for k, v in obj.items() if hasattr(v, "shape")}
    return from_state_dict(state, None if mean is None else as_np(mean),
                           None if std is None else as_np(std), names)


def load_model(path: str | Path) -> FloatModel:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return load_torch(path)
    raise UserError(f"{path}: unknown model type (expected .npz, .pt or .pth)")
