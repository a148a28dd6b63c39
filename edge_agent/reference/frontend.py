"""The integer spectral front-end: raw int16 samples -> int16 log band energies.

Host twin of device/frontend.py, bit for bit (docs/arithmetic.md, "Front-end").
Per frame of N samples (every `hop` samples): an int16 window, block
normalisation to 14 bits, an N/2-point complex fixed-point FFT (each stage
halves) and the real-FFT split, power, a triangular filterbank (each bin feeds
at most two adjacent bands), and an integer log2 in 1/256 units from a table,
with the block exponent taken back out. The output of one frame is what a
sensor reading is to a model without a front-end: the int16 `raw` per channel
that the blob's input quantization turns into int8.

Everything the device needs is in FrontendParams and travels in the blob.
Filterbank kinds: mel (audio), linear and log (vibration); the device does not
care which: it reads the per-bin band slot and weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

KINDS = {"mel": 1, "linear": 2, "log": 3}
VERSION = 1
WEIGHT_BITS = 14  # filterbank weights are Q14 (0..16384)
LOG_BITS = 7  # the log table's index: 7 bits of mantissa below the leading one
LOG_FRAC = 8  # features are log2 in 1/256 units
NORM_BITS = 14  # frames are normalised so |v| <= 2**14
SKIP = 255  # a bin no band uses
FRAMES = (64, 128, 256, 512, 1024)


@dataclass
class FrontendParams:
    kind: str = "mel"
    rate_hz: int = 16000
    frame: int = 512  # N, a power of two
    hop: int = 320
    bands: int = 32
    f_lo: float = 125.0
    f_hi: float = 7500.0
    floor: int = -4096  # features below this are raised to it (1/256 log2 units)
    # the tables the board reads (made by build(); stored in the blob)
    window: np.ndarray = field(default=None, repr=False)  # i16 [N], Q15
    cos: np.ndarray = field(default=None, repr=False)  # i16 [N/2 + 1], Q15 of cos(2 pi k / N)
    sin: np.ndarray = field(default=None, repr=False)  # i16 [N/2 + 1], Q15 of sin(2 pi k / N)
    slot: np.ndarray = field(default=None, repr=False)  # u8 [N/2 + 1]: band slot of each bin, or 255
    weight: np.ndarray = field(default=None, repr=False)  # i16 [N/2 + 1], Q14 share to slot
    log: np.ndarray = field(default=None, repr=False)  # i16 [128]: round(256 log2(1 + i/128))

    @property
    def bins(self) -> int:
        return self.frame // 2 + 1

    def check(self) -> "FrontendParams":
        if self.kind not in KINDS:
            raise UserError(f"frontend.kind: {self.kind!r} is not one of {' | '.join(KINDS)}")
        if self.frame not in FRAMES:
            raise UserError(f"frontend.frame: {self.frame} is not a power of two in 64..1024")
        if not 1 <= self.hop <= self.frame:
            raise UserError(f"frontend.hop: must be between 1 and frame ({self.frame})")
        if not 1 <= self.bands <= 64:
            raise UserError(f"frontend.bands: {self.bands} is not in 1..64")
        if not 0 <= self.f_lo < self.f_hi <= self.rate_hz / 2:
            raise UserError(f"frontend: need 0 <= f_lo < f_hi <= rate_hz / 2 ({self.rate_hz / 2:g})")
        if not -32768 <= self.floor <= 32767:
            raise UserError("frontend.floor must be an int16")
        return self

    def build(self) -> "FrontendParams":
        """Fill the tables from the settings (host only; the board reads them)."""
        self.check()
        n, m = self.frame, self.frame // 2
        k = np.arange(n)
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * k / n)  # periodic Hann
        self.window = np.clip(np.round(hann * 32768), 0, 32767).astype(np.int16)
        angle = 2 * np.pi * np.arange(m + 1) / n
        self.cos = np.clip(np.round(np.cos(angle) * 32768), -32768, 32767).astype(np.int16)
        self.sin = np.clip(np.round(np.sin(angle) * 32768), -32768, 32767).astype(np.int16)
        self.slot, self.weight = _filterbank(self)
        i = np.arange(1 << LOG_BITS)
        self.log = np.round(np.log2(1 + i / (1 << LOG_BITS)) * (1 << LOG_FRAC)).astype(np.int16)
        return self

    def same_as(self, other: "FrontendParams") -> bool:
        return (self.ints() == other.ints() and all(
            np.array_equal(getattr(self, t), getattr(other, t))
            for t in ("window", "cos", "sin", "slot", "weight", "log")))

    def ints(self) -> list[int]:
        """The scalar settings as the blob stores them (FEPR)."""
        return [VERSION, KINDS[self.kind], self.rate_hz, self.frame, self.hop, self.bands,
                int(round(self.f_lo)), int(round(self.f_hi)), self.floor]


def _edges(p: FrontendParams) -> np.ndarray:
    """B + 2 filter edges in Hz: band b rises from edge b, peaks at b+1, falls to b+2."""
    if p.kind == "mel":
        mel = lambda f: 1127.0 * np.log1p(f / 700.0)
        inv = lambda v: 700.0 * np.expm1(v / 1127.0)
        return inv(np.linspace(mel(p.f_lo), mel(p.f_hi), p.bands + 2))
    if p.kind == "log":
        lo = max(p.f_lo, p.rate_hz / p.frame)  # a log scale cannot start at 0 Hz
        return np.geomspace(lo, p.f_hi, p.bands + 2)
    return np.linspace(p.f_lo, p.f_hi, p.bands + 2)


def _filterbank(p: FrontendParams) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: the slot j (0..B) of the edge interval it lies in, and the Q14
    share that goes to slot j (band j-1's falling side); the rest goes to slot
    j+1 (band j's rising side). Slots 0 and B+1 are discarded."""
    edges = _edges(p)
    freq = np.arange(p.bins) * p.rate_hz / p.frame
    slot = np.full(p.bins, SKIP, np.uint8)
    weight = np.zeros(p.bins, np.int16)
    for k, f in enumerate(freq):
        if f < edges[0] or f >= edges[-1]:
            continue
        j = int(np.searchsorted(edges, f, side="right")) - 1  # edges[j] <= f < edges[j+1]
        share = (edges[j + 1] - f) / (edges[j + 1] - edges[j])
        slot[k] = j
        weight[k] = int(round(share * (1 << WEIGHT_BITS)))
    # a band no bin reaches would be a constant: tell the user instead
    reached = np.zeros(p.bands + 2, bool)
    used = slot != SKIP
    reached[slot[used]] |= weight[used] > 0
    reached[slot[used] + 1] |= weight[used] < (1 << WEIGHT_BITS)
    if not reached[1:-1].all():
        raise UserError(f"frontend: {p.bands} bands between {p.f_lo:g} and {p.f_hi:g} Hz are too narrow "
                        f"for a {p.frame}-sample frame (fewer bands, or a longer frame)")
    return slot, weight


