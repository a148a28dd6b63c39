# The integer LSTM's arithmetic on the board: docs/arithmetic.md, step by step.
# Host twin: edge_agent/reference/ (lstm.py, _recurrence.c); tests hold the two
# equal bit for bit. The data these kernels read is laid out by layout.py; the
# API that calls them is cell.py.
#
# Encoding choices that keep the viper kernels fast and 32-bit safe:
# - int8 weights and activations are stored offset by +128 (0..255), so loads
#   need no sign extension; the offsets are folded into per-row constants K:
#   sum (w-128)(x-128) = sum w*x - 128*sum x - 128*sum w + 128*128*n.
# - rows are padded to a multiple of 8 (w = x = 128 there, adding exactly 0),
#   so the inner loop is unrolled by 8 with constant offsets.
# - signed 32-bit constants are read as two 16-bit halves: on the unix port a
#   ptr32 load is zero-extended, on the boards it is not; halves agree on both.
# - no literal above 0x3fffffff (it would become an object on the boards).
# Buffers passed to viper pointer parameters carry "pyright: ignore" marks: the
# stubs' ptr8/ptr16/ptr32 types do not admit the bytearrays viper accepts.
import sys

import micropython
from micropython import const

# A layer's meta words (int32), as layout.py fills them: byte offsets into the
# arena (weights, row constants, tables) or into a State (h, c, scratch), and
# sizes. const: the viper code below reads them as constant indices.
M_WX = const(0)  # input weights
M_WH = const(1)  # recurrent weights
M_ROWS = const(2)  # per gate row: Kx, Mx, Sx, Kh, Mh, Sh
M_IP = const(3)  # padded input width
M_H = const(4)  # hidden units
M_HP = const(5)  # padded hidden width
M_CF = const(6)  # the cell's fraction bits
M_LS = const(7)  # table shift
M_SIG = const(8)  # sigmoid table
M_TANH = const(9)  # tanh table
M_HU = const(10)  # state: h, stored +128
M_C = const(11)  # state: c, int16
M_DX = const(12)  # scratch: input dot products, int32
M_DH = const(13)  # scratch: recurrent dot products, int32
M_Z = const(14)  # scratch: gate pre-activations + 32768, uint16
META_WORDS = const(15)
# the head's meta words, and the input quantization's
HM_ROWS = const(0)  # per class: K, M, S
HM_CLASSES = const(1)
HM_HP = const(2)
IM_PARAMS = const(0)  # per channel: M, B, S
IM_CHANNELS = const(1)


@micropython.viper
def address(buf: ptr8) -> int:
    return int(buf)


