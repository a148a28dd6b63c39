# The integer LSTM's arithmetic on the board: docs/arithmetic.md, step by step.
# Host twin: edge_agent/reference/ (lstm.py, _recurrence.c); tests hold the two
# equal bit for bit. The data these kernels read is laid out by layout.py; the
# API that calls them is cell.py.
#
# Encoding choices that keep the viper kernels fast and 32-bit safe:
# - int8 weights and activations are stored offset by +128 (0..255), so loads
#   need no sign extension; the offsets are folded into per-row constants K:
#   sum (w-128)(x-128) = sum w*x - 128*sum x - 128*sum w + 128*128*n.
# - a 16-bit state (docs/arithmetic.md, "16-bit hidden state") stores h offset
#   by +32768 (0..65535) and its matvec is the same loop with 16-bit loads:
#   sum hu*wu = sum h*w + 128*sum hu + 32768*sum w, the last term in K. Every
#   partial sum is at most 65535 * 255 * n, inside int32 for n <= 128: hence a
#   16-bit state's limit of 128 hidden units (blob.py).
# - every accumulator, less its offsets, is pre-shifted right by P (a 16-bit
#   state's precision-keeping rounding shift; 0 for 8 bits) before its
#   multiplier; P shares the shift's word (S | P << 8) and its rounding half
#   is in K.
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
M_XW = const(15)  # bytes per stored input: 1 (int8 + 128) or 2 (int16 + 32768)
M_HW = const(16)  # bytes per stored h: 1 or 2
META_WORDS = const(17)
# the head's meta words, and the input quantization's
HM_ROWS = const(0)  # per class: K, M, S | P << 8
HM_CLASSES = const(1)
HM_HP = const(2)
HM_HW = const(3)  # bytes per stored h
HM_WORDS = const(4)
IM_PARAMS = const(0)  # per channel: M, B, S
IM_CHANNELS = const(1)
IM_XW = const(2)  # bytes per stored input: 1 (int8 + 128) or 2 (int16 + 32768)
IM_WORDS = const(3)


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
def matvec16_viper(px: int, pw: int, out: int, shape: int):
    # matvec_viper over a 16-bit state's inputs: out[r] = sum_j x[j] * w[r, j],
    # x uint16 (h + 32768), w bytes 0..255; n (elements) a multiple of 8, at most
    # 128 (the int32 proof above).
    x0 = px
    n = shape & 0xFFFF
    rows = shape >> 16
    o = ptr32(out)
    r = 0
    while r < rows:
        px = x0
        end = x0 + (n << 1)
        acc = 0
        while px < end:
            acc += (ptr16(px)[0] * ptr8(pw)[0] + ptr16(px)[1] * ptr8(pw)[1]
                    + ptr16(px)[2] * ptr8(pw)[2] + ptr16(px)[3] * ptr8(pw)[3]
                    + ptr16(px)[4] * ptr8(pw)[4] + ptr16(px)[5] * ptr8(pw)[5]
                    + ptr16(px)[6] * ptr8(pw)[6] + ptr16(px)[7] * ptr8(pw)[7])
            pw += 8
            px += 16
        o[r] = acc
        r += 1


@micropython.viper
def stored_sum(p: int, n: int, width: int) -> int:
    # 128 * the sum of n stored values (bytes or, width 2, uint16): the matvecs'
    # offset correction (the head's; lstm_update writes it out); at most
    # 128 * 65535 * 128 = 2^30 for a 16-bit state
    total = 0
    j = 0
    if width == 2:
        p16 = ptr16(p)
        while j < n:
            total += p16[j]
            j += 1
    else:
        p8 = ptr8(p)
        while j < n:
            total += p8[j]
            j += 1
    return total << 7


