# The board's loaded model: a checked blob (blob.py) laid out for the kernels
# (kernels.py) in one arena, and the byte layout of a stream's State. Layout
# choices (the +128 encoding, rows padded to 8, a 16-bit h stored +32768) are
# explained in kernels.py.
import array
import struct

import kernels
from kernels import (HM_CLASSES, HM_HP, HM_HW, HM_ROWS, HM_WORDS, IM_CHANNELS, IM_PARAMS, IM_WORDS, IM_XW, M_C,
                     M_CF, M_DH, M_DX, M_H, M_HP, M_HU, M_HW, M_IP, M_LS, M_ROWS, M_SIG, M_TANH, M_WH, M_WX, M_XW, M_Z,
                     META_WORDS)

UNROLL = 8  # the matvec kernels' unroll: rows are padded to a multiple of it
ROW_WORDS = 6  # per gate row: Kx, Mx, Sx | Px << 8, Kh, Mh, Sh | Ph << 8
HEAD_WORDS = 3  # per class: K, M, S | P << 8
IN_WORDS = 3  # per input channel: M, B, S
OFFSET = {1: 128, 2: 32768}  # what a stored value of that many bytes is offset by (kernels.py)


def _pad(n):
    return (n + UNROLL - 1) // UNROLL * UNROLL


def _align4(n):
    return (n + 3) & ~3


def _row_constant(bias, pre, offset, stored_sum, width):
    """K of one row (kernels.py): the bias, the pre-shift's rounding half, and the
    stored offsets' correction; stored_sum = sum of the row's weights + 128 over
    `width` padded columns, offset = what the inputs are stored offset by."""
    return bias + ((1 << pre) >> 1) - offset * (stored_sum - 128 * width)


