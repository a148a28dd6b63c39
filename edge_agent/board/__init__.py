"""The board's host side: the raw-REPL transport, flash, the serial line
protocol, device/ under the MicroPython unix port, and virtual boards."""