@micropython.viper
def lstm_update_viper(arena: ptr8, meta: ptr32, st: int, x: int):
    # Gate pre-activations from the two matvecs, then c and h of every unit.
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    hid = meta[M_H]
    # stored_sum's two sums, written out: the two viper-to-viper calls would cost
    # ~1 % of an H=32 step (bench/state16.py)
    xs = 0
    n = meta[M_IP]
    j = 0
    if meta[M_XW] == 2:
        p16 = ptr16(x)
        while j < n:
            xs += p16[j]
            j += 1
    else:
        p8 = ptr8(x)
        while j < n:
            xs += p8[j]
            j += 1
    hs = 0
    n = meta[M_HP]
    j = 0
    if meta[M_HW] == 2:
        p16 = ptr16(st + meta[M_HU])
        while j < n:
            hs += p16[j]
            j += 1
    else:
        p8 = ptr8(st + meta[M_HU])
        while j < n:
            hs += p8[j]
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
        # (dot - offsets + K) >> P, then requant: the order keeps every value inside int32
        k = ((a16[w + 1] ^ 0x8000) - 0x8000) << 16 | a16[w]
        s = a32[(w >> 1) + 2]
        p = s >> 8
        s = s & 0xFF
        zx = ((((dx[r] - xs) + k) >> p) * a32[(w >> 1) + 1] + (1 << (s - 1))) >> s
        k = ((a16[w + 7] ^ 0x8000) - 0x8000) << 16 | a16[w + 6]
        s = a32[(w >> 1) + 5]
        p = s >> 8
        s = s & 0xFF
        v = zx + (((((dh[r] - hs) + k) >> p) * a32[(w >> 1) + 4] + (1 << (s - 1))) >> s)
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
    h16 = ptr16(st + meta[M_HU])
    wide = meta[M_HW] == 2
    h_shift = 15 if wide else 23  # o * tanh(c) (Q0.30) -> Q0.15 or Q0.7
    h_round = 1 << (h_shift - 1)
    h_max = 32767 if wide else 127
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
        v = (go * v + h_round) >> h_shift
        if v > h_max:
            v = h_max
        if v < 0 - 1 - h_max:
            v = 0 - 1 - h_max
        if wide:
            h16[n] = v + 32768
        else:
            hu[n] = v + 128
        n += 1


@micropython.viper
def head_logits(arena: ptr8, meta: ptr32, hu: int, dots: int, out: ptr32):
    # logits[k] = requant((dot_k - 128 * sum hu + K_k) >> P_k, M_k, S_k)
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    hs = int(stored_sum(hu, meta[HM_HP], meta[HM_HW]))
    d = ptr32(dots)
    w = meta[HM_ROWS] >> 1
    k = 0
    while k < meta[HM_CLASSES]:
        kk = ((a16[w + 1] ^ 0x8000) - 0x8000) << 16 | a16[w]
        s = a32[(w >> 1) + 2]
        out[k] = ((((d[k] - hs) + kk) >> (s >> 8)) * a32[(w >> 1) + 1] + (1 << ((s & 0xFF) - 1))) >> (s & 0xFF)
        w += 6
        k += 1


@micropython.viper
def quantize_inputs(arena: ptr8, meta: ptr32, raw: ptr16, x: ptr8):
    # x[c] = sat((raw[c] * M + B) >> S, -128, 127) + 128, or for int16 inputs
    # sat(.., -32768, 32767) + 32768 as uint16
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    x16 = ptr16(x)
    wide = meta[IM_XW] == 2
    top = 32767 if wide else 127
    w = meta[IM_PARAMS] >> 1
    c = 0
    while c < meta[IM_CHANNELS]:
        b = ((a16[w + 3] ^ 0x8000) - 0x8000) << 16 | a16[w + 2]
        v = (((raw[c] ^ 0x8000) - 0x8000) * a32[w >> 1] + b) >> a32[(w >> 1) + 2]
        if v > top:
            v = top
        if v < 0 - 1 - top:
            v = 0 - 1 - top
        if wide:
            x16[c] = v + 32768
        else:
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


def _pick16():
    """A 16-bit state's matvec and lstm_update: Thumb where the 8-bit kernels are,
    each viper where this board's kernel_thumb is older than it."""
    if KERNEL == "thumb":
        import kernel_thumb  # pyright: ignore[reportMissingImports]
        return (getattr(kernel_thumb, "matvec16", matvec16_viper),
                getattr(kernel_thumb, "lstm_update16", lstm_update_viper))
    return matvec16_viper, lstm_update_viper


matvec16, lstm_update16 = _pick16()
