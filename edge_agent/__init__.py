"""edge-agent: quantized LSTMs on microcontrollers, with a bit-exact host emulator."""
__version__ = "0.1.0"
