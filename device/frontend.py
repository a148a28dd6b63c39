# The integer spectral front-end on the board: raw int16 samples in, one frame of
# int16 log band energies out every `hop` samples (docs/arithmetic.md,
# "Front-end"). Host twin: edge_agent/reference/frontend.py; tests hold the two
# equal bit for bit. Its parameters and tables come from the blob (FE__ sections).
#
# Storage choices that keep viper simple and 32-bit safe:
# - the FFT's complex values live interleaved (re, im) in a uint16 array, stored
#   offset by +32768: a load is one subtraction (no sign extension), and the
#   butterfly's halving folds the offset back in: (a + t + 1) >> 1 + 32768 is
#   (a_stored + t + 32769) >> 1.
# - ptr32 only holds non-negative values (power, band energies, meta): the unix
#   port zero-extends a ptr32 load, the boards do not; non-negatives agree.
# - no allocation after __init__: feed() takes a buffer and a start index.
import array
import struct
import sys

import micropython
from micropython import const

# meta words (int32)
F_N = const(0)  # frame length
F_M = const(1)  # N / 2
F_HOP = const(2)
F_B = const(3)  # bands
F_POS = const(4)  # next ring slot (= the oldest sample once the ring is full)
F_LEFT = const(5)  # samples until the next frame is due
F_FLOOR = const(6)  # feature floor + 32768
F_WIN = const(7)  # arena byte offsets of the tables
F_COS = const(8)
F_SIN = const(9)
F_SLOT = const(10)
F_WT = const(11)
F_LOG = const(12)
F_REV = const(13)
F_DUE = const(14)  # 1: the last push() completed a frame
META_WORDS = const(15)
SKIP = const(255)


@micropython.viper
def push(meta: ptr32, ring: ptr16, src: ptr16, start: int, n: int) -> int:
    # Append src[start:n] to the ring until a frame is due; return the index after
    # the last sample taken; meta[F_DUE] says whether a frame completed.
    pos = meta[F_POS]
    left = meta[F_LEFT]
    mask = meta[F_N] - 1
    meta[F_DUE] = 0
    i = start
    while i < n:
        ring[pos] = src[i]
        pos = (pos + 1) & mask
        i += 1
        left -= 1
        if left == 0:
            left = meta[F_HOP]
            meta[F_DUE] = 1
            break
    meta[F_POS] = pos
    meta[F_LEFT] = left
    return i


@micropython.viper
def window(arena: ptr8, meta: ptr32, ring: ptr16, z: ptr16) -> int:
    # Window the frame (oldest sample at ring[pos]) into z in bit-reversed order,
    # then normalise it to 14 bits; return the block exponent e (-1..14).
    a16 = ptr16(arena)
    win = meta[F_WIN] >> 1
    rev = meta[F_REV] >> 1
    mask = meta[F_N] - 1
    pos = meta[F_POS]
    m = meta[F_M]
    peak = 0
    j = 0
    while j < m:
        r = a16[rev + j] << 1
        s = (ring[pos] ^ 0x8000) - 0x8000
        w = (s * a16[win + 2 * j] + 16384) >> 15
        z[r] = w + 32768
        if w < 0:
            w = 0 - w
        if w > peak:
            peak = w
        pos = (pos + 1) & mask
        s = (ring[pos] ^ 0x8000) - 0x8000
        w = (s * a16[win + 2 * j + 1] + 16384) >> 15
        z[r + 1] = w + 32768
        if w < 0:
            w = 0 - w
        if w > peak:
            peak = w
        pos = (pos + 1) & mask
        j += 1
    bits = 0
    while peak > 0:
        peak = peak >> 1
        bits += 1
    e = 14 - bits
    i = 0
    n = m << 1
    if e > 0:
        while i < n:
            z[i] = ((z[i] - 32768) << e) + 32768
            i += 1
    elif e < 0:
        while i < n:
            z[i] = ((z[i] - 32768 + 1) >> 1) + 32768
            i += 1
    return e


@micropython.viper
def fft(arena: ptr8, meta: ptr32, z: ptr16):
    # In-place radix-2 decimation-in-time FFT of M complex values; every stage
    # halves, so |value| never grows (docs/arithmetic.md).
    a16 = ptr16(arena)
    cos = meta[F_COS] >> 1
    sin = meta[F_SIN] >> 1
    m2 = meta[F_M] << 1  # in 16-bit units: re, im interleaved
    half = 2  # butterfly distance, in 16-bit units
    tstep = meta[F_M]  # twiddle index step N / (2 * half_in_complex)
    while half < m2:
        span = half << 1
        j = 0
        t = 0
        while j < half:
            c = (a16[cos + t] ^ 0x8000) - 0x8000
            s = (a16[sin + t] ^ 0x8000) - 0x8000
            p = j
            while p < m2:
                q = p + half
                br = z[q] - 32768
                bi = z[q + 1] - 32768
                tr = (br * c + bi * s + 16384) >> 15
                ti = (bi * c - br * s + 16384) >> 15
                ar = z[p]
                ai = z[p + 1]
                z[p] = (ar + tr + 32769) >> 1
                z[p + 1] = (ai + ti + 32769) >> 1
                z[q] = (ar - tr + 32769) >> 1
                z[q + 1] = (ai - ti + 32769) >> 1
                p += span
            j += 2
            t += tstep
        half = span
        tstep = tstep >> 1


