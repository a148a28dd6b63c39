"""A model behind the spectral front-end: its features are exact int16 readings.

The float model was trained on front-end features (edge_agent/reference/frontend.py),
which are integers already, so one raw count is one feature unit (INRU = 1) and
the input quantization is calibrated on the front-end's output; the
front-end's parameters then travel in the blob with the model.
"""
from __future__ import annotations

import numpy as np

from ..blob import QuantModel
from ..learn.model import FloatModel
from ..reference.frontend import FrontendParams
from .ptq import quantize


def quantize_with_frontend(model: FloatModel, features: np.ndarray, frontend: FrontendParams,
                           lengths: np.ndarray | None = None, h_bits: int = 8, x_bits: int = 8) -> QuantModel:
    """PTQ calibrated on front-end features [n, T, bands] (an h_bits hidden state,
    x_bits inputs);
    the blob carries `frontend`."""
    if model.n_inputs != frontend.bands:
        from ..errors import UserError

        raise UserError(f"the model takes {model.n_inputs} inputs, the front-end makes {frontend.bands} bands")
    qm = quantize(model, features, lengths, raw_per_unit=np.ones(frontend.bands), h_bits=h_bits, x_bits=x_bits)
    qm.frontend = frontend
    return qm
