# The integer LSTM cell's API on the board: quantize a reading, step a stream's
# State through every layer, read the head's logits. The data is laid out by
# layout.py (BoardModel), the arithmetic is kernels.py; host twin:
# edge_agent/reference/lstm.py.
import array
import struct

import kernels
from kernels import HM_HP, M_C, M_DH, M_DX, M_H, M_HP, M_HU, M_IP, M_WH, M_WX, matvec

KERNEL = kernels.KERNEL  # which matvec this board runs: "thumb" or "viper"


def kernels_for(model):
    """(matvec of layer 0's inputs, matvec of the state, lstm_update) for the
    model's widths."""
    mv_x = kernels.matvec16 if model.x_bits == 16 else matvec
    if model.h_bits == 16:
        return mv_x, kernels.matvec16, kernels.lstm_update16
    return mv_x, matvec, kernels.lstm_update


class State:
    """One stream's h and c for every layer, plus the kernels' scratch."""

    def __init__(self, model):
        self.model = model
        self.buf = bytearray(model.state_bytes)
        self.addr = kernels.address(self.buf)  # pyright: ignore[reportArgumentType]
        self.reset()

    def reset(self):
        kernels.copy(self.buf, self.model.fresh_state, self.model.state_bytes)  # pyright: ignore[reportArgumentType]

    def hidden(self, layer):
        """h of a layer as signed ints (tests and debugging; allocates)."""
        off = self.model.hu_offsets[layer]
        if self.model.h_bits == 16:
            return [struct.unpack_from("<H", self.buf, off + 2 * n)[0] - 32768 for n in range(self.model.hidden)]
        return [self.buf[off + n] - 128 for n in range(self.model.hidden)]

    def cell(self, layer):
        off = self.model.metas[layer][M_C]
        return [struct.unpack_from("<h", self.buf, off + 2 * n)[0] for n in range(self.model.hidden)]


class Cell:
    """Runs a BoardModel: quantize a reading, step one or more States, read logits."""

    def __init__(self, model):
        self.model = model
        # (matvec of layer 0's inputs, matvec of the state, lstm_update): one attribute,
        # early in the instance's table, keeps step's lookups few (bench/rp2040_cycles.py)
        self.kernels = kernels_for(model)
        xw = model.x_bits // 8  # bytes per stored input, offset by 128 or 32768 (kernels.py)
        self.x = bytearray(xw * model.ip0)
        for i in range(model.ip0):
            self.x[xw * i + xw - 1] = 128  # the top byte: 0x80 or 0x8000 little-endian
        self.x_addr = kernels.address(self.x)  # pyright: ignore[reportArgumentType]
        self.raw = array.array("h", [0] * model.n_inputs)
        self.logits = array.array("i", [0] * model.n_classes)

    def quantize(self, raw):
        """raw: int16 readings, one per channel (array 'h'); the result goes to self.x."""
        kernels.quantize_inputs(self.model.arena, self.model.in_meta, raw, self.x)  # pyright: ignore[reportArgumentType]

    def set_input_bytes(self, data, offset=0):
        """Feed inputs from little-endian int8 or int16 bytes (the host's files):
        the +128 / +32768 encoding is the top byte's sign bit flipped."""
        xw = self.model.x_bits // 8
        x = self.x
        for i in range(xw * self.model.n_inputs):
            x[i] = data[offset + i] ^ (0x80 if i % xw == xw - 1 else 0)

    def step(self, state):
        """One timestep of every layer of `state`, from self.x. No allocation."""
        m = self.model
        arena = m.arena
        a = m.arena_addr
        s = state.addr
        x = self.x_addr
        mv_x, mv_h, update = self.kernels  # mv_x: layer 0's inputs; above it, the layer below's h
        k = 0
        while k < m.n_layers:
            meta = m.metas[k]
            rows = meta[M_H] << 18  # 4 * hidden gate rows, in the shape word's top half
            mv_x(x, a + meta[M_WX], s + meta[M_DX], meta[M_IP] | rows)
            mv_h(s + meta[M_HU], a + meta[M_WH], s + meta[M_DH], meta[M_HP] | rows)
            update(arena, meta, s, x)
            x = s + meta[M_HU]
            mv_x = mv_h
            k += 1

    def head(self, state):
        """int32 logits from the top layer's h into self.logits. No allocation."""
        m = self.model
        hu = state.addr + m.metas[m.n_layers - 1][M_HU]
        dots = state.addr + m.metas[0][M_DX]
        self.kernels[1](hu, m.arena_addr + m.off["wd"], dots, m.head_meta[HM_HP] | m.n_classes << 16)
        kernels.head_logits(m.arena, m.head_meta, hu, dots, self.logits)  # pyright: ignore[reportArgumentType]
        return self.logits