@micropython.viper
def accumulate(arena: ptr8, meta: ptr32, z: ptr16, energy: ptr32):
    # Real-FFT split, power and filterbank of one frame into the energy slots
    # (zero on entry: log_bands leaves them so).
    a16 = ptr16(arena)
    cos = meta[F_COS] >> 1
    sin = meta[F_SIN] >> 1
    slot = ptr8(int(arena) + meta[F_SLOT])
    wt = meta[F_WT] >> 1
    m = meta[F_M]
    k = 0
    while k <= m:
        sl = slot[k]
        if sl != SKIP:
            ka = k << 1
            if k == m:
                ka = 0
            kb = (m - k) << 1
            if k == 0:
                kb = 0
            ar = z[ka] - 32768
            ai = z[ka + 1] - 32768
            pr = z[kb] - 32768
            pi = z[kb + 1] - 32768
            fr = ai + pi
            fi = pr - ar
            c = (a16[cos + k] ^ 0x8000) - 0x8000
            s = (a16[sin + k] ^ 0x8000) - 0x8000
            xr = (ar + pr + ((fr * c + fi * s + 16384) >> 15) + 2) >> 2
            xi = (ai - pi + ((fi * c - fr * s + 16384) >> 15) + 2) >> 2
            p = xr * xr + xi * xi
            w = a16[wt + k]
            c1 = (p >> 14) * w + (((p & 16383) * w) >> 14)
            energy[sl] += c1
            energy[sl + 1] += p - c1
        k += 1


@micropython.viper
def log_bands(arena: ptr8, meta: ptr32, energy: ptr32, out: ptr16, e: int):
    # The integer log of each band's energy into out; the slots are zeroed for
    # the next frame.
    a16 = ptr16(arena)
    nb = meta[F_B]
    floor = meta[F_FLOOR] - 32768
    lg = meta[F_LOG] >> 1
    corr = e << 9
    b = 0
    while b < nb:
        v = energy[b + 1]
        top = 0
        u = v
        if u >= 65536:
            u = u >> 16
            top += 16
        if u >= 256:
            u = u >> 8
            top += 8
        if u >= 16:
            u = u >> 4
            top += 4
        if u >= 4:
            u = u >> 2
            top += 2
        if u >= 2:
            top += 1
        if top >= 7:
            idx = (v >> (top - 7)) & 127
        else:
            idx = (v << (7 - top)) & 127
        f = (top << 8) + a16[lg + idx] - corr
        if f < floor:
            f = floor
        out[b] = f
        b += 1
    i = 0
    while i < nb + 2:
        energy[i] = 0
        i += 1


@micropython.viper
def address(buf: ptr8) -> int:
    return int(buf)


def _thumb():
    """frontend_thumb's fft and bands on ARM boards (measured: several times fewer
    cycles), else (None, None): the viper versions."""
    arch = (getattr(sys.implementation, "_mpy", 0) >> 10) & 0x0F
    if 3 <= arch <= 8:  # armv6 .. armv7emdp (py/persistentcode.h)
        try:
            import frontend_thumb  # pyright: ignore[reportMissingImports]
            return frontend_thumb.fft, frontend_thumb.bands
        except (ImportError, SyntaxError):  # not flashed, or no asm_thumb in this firmware
            pass
    return None, None


THUMB_FFT, THUMB_BANDS = _thumb()
KERNEL = "thumb" if THUMB_FFT else "viper"


