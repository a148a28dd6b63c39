"""The float model as a PyTorch module: nn.LSTM(batch_first) named `lstm` and
nn.Linear named `head`, the state_dict names of our .npz. torch is optional."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .model import FloatModel


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("this needs torch: pip install 'edge-agent[torch]'") from None
    return torch


def make(n_in: int, hidden: int, layers: int, n_cls: int):
    """An untrained LSTM classifier: logits from the last timestep."""
    torch = _torch()

    class LSTMClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(n_in, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, n_cls)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    return LSTMClassifier()


def from_model(model: FloatModel):
    """A module holding the model's weights (inputs already normalised)."""
    torch = _torch()
    net = make(model.n_inputs, model.hidden, len(model.layers), model.n_classes)
    state = {k: torch.tensor(v, dtype=torch.float32) for k, v in model.arrays().items()
             if k.startswith(("lstm.", "head."))}
    net.load_state_dict(state)
    return net


def save_checkpoint(model: FloatModel, path: str | Path) -> None:
    """torch.save of {state_dict, mean, std, class_names}: what `quantize --model x.pt` loads."""
    from ..fileio import atomic_open

    torch = _torch()
    net = from_model(model)
    with atomic_open(path, "wb") as fh:
        torch.save({"state_dict": net.state_dict(), "mean": torch.tensor(model.mean),
                    "std": torch.tensor(model.std), "class_names": model.labels()}, fh)
