# The integer LSTM cell as the board runs it: docs/arithmetic.md, step by step.
# Host twin: edge_agent/reference.py; tests hold the two equal bit for bit.
#
# Layout choices that keep the viper kernels fast and 32-bit safe:
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
import array
import struct
import sys

import micropython

UNROLL = 8
ROW_WORDS = 6  # per gate row: Kx, Mx, Sx, Kh, Mh, Sh
HEAD_WORDS = 3  # per class: K, M, S
IN_WORDS = 3  # per input channel: M, B, S
# layer meta (int32 words): byte offsets into the arena / the state, and sizes
M_WX, M_WH, M_ROWS, M_IP, M_H, M_HP, M_CF, M_LS, M_SIG, M_TANH, M_HU, M_C, M_DX, M_DH, M_Z = range(15)
META_WORDS = 15


def _pad(n):
    return (n + UNROLL - 1) // UNROLL * UNROLL


def _align4(n):
    return (n + 3) & ~3


@micropython.viper
def address(buf: ptr8) -> int:
    return int(buf)


@micropython.viper
def _copy(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


@micropython.viper
def _matvec_viper(px: int, pw: int, out: int, shape: int):
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


def _pick_matvec():
    """ARM boards run the Thumb kernel (4 instructions per MAC against viper's
    ~12); other ports, or an ARM firmware without the inline assembler, viper."""
    arch = (getattr(sys.implementation, "_mpy", 0) >> 10) & 0x0F
    if 3 <= arch <= 8:  # armv6 .. armv7emdp (py/persistentcode.h)
        try:
            from kernel_thumb import matvec  # pyright: ignore[reportMissingImports]
            return matvec, "thumb"
        except (ImportError, SyntaxError):  # not flashed, or no asm_thumb in this firmware
            pass
    return _matvec_viper, "viper"


_matvec, KERNEL = _pick_matvec()


@micropython.viper
def _lstm_update(arena: ptr8, meta: ptr32, st: int, x: int):
    # Gate pre-activations from the two matvecs, then c and h of every unit.
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    n_in = meta[3]
    hid = meta[4]
    xs = 0  # sums of the offset-encoded inputs, for the +128 corrections
    p = ptr8(x)
    j = 0
    while j < n_in:
        xs += p[j]
        j += 1
    hs = 0
    p = ptr8(st + meta[10])
    j = 0
    while j < meta[5]:
        hs += p[j]
        j += 1
    xs = xs << 7
    hs = hs << 7
    dx = ptr32(st + meta[12])
    dh = ptr32(st + meta[13])
    z = ptr16(st + meta[14])
    w = meta[2] >> 1  # row constants, in 16-bit units
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
    ls = meta[7]
    mask = (1 << ls) - 1
    half = 1 << (ls - 1)
    sig = meta[8] >> 1
    tnh = meta[9] >> 1
    cf = meta[6]
    hu = ptr8(st + meta[10])
    c = ptr16(st + meta[11])
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
def _head_logits(arena: ptr8, meta: ptr32, hu: int, dots: int, out: ptr32):
    # logits[k] = requant(dot_k + K_k - 128 * sum h, M_k, S_k); meta: [rows, n_classes, hp]
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    hs = 0
    p = ptr8(hu)
    j = 0
    while j < meta[2]:
        hs += p[j]
        j += 1
    hs = hs << 7
    d = ptr32(dots)
    w = meta[0] >> 1
    k = 0
    while k < meta[1]:
        kk = ((a16[w + 1] ^ 0x8000) - 0x8000) << 16 | a16[w]
        s = a32[(w >> 1) + 2]
        out[k] = ((d[k] + kk - hs) * a32[(w >> 1) + 1] + (1 << (s - 1))) >> s
        w += 6
        k += 1


@micropython.viper
def _quantize(arena: ptr8, meta: ptr32, raw: ptr16, x: ptr8):
    # x[c] = sat((raw[c] * M + B) >> S, -128, 127) + 128; meta: [params, channels]
    a16 = ptr16(arena)
    a32 = ptr32(arena)
    w = meta[0] >> 1
    c = 0
    while c < meta[1]:
        b = ((a16[w + 3] ^ 0x8000) - 0x8000) << 16 | a16[w + 2]
        v = (((raw[c] ^ 0x8000) - 0x8000) * a32[w >> 1] + b) >> a32[(w >> 1) + 2]
        if v > 127:
            v = 127
        if v < 0 - 128:
            v = 0 - 128
        x[c] = v + 128
        w += 6
        c += 1


class Model:
    """A checked blob laid out for the kernels: one arena of weights and constants."""

    def __init__(self, blob):
        b = blob
        C, H, K, L = b.n_inputs, b.hidden, b.n_classes, b.n_layers
        if H > 2048 or C > 2048:
            raise ValueError("model too wide for the int32 proof of the +128 encoding")
        self.n_inputs, self.hidden, self.n_classes, self.n_layers = C, H, K, L
        self.labels = b.labels()
        self.crc = b.crc
        self.out_frac = b.out_frac
        self.lut_shift = b.lut_shift
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
        # state layout, per stream: per layer h (hp bytes) and c (int16), then scratch
        st = 0
        hu_off, c_off = [], []
        for k in range(L):
            hu_off.append(st)
            st += _align4(hp)
            c_off.append(st)
            st += _align4(2 * H)
        dx, dh, z = st, st + 16 * H, st + 32 * H
        st += 32 * H + _align4(8 * H)
        self.state_bytes = st
        self.hu_offsets = hu_off
        fresh = bytearray(st)  # a reset state: h = 0 (stored 128, padding too), c = 0
        for o in hu_off:
            for i in range(hp):
                fresh[o + i] = 128
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
            cf = b.ints(b"CFRC", 1, k)[0]
            for r in range(4 * H):
                kx = bx[r] + 16384 * ip - 128 * w_x[r]
                kh = 16384 * hp - 128 * w_h[r]
                struct.pack_into("<6i", arena, off["rows%d" % k] + 24 * r, kx, mx[r], sx[r], kh, mh[r], sh[r])
            self.metas.append(array.array("i", [
                off["wx%d" % k], off["wh%d" % k], off["rows%d" % k], ip, H, hp, cf, b.lut_shift,
                off["sig"], off["tanh"], hu_off[k], c_off[k], dx, dh, z]))
        w_d = self._offset_rows(b, b"WD__", 255, K, H, hp, off["wd"])
        bd, md, sd = b.ints(b"BD__", K), b.ints(b"MD__", K), b.ints(b"SD__", K)
        for r in range(K):
            struct.pack_into("<3i", arena, off["head"] + 12 * r, bd[r] + 16384 * hp - 128 * w_d[r], md[r], sd[r])
        im, ib, ish = b.ints(b"INMU", C), b.ints(b"INBI", C), b.ints(b"INSH", C)
        for c in range(C):
            struct.pack_into("<3i", arena, off["in"] + 12 * c, im[c], ib[c], ish[c])
        self.off = off
        self.ip0 = _pad(C)
        self.head_meta = array.array("i", [off["head"], K, hp])
        self.in_meta = array.array("i", [off["in"], C])
        self.arena_addr = address(arena)  # pyright: ignore[reportArgumentType]

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


class State:
    """One stream's h and c for every layer, plus the kernels' scratch."""

    def __init__(self, model):
        self.model = model
        self.buf = bytearray(model.state_bytes)
        self.addr = address(self.buf)  # pyright: ignore[reportArgumentType]
        self.reset()

    def reset(self):
        _copy(self.buf, self.model.fresh_state, self.model.state_bytes)  # pyright: ignore[reportArgumentType]

    def hidden(self, layer):
        """h of a layer as signed ints (tests and debugging; allocates)."""
        off = self.model.hu_offsets[layer]
        return [self.buf[off + n] - 128 for n in range(self.model.hidden)]

    def cell(self, layer):
        off = self.model.metas[layer][M_C]
        return [struct.unpack_from("<h", self.buf, off + 2 * n)[0] for n in range(self.model.hidden)]


class Cell:
    """Runs a Model: quantize a reading, step one or more States, read logits."""

    def __init__(self, model):
        self.model = model
        self.x = bytearray(model.ip0)
        for i in range(model.ip0):
            self.x[i] = 128
        self.x_addr = address(self.x)  # pyright: ignore[reportArgumentType]
        self.raw = array.array("h", [0] * model.n_inputs)
        self.logits = array.array("i", [0] * model.n_classes)

    def quantize(self, raw):
        """raw: int16 readings, one per channel (array 'h'); the result goes to self.x."""
        _quantize(self.model.arena, self.model.in_meta, raw, self.x)  # pyright: ignore[reportArgumentType]

    def set_input(self, x_q):
        """Feed already-quantized int8 inputs (conformance tests)."""
        for c in range(self.model.n_inputs):
            self.x[c] = (x_q[c] + 128) & 0xFF

    def step(self, state):
        """One timestep of every layer of `state`, from self.x. No allocation."""
        m = self.model
        arena = m.arena
        a = m.arena_addr
        s = state.addr
        x = self.x_addr
        k = 0
        while k < m.n_layers:
            meta = m.metas[k]
            rows = meta[M_H] << 18  # 4 * hidden gate rows, in the shape word's top half
            _matvec(x, a + meta[M_WX], s + meta[M_DX], meta[M_IP] | rows)
            _matvec(s + meta[M_HU], a + meta[M_WH], s + meta[M_DH], meta[M_HP] | rows)
            _lstm_update(arena, meta, s, x)
            x = s + meta[M_HU]
            k += 1

    def head(self, state):
        """int32 logits from the top layer's h into self.logits. No allocation."""
        m = self.model
        hu = state.addr + m.metas[m.n_layers - 1][M_HU]
        dots = state.addr + m.metas[0][M_DX]
        _matvec(hu, m.arena_addr + m.off["wd"], dots, m.head_meta[2] | m.n_classes << 16)
        _head_logits(m.arena, m.head_meta, hu, dots, self.logits)  # pyright: ignore[reportArgumentType]
        return self.logits


def decide(model, logits):
    """(class, score) once per window: the softmax probability of the top class in
    Q0.15, from the exp table (docs/arithmetic.md, "Head and decision")."""
    k_top = 0
    for k in range(1, model.n_classes):
        if logits[k] > logits[k_top]:
            k_top = k
    top = logits[k_top]
    ls = model.lut_shift
    table = model.exp_table
    total = 32768
    for k in range(model.n_classes):
        if k == k_top:
            continue
        d = top - logits[k]
        if model.out_frac > 12:
            t = (d + (1 << (model.out_frac - 13))) >> (model.out_frac - 12)
        else:
            t = d << (12 - model.out_frac)
        u = 32768 - (t if t < 32768 else 32768)
        i = u >> ls
        lo = table[i]
        total += lo + (((table[i + 1] - lo) * (u & ((1 << ls) - 1)) + (1 << (ls - 1))) >> ls)
    score = ((1 << 30) + total // 2) // total
    return k_top, score if score < 32767 else 32767