class Frontend:
    """The front-end of a checked blob: feed() samples, read out (array 'h', one
    int16 feature per band) whenever it reports a frame."""

    def __init__(self, blob):
        p = blob.ints(b"FEPR", 9)
        if p[0] != 1:
            raise ValueError("front-end version %d is not supported" % p[0])
        n, hop, nb = p[3], p[4], p[5]
        if n not in (64, 128, 256, 512, 1024) or not 1 <= hop <= n or not 1 <= nb <= 64:
            raise ValueError("front-end parameters out of range")
        if nb != blob.n_inputs:
            raise ValueError("front-end has %d bands, the model takes %d inputs" % (nb, blob.n_inputs))
        m = n // 2
        self.frame, self.hop, self.bands, self.rate_hz = n, hop, nb, p[2]
        plan = ((b"FEWN", n, F_WIN, 2), (b"FECS", m + 1, F_COS, 2), (b"FESN", m + 1, F_SIN, 2),
                (b"FESL", m + 1, F_SLOT, 1), (b"FEWT", m + 1, F_WT, 2), (b"FELG", 128, F_LOG, 2))
        meta = array.array("i", [0] * META_WORDS)
        size = 0
        for tag, count, slot, item in plan:
            meta[slot] = size
            size += (count * item + 3) & ~3
        meta[F_REV] = size
        size += 2 * m
        self.arena = arena = bytearray(size)
        for tag, count, slot, item in plan:
            src, _ = blob.section(tag, count)
            arena[meta[slot]:meta[slot] + count * item] = blob.data[src:src + count * item]
        bits = 0
        while (1 << bits) < m:
            bits += 1
        for j in range(m):  # bit-reversal permutation of the M-point FFT
            r = 0
            for b in range(bits):
                r |= ((j >> b) & 1) << (bits - 1 - b)
            arena[meta[F_REV] + 2 * j] = r & 0xFF
            arena[meta[F_REV] + 2 * j + 1] = r >> 8
        for k in range(m + 1):
            if arena[meta[F_SLOT] + k] != SKIP and arena[meta[F_SLOT] + k] > nb:
                raise ValueError("front-end band slot out of range")
        meta[F_N], meta[F_M], meta[F_HOP], meta[F_B] = n, m, hop, nb
        meta[F_FLOOR] = p[8] + 32768
        self.meta = meta
        self.ring = array.array("h", [0] * n)
        self.z = array.array("H", [0] * n)
        self.energy = array.array("i", [0] * (nb + 2))
        self.out = array.array("h", [0] * nb)
        self.ram_bytes = size + 2 * n + 2 * n + 4 * (nb + 2) + 2 * nb + 4 * META_WORDS
        self.tw = None
        if THUMB_FFT:  # per twiddle W_M^t: c, s and the folded constants (frontend_thumb.py)
            self.tw = tw = bytearray(16 * (m // 2))
            cs, sn = blob.ints(b"FECS", m + 1), blob.ints(b"FESN", m + 1)
            base = 16384 + 32769 * 32768
            for t in range(m // 2):
                c, s = cs[2 * t], sn[2 * t]
                struct.pack_into("<4I", tw, 16 * t, c & 0xFFFFFFFF, s & 0xFFFFFFFF,
                                 (base - 32768 * (c + s)) & 0xFFFFFFFF, (base - 32768 * (c - s)) & 0xFFFFFFFF)
            self.z_addr = address(self.z)  # pyright: ignore[reportArgumentType]
            self.tw_addr = address(tw)  # pyright: ignore[reportArgumentType]
            # per used bin: P, Q offsets; c, s; the folded constants; slot, weight
            used = [k for k in range(m + 1) if arena[meta[F_SLOT] + k] != SKIP]
            self.bins = bins = bytearray(20 * len(used))
            wts = blob.ints(b"FEWT", m + 1)
            for i, k in enumerate(used):
                ka, kb = 4 * (k % m), 4 * ((m - k) % m)
                c, s = cs[k], sn[k]
                struct.pack_into("<5I", bins, 20 * i, ka | kb << 16, (c & 0xFFFF) | (s & 0xFFFF) << 16,
                                 (16384 - 65536 * c) & 0xFFFFFFFF, (16384 + 65536 * s) & 0xFFFFFFFF,
                                 4 * arena[meta[F_SLOT] + k] | wts[k] << 16)
            self.bins_addr = address(bins)  # pyright: ignore[reportArgumentType]
            self.bins_end = self.bins_addr + len(bins)
            self.energy_addr = address(self.energy)  # pyright: ignore[reportArgumentType]
            self.ram_bytes += len(tw) + len(bins)
        self.reset()

    def reset(self):
        """Forget the samples so far: the next frame comes after `frame` samples."""
        self.meta[F_POS] = 0
        self.meta[F_LEFT] = self.frame
        self.meta[F_DUE] = 0

    def feed(self, samples, start, n):
        """Take samples[start:n] (array 'h') until a frame is done; return the index
        after the last sample taken. When it is < n, or meta says so, call again."""
        return push(self.meta, self.ring, samples, start, n)  # pyright: ignore[reportArgumentType]

    def due(self):
        """A frame completed in the last feed() (the hop counter just restarted)."""
        return self.meta[F_DUE] == 1

    def compute(self, out):
        """The frame's features into out (array 'h', `bands` long). No allocation."""
        e = window(self.arena, self.meta, self.ring, self.z)  # pyright: ignore[reportArgumentType]
        if THUMB_FFT:
            THUMB_FFT(self.z_addr, self.tw_addr, self.frame >> 1)  # pyright: ignore[reportOptionalCall]
            THUMB_BANDS(self.z_addr, self.bins_addr, self.energy_addr, self.bins_end)  # pyright: ignore[reportOptionalCall]
        else:
            fft(self.arena, self.meta, self.z)  # pyright: ignore[reportArgumentType]
            accumulate(self.arena, self.meta, self.z, self.energy)  # pyright: ignore[reportArgumentType]
        log_bands(self.arena, self.meta, self.energy, out, e)  # pyright: ignore[reportArgumentType]


def of_blob(b):
    """The blob's front-end, or None for a model fed sensor readings directly."""
    return Frontend(b) if (b"FEPR", 255) in b.sections else None