# ---- the arithmetic (docs/arithmetic.md, "Front-end"), vectorised over frames ----

def _rs(v, s: int):
    return (v + (1 << (s - 1))) >> s


def _bitlen(v: np.ndarray) -> np.ndarray:
    """Number of bits of non-negative ints (0 -> 0), exactly."""
    v = np.asarray(v, np.int64)
    if v.size and v.max() >= 2**53:
        raise ValueError("bit length of a value past 2**53")
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)  # exact: v < 2**53


def _bit_reverse(m: int) -> np.ndarray:
    bits = m.bit_length() - 1
    return np.array([int(format(j, f"0{bits}b")[::-1], 2) if bits else 0 for j in range(m)], np.int64)


def frames_of(samples: np.ndarray, p: FrontendParams) -> np.ndarray:
    """[F, N] int64: every full frame of a sample stream, one every hop."""
    s = np.asarray(samples, np.int64)
    if len(s) < p.frame:
        return np.zeros((0, p.frame), np.int64)
    starts = np.arange(0, len(s) - p.frame + 1, p.hop)
    return s[starts[:, None] + np.arange(p.frame)]


def features(frames: np.ndarray, p: FrontendParams, trace: dict | None = None) -> np.ndarray:
    """int16-ranged features [F, B] (as int64) of frames [F, N] of int16 samples."""
    v, e = window_normalise(frames, p)
    rev = _bit_reverse(p.frame // 2)
    zr, zi = fft(v[:, 0::2][:, rev].copy(), v[:, 1::2][:, rev].copy(), p)
    return bands(zr, zi, e, p, trace)


def window_normalise(frames: np.ndarray, p: FrontendParams) -> tuple[np.ndarray, np.ndarray]:
    """Windowed frames normalised to |v| <= 2**14, and each frame's block exponent e."""
    x = np.clip(np.asarray(frames, np.int64), -32768, 32767)
    w = _rs(x * p.window.astype(np.int64), 15)
    peak = np.abs(w).max(axis=1)
    e = NORM_BITS - _bitlen(peak)  # -1 .. 14
    return np.where(e[:, None] >= 0, w << np.maximum(e, 0)[:, None], (w + 1) >> 1), e


def fft(zr: np.ndarray, zi: np.ndarray, p: FrontendParams) -> tuple[np.ndarray, np.ndarray]:
    """The M-point complex FFT of bit-reversed [F, M] values, each stage halving."""
    n, m = p.frame, p.frame // 2
    frames = len(zr)
    cos, sin = p.cos.astype(np.int64), p.sin.astype(np.int64)
    half = 1
    while half < m:  # radix-2 decimation in time; twiddle W_N^(2t), t = j * M / (2 half)
        j = np.arange(half)
        c, s = cos[j * (n // (2 * half))], sin[j * (n // (2 * half))]
        zr = zr.reshape(frames, -1, 2 * half)
        zi = zi.reshape(frames, -1, 2 * half)
        ar, ai, br, bi = zr[..., :half], zi[..., :half], zr[..., half:], zi[..., half:]
        tr = _rs(br * c + bi * s, 15)
        ti = _rs(bi * c - br * s, 15)
        zr = np.concatenate([(ar + tr + 1) >> 1, (ar - tr + 1) >> 1], axis=2).reshape(frames, m)
        zi = np.concatenate([(ai + ti + 1) >> 1, (ai - ti + 1) >> 1], axis=2).reshape(frames, m)
        half *= 2
    return zr, zi


def bands(zr: np.ndarray, zi: np.ndarray, e: np.ndarray, p: FrontendParams,
          trace: dict | None = None) -> np.ndarray:
    """Real-FFT split, power, filterbank and log of FFT outputs [F, M]."""
    m = p.frame // 2
    cos, sin = p.cos.astype(np.int64), p.sin.astype(np.int64)
    k = np.arange(m + 1)
    ar, ai = zr[:, k % m], zi[:, k % m]
    pr, pi = zr[:, (m - k) % m], zi[:, (m - k) % m]
    er, ei = ar + pr, ai - pi  # 2 Fe
    fr, fi = ai + pi, pr - ar  # 2 Fo
    tr = _rs(fr * cos + fi * sin, 15)
    ti = _rs(fi * cos - fr * sin, 15)
    xr, xi = (er + tr + 2) >> 2, (ei + ti + 2) >> 2
    power = xr * xr + xi * xi
    if trace is not None:
        trace.update(e=e, power=power)
    slot = p.slot.astype(np.int64)
    used = slot != SKIP
    wt = p.weight.astype(np.int64)[used]
    pu = power[:, used]
    c1 = (pu >> 14) * wt + (((pu & 16383) * wt) >> 14)
    # bin -> slot as a 0/1 matrix; float64 sums are exact: every term < 2**31, 257 terms < 2**53
    to_slot = np.zeros((int(used.sum()), p.bands + 2))
    to_slot[np.arange(len(to_slot)), slot[used]] = 1
    energy = (c1.astype(np.float64) @ to_slot
              + (pu - c1).astype(np.float64) @ np.roll(to_slot, 1, axis=1)).astype(np.int64)
    if trace is not None:
        trace["slots"] = energy
    energy = energy[:, 1:-1]
    if energy.size and energy.max() > 2**31 - 1:
        raise OverflowError("front-end band energy left int32")  # docs/arithmetic.md proves it cannot
    top = np.maximum(_bitlen(energy) - 1, 0)  # floor(log2), 0 for 0 and 1
    idx = np.where(top >= LOG_BITS, energy >> np.maximum(top - LOG_BITS, 0),
                   energy << np.maximum(LOG_BITS - top, 0)) & ((1 << LOG_BITS) - 1)
    out = (top << LOG_FRAC) + p.log.astype(np.int64)[idx] - (e[:, None] << (LOG_FRAC + 1))
    return np.maximum(out, p.floor)


def run(samples: np.ndarray, p: FrontendParams, batch: int = 4096) -> np.ndarray:
    """Features [F, B] of a whole sample stream, frames every hop samples; the
    frames are cut `batch` at a time (all at once, hours of audio take GBs)."""
    s = np.asarray(samples)  # frames_of widens each batch's slice to int64
    n = 0 if len(s) < p.frame else (len(s) - p.frame) // p.hop + 1
    out = np.zeros((n, p.bands), np.int64)
    for i in range(0, n, batch):
        k = min(batch, n - i)
        out[i:i + k] = features(frames_of(s[i * p.hop:(i + k - 1) * p.hop + p.frame], p), p)
    return out


def frame_sample_index(n_frames: int, p: FrontendParams) -> np.ndarray:
    """The sample index at which each frame completes (its last sample)."""
    return np.arange(n_frames) * p.hop + p.frame - 1


def default_params(kind: str = "mel") -> FrontendParams:
    return FrontendParams(kind=kind).build()


def from_ints(values, window, cos, sin, slot, weight, log) -> FrontendParams:
    """FrontendParams from the blob's sections (edge_agent/blob.py checks the counts)."""
    version, kind, rate, frame, hop, bands, f_lo, f_hi, floor = (int(v) for v in values)
    names = {code: name for name, code in KINDS.items()}
    if version != VERSION or kind not in names:
        raise ValueError(f"front-end version {version} / kind {kind} is not supported")
    p = FrontendParams(names[kind], rate, frame, hop, bands, float(f_lo), float(f_hi), floor,
                       window.astype(np.int16), cos.astype(np.int16), sin.astype(np.int16),
                       slot.astype(np.uint8), weight.astype(np.int16), log.astype(np.int16))
    p.check()
    return p


def frames_per_second(p: FrontendParams) -> float:
    return p.rate_hz / p.hop



def int8_features(qmodel, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sample stream through the blob's front-end and input quantization: the
    int8 model inputs [F, B] and the sample index at which each frame completed."""
    from .inputs import quantize_raw

    p = qmodel.frontend
    raw = np.array(samples, np.float64)  # one copy, rounded and clipped in place: hours of audio are GBs
    np.clip(np.round(raw, out=raw), -32768, 32767, out=raw)
    feats = run(raw.astype(np.int16), p)
    return quantize_raw(feats, qmodel.inputs, qmodel.x_bits), frame_sample_index(len(feats), p)