class BoardModel:
    """A checked blob laid out for the kernels: one arena of weights and constants,
    and the layout of a State. (FloatModel and QuantModel are the host's.)"""

    def __init__(self, blob):
        b = blob
        C, H, K, L = b.n_inputs, b.hidden, b.n_classes, b.n_layers
        if H > 2048 or C > 2048:
            raise ValueError("model too wide for the int32 proof of the +128 encoding")
        self.n_inputs, self.hidden, self.n_classes, self.n_layers = C, H, K, L
        self.labels = b.labels()
        self.task = b.task  # classify | anomaly
        if b.task == "anomaly":  # the scorer's constants (anomaly.py)
            self.anomaly_params = b.ints(b"ANPR", 4)
            self.anomaly_weights = b.ints(b"ANWT", C)
        self.crc = b.crc
        self.out_frac = b.out_frac
        self.lut_shift = b.lut_shift
        self.h_bits = b.h_bits  # 8: h int8 stored +128; 16: int16 stored +32768
        self.x_bits = b.x_bits  # layer 0's inputs, stored alike
        hw = b.h_bits // 8  # bytes per stored h
        hp = _pad(H)
        n_table = (1 << (16 - b.lut_shift)) + 1
        plan = []  # (name, bytes) in arena order
        for k in range(L):
            ip = _pad(C if k == 0 else H)
            plan += [("wx%d" % k, 4 * H * ip), ("wh%d" % k, 4 * H * hp), ("rows%d" % k, 4 * H * ROW_WORDS * 4)]
        plan += [("wd", K * hp), ("head", K * HEAD_WORDS * 4), ("in", C * IN_WORDS * 4)]
        plan += [("sig", 2 * n_table), ("tanh", 2 * n_table), ("exp", 2 * n_table)]
        off = {}
        size = 0
        for name, n in plan:
            off[name] = size
            size += _align4(n)
        self.arena = arena = bytearray(size)
        self.arena_bytes = size
        for name, tag in (("sig", b"SIGM"), ("tanh", b"TANH"), ("exp", b"EXPN")):
            src, _ = b.section(tag, n_table)
            arena[off[name]:off[name] + 2 * n_table] = b.data[src:src + 2 * n_table]
        self.exp_table = array.array("h", bytes(arena[off["exp"]:off["exp"] + 2 * n_table]))
        # state layout, per stream: per layer h (hp stored values) and c (int16), then scratch
        st = 0
        hu_off, c_off = [], []
        for k in range(L):
            hu_off.append(st)
            st += _align4(hw * hp)
            c_off.append(st)
            st += _align4(2 * H)
        dx, dh, z = st, st + 16 * H, st + 32 * H
        # scratch: the gates' dot products and pre-activations (40 H bytes), which the
        # head reuses for its K int32 dot products: sized for whichever is larger
        st += max(32 * H + _align4(8 * H), 4 * K)
        self.state_bytes = st
        self.hu_offsets = hu_off
        fresh = bytearray(st)  # a reset state: h = 0 (stored 128 or 32768, padding too), c = 0
        for o in hu_off:
            for i in range(hp):
                fresh[o + hw * i + hw - 1] = 128  # the top byte: 0x80 or 0x8000 little-endian
        self.fresh_state = bytes(fresh)
        self.metas = []
        for k in range(L):
            width = C if k == 0 else H
            ip = _pad(width)
            w_x = self._offset_rows(b, b"WX__", k, 4 * H, width, ip, off["wx%d" % k])
            w_h = self._offset_rows(b, b"WH__", k, 4 * H, H, hp, off["wh%d" % k])
            bx = b.ints(b"BX__", 4 * H, k)
            mx, sx = b.ints(b"MX__", 4 * H, k), b.ints(b"SX__", 4 * H, k)
            mh, sh = b.ints(b"MH__", 4 * H, k), b.ints(b"SH__", 4 * H, k)
            px, ph = b.pre_shifts(b"PX__", 4 * H, k), b.pre_shifts(b"PH__", 4 * H, k)
            cf = b.ints(b"CFRC", 1, k)[0]
            xw = b.x_bits // 8 if k == 0 else hw
            for r in range(4 * H):
                kx = _row_constant(bx[r], px[r], OFFSET[xw], w_x[r], ip)
                kh = _row_constant(0, ph[r], OFFSET[hw], w_h[r], hp)
                struct.pack_into("<6i", arena, off["rows%d" % k] + 24 * r, kx, mx[r], sx[r] | px[r] << 8,
                                 kh, mh[r], sh[r] | ph[r] << 8)
            meta = array.array("i", [0] * META_WORDS)
            meta[M_WX], meta[M_WH], meta[M_ROWS] = off["wx%d" % k], off["wh%d" % k], off["rows%d" % k]
            meta[M_IP], meta[M_H], meta[M_HP], meta[M_CF], meta[M_LS] = ip, H, hp, cf, b.lut_shift
            meta[M_SIG], meta[M_TANH] = off["sig"], off["tanh"]
            meta[M_HU], meta[M_C], meta[M_DX], meta[M_DH], meta[M_Z] = hu_off[k], c_off[k], dx, dh, z
            meta[M_XW], meta[M_HW] = xw, hw
            self.metas.append(meta)
        w_d = self._offset_rows(b, b"WD__", 255, K, H, hp, off["wd"])
        bd, md, sd = b.ints(b"BD__", K), b.ints(b"MD__", K), b.ints(b"SD__", K)
        pd = b.pre_shifts(b"PD__", K)
        for r in range(K):
            struct.pack_into("<3i", arena, off["head"] + 12 * r, _row_constant(bd[r], pd[r], OFFSET[hw], w_d[r], hp),
                             md[r], sd[r] | pd[r] << 8)
        im, ib, ish = b.ints(b"INMU", C), b.ints(b"INBI", C), b.ints(b"INSH", C)
        for c in range(C):
            struct.pack_into("<3i", arena, off["in"] + 12 * c, im[c], ib[c], ish[c])
        self.off = off
        self.ip0 = _pad(C)
        self.head_meta = array.array("i", [0] * HM_WORDS)
        self.head_meta[HM_ROWS], self.head_meta[HM_CLASSES], self.head_meta[HM_HP] = off["head"], K, hp
        self.head_meta[HM_HW] = hw
        self.in_meta = array.array("i", [0] * IM_WORDS)
        self.in_meta[IM_PARAMS], self.in_meta[IM_CHANNELS] = off["in"], C
        self.in_meta[IM_XW] = b.x_bits // 8
        self.arena_addr = kernels.address(arena)  # pyright: ignore[reportArgumentType]

    def _offset_rows(self, b, tag, layer, rows, width, padded, dest):
        """Copy int8 rows into the arena as w + 128, padded with 128; return row sums."""
        src, _ = b.section(tag, rows * width, layer)
        data = b.data
        arena = self.arena
        sums = []
        for r in range(rows):
            total = 0
            s = src + r * width
            d = dest + r * padded
            for j in range(width):
                v = data[s + j] ^ 0x80
                arena[d + j] = v
                total += v
            for j in range(width, padded):
                arena[d + j] = 128
            sums.append(total + 128 * (padded - width))
        return sums