@micropython.viper
def copy(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


@micropython.viper
def matvec_viper(px: int, pw: int, out: int, shape: int):
    # out[r] = sum_j x[j] * w[r, j] over bytes 0..255; shape = n | rows << 16,
    # n a multiple of 8 (the contract of kernel_thumb.matvec). px and pw come
    # first so they are the locals viper keeps in registers.
    x0 = px
    n = shape & 0xFFFF
    rows = shape >> 16
    o = ptr32(out)
    r = 0
    while r < rows:
        px = x0
        end = x0 + n
        acc = 0
        while px < end:
            acc += (ptr8(px)[0] * ptr8(pw)[0] + ptr8(px)[1] * ptr8(pw)[1]
                    + ptr8(px)[2] * ptr8(pw)[2] + ptr8(px)[3] * ptr8(pw)[3]
                    + ptr8(px)[4] * ptr8(pw)[4] + ptr8(px)[5] * ptr8(pw)[5]
                    + ptr8(px)[6] * ptr8(pw)[6] + ptr8(px)[7] * ptr8(pw)[7])
            pw += 8
            px += 8
        o[r] = acc
        r += 1


@micropython.viper
def lstm_update_viper(arena: ptr8, meta: ptr32, st: int, x: int):
    # Gate pre-activations from the two matvecs, then c and h of every unit.
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    n_in = meta[M_IP]
    hid = meta[M_H]
    xs = 0  # sums of the offset-encoded inputs, for the +128 corrections
    p = ptr8(x)
    j = 0
    while j < n_in:
        xs += p[j]
        j += 1
    hs = 0
    p = ptr8(st + meta[M_HU])
    j = 0
    while j < meta[M_HP]:
        hs += p[j]
        j += 1
    xs = xs << 7
    hs = hs << 7
    dx = ptr32(st + meta[M_DX])
    dh = ptr32(st + meta[M_DH])
    z = ptr16(st + meta[M_Z])
    w = meta[M_ROWS] >> 1  # row constants, in 16-bit units
    r = 0
    rows = hid << 2
    while r < rows:
        k = ((a16[w + 1] ^ 0x8000) - 0x8000) << 16 | a16[w]
        s = a32[(w >> 1) + 2]
        zx = ((dx[r] + k - xs) * a32[(w >> 1) + 1] + (1 << (s - 1))) >> s
        k = ((a16[w + 7] ^ 0x8000) - 0x8000) << 16 | a16[w + 6]
        s = a32[(w >> 1) + 5]
        v = zx + (((dh[r] + k - hs) * a32[(w >> 1) + 4] + (1 << (s - 1))) >> s)
        if v > 32767:
            v = 32767
        if v < 0 - 32768:
            v = 0 - 32768
        z[r] = v + 32768  # stored as 0..65535: the table index base
        w += 12
        r += 1
    ls = meta[M_LS]
    mask = (1 << ls) - 1
    half = 1 << (ls - 1)
    sig = meta[M_SIG] >> 1
    tnh = meta[M_TANH] >> 1
    cf = meta[M_CF]
    hu = ptr8(st + meta[M_HU])
    c = ptr16(st + meta[M_C])
    n = 0
    while n < hid:
        # the five table lookups are written out: a viper-to-viper call costs more than the lookup
        u = z[n]
        i = sig + (u >> ls)
        lo = (a16[i] ^ 0x8000) - 0x8000
        gi = lo + ((((a16[i + 1] ^ 0x8000) - 0x8000 - lo) * (u & mask) + half) >> ls)
        u = z[hid + n]
        i = sig + (u >> ls)
        lo = (a16[i] ^ 0x8000) - 0x8000
        gf = lo + ((((a16[i + 1] ^ 0x8000) - 0x8000 - lo) * (u & mask) + half) >> ls)
        u = z[2 * hid + n]
        i = tnh + (u >> ls)
        lo = (a16[i] ^ 0x8000) - 0x8000
        gg = lo + ((((a16[i + 1] ^ 0x8000) - 0x8000 - lo) * (u & mask) + half) >> ls)
        u = z[3 * hid + n]
        i = sig + (u >> ls)
        lo = (a16[i] ^ 0x8000) - 0x8000
        go = lo + ((((a16[i + 1] ^ 0x8000) - 0x8000 - lo) * (u & mask) + half) >> ls)
        v = (c[n] ^ 0x8000) - 0x8000
        v = ((gf * v + 16384) >> 15) + ((gi * gg + (1 << (29 - cf))) >> (30 - cf))
        if v > 32767:
            v = 32767
        if v < 0 - 32768:
            v = 0 - 32768
        c[n] = v
        if cf > 12:
            v = (v + (1 << (cf - 13))) >> (cf - 12)
        else:
            v = v << (12 - cf)
            if v > 32767:
                v = 32767
            if v < 0 - 32768:
                v = 0 - 32768
        u = v + 32768
        i = tnh + (u >> ls)
        lo = (a16[i] ^ 0x8000) - 0x8000
        v = lo + ((((a16[i + 1] ^ 0x8000) - 0x8000 - lo) * (u & mask) + half) >> ls)
        v = (go * v + 4194304) >> 23
        if v > 127:
            v = 127
        if v < 0 - 128:
            v = 0 - 128
        hu[n] = v + 128
        n += 1


@micropython.viper
def head_logits(arena: ptr8, meta: ptr32, hu: int, dots: int, out: ptr32):
    # logits[k] = requant(dot_k + K_k - 128 * sum h, M_k, S_k)
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    hs = 0
    p = ptr8(hu)
    j = 0
    while j < meta[HM_HP]:
        hs += p[j]
        j += 1
    hs = hs << 7
    d = ptr32(dots)
    w = meta[HM_ROWS] >> 1
    k = 0
    while k < meta[HM_CLASSES]:
        kk = ((a16[w + 1] ^ 0x8000) - 0x8000) << 16 | a16[w]
        s = a32[(w >> 1) + 2]
        out[k] = ((d[k] + kk - hs) * a32[(w >> 1) + 1] + (1 << (s - 1))) >> s
        w += 6
        k += 1


@micropython.viper
def quantize_inputs(arena: ptr8, meta: ptr32, raw: ptr16, x: ptr8):
    # x[c] = sat((raw[c] * M + B) >> S, -128, 127) + 128
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    w = meta[IM_PARAMS] >> 1
    c = 0
    while c < meta[IM_CHANNELS]:
        b = ((a16[w + 3] ^ 0x8000) - 0x8000) << 16 | a16[w + 2]
        v = (((raw[c] ^ 0x8000) - 0x8000) * a32[w >> 1] + b) >> a32[(w >> 1) + 2]
        if v > 127:
            v = 127
        if v < 0 - 128:
            v = 0 - 128
        x[c] = v + 128
        w += 6
        c += 1


def _pick():
    """ARM boards run the Thumb kernels (kernel_thumb.py: ~3x fewer cycles per
    timestep); other ports, or an ARM firmware without the inline assembler, viper."""
    arch = (getattr(sys.implementation, "_mpy", 0) >> 10) & 0x0F
    if 3 <= arch <= 8:  # armv6 .. armv7emdp (py/persistentcode.h)
        try:
            import kernel_thumb  # pyright: ignore[reportMissingImports]
            return kernel_thumb.matvec, kernel_thumb.lstm_update, "thumb"
        except (ImportError, SyntaxError, ValueError):  # not flashed, no asm_thumb, or an .mpy this firmware cannot load
            pass
    return matvec_viper, lstm_update_viper, "viper"


matvec, lstm_update, KERNEL = _pick()
