"""Post-training quantization of the float LSTM into the integer model."""
from .ptq import quantize  # noqa: F401
