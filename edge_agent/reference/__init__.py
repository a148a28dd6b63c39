"""The integer reference: exactly what the board computes, bit for bit.

inputs (sensor readings -> int8), lstm (the stateful integer LSTM and its head),
recurrence (+ _recurrence.c: the compiled time loop), stream (window semantics
and the per-window decision, like device/stream.py).
"""
