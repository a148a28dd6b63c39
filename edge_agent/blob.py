"""model.bin: the quantized model, packed for the board (spec: docs/format.md).

A 32-byte header, a directory of tagged sections, the sections (each 4-byte
aligned, little-endian), then a CRC32 of everything before it. The same reader
logic lives in device/blob.py.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .fileio import write_bytes_atomic

if TYPE_CHECKING:
    from .reference.frontend import FrontendParams

MAGIC = b"EAQM"
VERSION = 1
HEADER = struct.Struct("<4sHHIHHHBBBBHII")  # 32 bytes
ENTRY = struct.Struct("<4sBBHII")  # 16 bytes
NO_LAYER = 255
ALIGN = 4

DTYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.int32, 5: np.float32, 6: np.uint8}
DTYPE_CODES = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3,
               np.dtype(np.int32): 4, np.dtype(np.float32): 5}
UTF8 = 6


class BlobError(UserError):
    """model.bin is damaged, from another version, or not a model at all."""


@dataclass
class InputQuant:
    """raw reading (int) -> model input: clamp((raw * mult + bias) >> shift) to int8,
    or to int16 where the model takes int16 inputs (QuantModel.x_bits)."""

    raw_per_unit: np.ndarray  # f32 [C]: host-side float -> raw integer reading
    mult: np.ndarray  # i32 [C]
    bias: np.ndarray  # i32 [C] (zero point and rounding folded in)
    shift: np.ndarray  # u8 [C]
    scale: np.ndarray  # f32 [C]: real units per input step (reports only)
    zero: np.ndarray  # i32 [C]: the inputs' zero point (reports only)


@dataclass
class QuantLayer:
    wx: np.ndarray  # i8 [4H, I]
    wh: np.ndarray  # i8 [4H, H]
    bx: np.ndarray  # i32 [4H]: bias and input zero point, in input-accumulator units
    mx: np.ndarray  # i32 [4H]: input accumulator -> Q3.12
    sx: np.ndarray  # u8 [4H]
    mh: np.ndarray  # i32 [4H]: recurrent accumulator -> Q3.12
    sh: np.ndarray  # u8 [4H]
    c_frac: int  # cell state is int16 with scale 2**-c_frac
    px: np.ndarray | None = None  # u8 [4H]: input accumulator pre-shift (16-bit state only; None: 0)
    ph: np.ndarray | None = None  # u8 [4H]: recurrent accumulator pre-shift (16-bit state only)


@dataclass
class QuantHead:
    w: np.ndarray  # i8 [K, H]
    b: np.ndarray  # i32 [K]
    m: np.ndarray  # i32 [K]: accumulator -> logits with scale 2**-out_frac
    s: np.ndarray  # u8 [K]
    out_frac: int
    p: np.ndarray | None = None  # u8 [K]: accumulator pre-shift (16-bit state only; None: 0)


HEAD_KINDS = ("classify", "anomaly")  # header byte 21: 0 classifier, 1 anomaly (docs/format.md)
# header word 28, the state format: 0 int8 h (2**-7); 1 int16 h (2**-15); 2 int16 h and
# int16 inputs into layer 0 (TFLM's 16x8 scheme throughout). Indexed by it:
STATE_BITS = (8, 16, 16)  # the hidden state's width
INPUT_BITS = (8, 8, 16)  # the width of layer 0's inputs
WIDE_MAX_HIDDEN = 128  # H (and, with int16 inputs, C): the board's int32 proof of its int16 matvec (docs/format.md)


def state_format(h_bits: int, x_bits: int) -> int:
    """Header word 28 for a state width and an input width (STATE_BITS, INPUT_BITS)."""
    for code, pair in enumerate(zip(STATE_BITS, INPUT_BITS)):
        if pair == (h_bits, x_bits):
            return code
    raise ValueError(f"no state format holds an int{h_bits} state with int{x_bits} inputs")


def h_scale(h_bits: int) -> float:
    """Real value of one step of an h_bits hidden state: 2**-7 or 2**-15."""
    return 2.0 ** -(h_bits - 1)


@dataclass
class AnomalyHead:
    """The anomaly head's scoring constants (docs/arithmetic.md, "Anomaly score");
    the dense head then predicts the next frame, one row per input channel."""

    weights: np.ndarray  # i32 [C]: per-channel error weight, Q.6
    threshold: int  # smoothed score at or above which an anomaly starts
    smooth_shift: int  # EMA factor 2**-smooth_shift (0..10)
    window: int  # the state is reset every `window` steps
    warmup: int  # predictions from fewer steps of a window are not scored


@dataclass
class QuantModel:
    inputs: InputQuant
    layers: list[QuantLayer]
    head: QuantHead
    sigmoid: np.ndarray  # i16 LUTs, see edge_agent/quant/lut.py
    tanh: np.ndarray
    exp: np.ndarray
    lut_shift: int
    class_names: list[str]
    fingerprint: bytes = b""  # of the float model it came from (FloatModel.fingerprint)
    anomaly: AnomalyHead | None = None  # None: a classifier
    frontend: FrontendParams | None = None  # None: the model is fed sensor readings (no front-end)
    h_bits: int = 8  # the hidden state: int8 on 2**-7, or int16 on 2**-15 (docs/arithmetic.md)
    x_bits: int = 8  # layer 0's inputs: int8, or int16 (with a 16-bit state only: state format 2)

    @property
    def h_scale(self) -> float:
        """Real value of one step of h."""
        return h_scale(self.h_bits)

    @property
    def task(self) -> str:
        return "classify" if self.anomaly is None else "anomaly"

    @property
    def n_inputs(self) -> int:
        return self.layers[0].wx.shape[1]

    @property
    def hidden(self) -> int:
        return self.layers[0].wh.shape[1]

    @property
    def n_classes(self) -> int:
        return self.head.w.shape[0]


# ---- writing ---------------------------------------------------------------------

def _sections(model: QuantModel):
    inp = model.inputs
    yield b"INRU", NO_LAYER, inp.raw_per_unit.astype(np.float32)
    yield b"INMU", NO_LAYER, inp.mult.astype(np.int32)
    yield b"INBI", NO_LAYER, inp.bias.astype(np.int32)
    yield b"INSH", NO_LAYER, inp.shift.astype(np.uint8)
    yield b"INSC", NO_LAYER, inp.scale.astype(np.float32)
    yield b"INZP", NO_LAYER, inp.zero.astype(np.int32)
    yield b"SIGM", NO_LAYER, model.sigmoid.astype(np.int16)
    yield b"TANH", NO_LAYER, model.tanh.astype(np.int16)
    yield b"EXPN", NO_LAYER, model.exp.astype(np.int16)
    for k, layer in enumerate(model.layers):
        yield b"WX__", k, layer.wx.astype(np.int8)
        yield b"WH__", k, layer.wh.astype(np.int8)
        yield b"BX__", k, layer.bx.astype(np.int32)
        yield b"MX__", k, layer.mx.astype(np.int32)
        yield b"SX__", k, layer.sx.astype(np.uint8)
        yield b"MH__", k, layer.mh.astype(np.int32)
        yield b"SH__", k, layer.sh.astype(np.uint8)
        yield b"CFRC", k, np.array([layer.c_frac], dtype=np.uint8)
        if model.h_bits == 16:
            yield b"PX__", k, pre_shifts(layer.px, layer.bx.size)
            yield b"PH__", k, pre_shifts(layer.ph, layer.bx.size)
    yield b"WD__", NO_LAYER, model.head.w.astype(np.int8)
    yield b"BD__", NO_LAYER, model.head.b.astype(np.int32)
    yield b"MD__", NO_LAYER, model.head.m.astype(np.int32)
    yield b"SD__", NO_LAYER, model.head.s.astype(np.uint8)
    if model.h_bits == 16:
        yield b"PD__", NO_LAYER, pre_shifts(model.head.p, model.head.b.size)
    yield b"NAME", NO_LAYER, "\n".join(model.class_names).encode("utf-8")
    yield b"FPRT", NO_LAYER, model.fingerprint
    if model.anomaly is not None:
        a = model.anomaly
        yield b"ANWT", NO_LAYER, a.weights.astype(np.int32)
        yield b"ANPR", NO_LAYER, np.array([a.threshold, a.smooth_shift, a.window, a.warmup], np.int32)
    if model.frontend is not None:  # docs/format.md, "Front-end sections"
        fe = model.frontend
        yield b"FEPR", NO_LAYER, np.array(fe.ints(), np.int32)
        yield b"FEWN", NO_LAYER, fe.window.astype(np.int16)
        yield b"FECS", NO_LAYER, fe.cos.astype(np.int16)
        yield b"FESN", NO_LAYER, fe.sin.astype(np.int16)
        yield b"FESL", NO_LAYER, fe.slot.astype(np.uint8)
        yield b"FEWT", NO_LAYER, fe.weight.astype(np.int16)
        yield b"FELG", NO_LAYER, fe.log.astype(np.int16)


def pre_shifts(p: np.ndarray | None, rows: int) -> np.ndarray:
    """The pre-shifts of `rows` accumulators as u8 (None: none, all 0)."""
    return np.zeros(rows, np.uint8) if p is None else np.asarray(p).astype(np.uint8)


def _pad(n: int) -> int:
    return -n % ALIGN


def pack(model: QuantModel) -> bytes:
    sections = list(_sections(model))
    data_start = HEADER.size + ENTRY.size * len(sections)
    directory, body = [], bytearray()
    offset = data_start
    for tag, layer, value in sections:
        if isinstance(value, bytes):
            code, raw, count = UTF8, value, len(value)
        else:
            code, raw, count = DTYPE_CODES[value.dtype], value.astype(value.dtype.newbyteorder("<")).tobytes(), value.size
        directory.append(ENTRY.pack(tag, code, layer, 0, offset, count))
        body += raw + bytes(_pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    total = offset + 4
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, total, model.n_inputs, model.hidden,
                         model.n_classes, len(model.layers), model.lut_shift,
                         model.head.out_frac, HEAD_KINDS.index(model.task), len(sections), HEADER.size,
                         state_format(model.h_bits, model.x_bits))
    blob = header + b"".join(directory) + bytes(body)
    return blob + struct.pack("<I", zlib.crc32(blob))


def write(model: QuantModel, path: str | Path) -> None:
    write_bytes_atomic(path, pack(model))


# ---- reading ---------------------------------------------------------------------

def check(blob: bytes) -> tuple:
    """Validate framing and CRC; return the parsed header fields."""
    if len(blob) < HEADER.size + 4:
        raise BlobError(f"model blob truncated: {len(blob)} bytes is shorter than a header")
    fields = HEADER.unpack_from(blob)
    magic, version, header_size, total = fields[:4]
    if magic != MAGIC:
        raise BlobError(f"not an edge-agent model blob (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise BlobError(f"model blob format version {version} is not supported (this tool reads {VERSION})")
    if len(blob) < total:
        raise BlobError(f"model blob truncated: {len(blob)} of {total} bytes")
    if len(blob) > total:
        raise BlobError(f"model blob has {len(blob) - total} unexpected bytes after its end")
    (crc,) = struct.unpack_from("<I", blob, total - 4)
    if zlib.crc32(blob[: total - 4]) != crc:
        raise BlobError("model blob CRC mismatch: the file is corrupt")
    if header_size != HEADER.size:
        raise BlobError(f"model blob header size {header_size} is not {HEADER.size}")
    return fields


# ---- limits: docs/format.md "Limits", checked the same way by device/blob.py ------

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
F32_POSITIVE = "f32+"  # a finite float32 above zero
# header field -> (lo, hi)
HEADER_LIMITS = {"C": (1, 2048), "H": (1, 2048), "K": (1, 4096), "L": (1, 3), "lut_shift": (1, 15),
                 "out_frac": (0, 30), "state format": (0, len(STATE_BITS) - 1)}
# tag -> (element type, per layer, lo, hi); lo/hi None: any value of the type
LIMITS = {
    b"INRU": (5, False, F32_POSITIVE, None), b"INMU": (4, False, 1, INT32_MAX),
    b"INBI": (4, False, None, None), b"INSH": (2, False, 1, 30), b"INSC": (5, False, F32_POSITIVE, None),
    b"INZP": (4, False, None, None),  # asymmetric: a range not holding 0 puts it past int8
    b"SIGM": (3, False, -32767, 32767), b"TANH": (3, False, -32767, 32767), b"EXPN": (3, False, -32767, 32767),
    b"WX__": (1, True, None, None), b"WH__": (1, True, None, None), b"BX__": (4, True, None, None),
    b"MX__": (4, True, 1, INT32_MAX), b"SX__": (2, True, 1, 30), b"MH__": (4, True, 1, INT32_MAX),
    b"SH__": (2, True, 1, 30), b"CFRC": (2, True, 0, 15),
    b"PX__": (2, True, 0, 30), b"PH__": (2, True, 0, 30),  # 16-bit state only
    b"WD__": (1, False, None, None), b"BD__": (4, False, None, None), b"MD__": (4, False, 1, INT32_MAX),
    b"SD__": (2, False, 1, 30), b"PD__": (2, False, 0, 30),
    b"NAME": (6, False, None, None), b"FPRT": (6, False, None, None),
}
CODE_OF = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
           np.dtype(np.float32): 5}


def _fits_int32(bound: np.ndarray, mult: np.ndarray, shift: np.ndarray, pre: np.ndarray | None = None) -> bool:
    """docs/arithmetic.md, "Why nothing overflows int32" and "16-bit hidden state": per row,
    bound + 2^(P-1) <= 2^31 - 1 and its pre-shifted bound * M + 2^(S-1) <= 2^31 - 1 (P = 0: none)."""
    from .quant.fixedpoint import prescaled_bound

    pre = np.zeros(len(bound), np.int64) if pre is None else pre
    for b, m, s, p in zip(bound, mult, shift, pre):
        if int(b) + ((1 << int(p)) >> 1) > INT32_MAX:
            return False
        if prescaled_bound(int(b), int(p)) * int(m) + (1 << (int(s) - 1)) > INT32_MAX:
            return False
    return True


def check_limits(fields: tuple, sections: dict) -> None:
    """Every documented range and type (docs/format.md, "Limits"), before anything is used."""
    n_in, hidden, n_cls, n_layers, lut_shift, out_frac = fields[4:10]
    state = fields[13]
    for (name, (lo, hi)), value in zip(HEADER_LIMITS.items(),
                                       (n_in, hidden, n_cls, n_layers, lut_shift, out_frac, state)):
        if not lo <= value <= hi:
            raise BlobError(f"model blob header {name} = {value} is outside {lo}..{hi}")
    wide = STATE_BITS[state] == 16
    if wide and hidden > WIDE_MAX_HIDDEN:
        raise BlobError(f"model blob header H = {hidden} is outside 1..{WIDE_MAX_HIDDEN} (16-bit state)")
    if INPUT_BITS[state] == 16 and n_in > WIDE_MAX_HIDDEN:
        raise BlobError(f"model blob header C = {n_in} is outside 1..{WIDE_MAX_HIDDEN} (int16 inputs)")
    if wide and fields[10] == HEAD_KINDS.index("anomaly"):
        raise BlobError("model blob has an anomaly head with a 16-bit state (anomaly models keep 8 bits)")
    for (tag, layer), value in sections.items():
        limit = LIMITS.get(tag)
        if limit is None or (limit[1] and layer >= n_layers) or (not limit[1] and layer != NO_LAYER):
            continue  # unknown, or not one this model uses: skipped
        code, _, lo, hi = limit
        where = f"{tag.decode(errors='replace')}" + (f" of layer {layer}" if limit[1] else "")
        got = UTF8 if isinstance(value, bytes) else CODE_OF.get(value.dtype)
        if got != code:
            raise BlobError(f"model blob section {where} has element type {got}, expected {code}")
        if lo == F32_POSITIVE:
            if not np.all(np.isfinite(value) & (value > 0)):
                raise BlobError(f"model blob section {where} holds a value that is not a finite positive number")
        elif lo is not None and value.size and (int(value.min()) < lo or int(value.max()) > hi):
            raise BlobError(f"model blob section {where} holds a value outside {lo}..{hi}")
    # the int32 proof, from the weights stored (the reference checks it again as it runs)
    abs_sum = lambda w, rows: np.abs(w.astype(np.int64)).reshape(rows, -1).sum(axis=1)
    h_bound = 1 << (STATE_BITS[state] - 1)  # |h| at most
    x_bound = 1 << (INPUT_BITS[state] - 1)  # |layer 0's inputs| at most
    pre = (lambda tag, k, rows: sections.get((tag, k)) if wide else np.zeros(rows, np.int64))
    for k in range(n_layers):
        rows = 4 * hidden
        width = {b"WX__": n_in if k == 0 else hidden, b"WH__": hidden}
        sec = {t: sections.get((t, k)) for t in (b"WX__", b"WH__", b"BX__", b"MX__", b"SX__", b"MH__", b"SH__")}
        sec[b"PX__"], sec[b"PH__"] = pre(b"PX__", k, rows), pre(b"PH__", k, rows)
        if any(v is None or v.size != rows * width.get(t, 1) for t, v in sec.items()):
            continue  # missing or miscounted: unpack names it
        bound_x = np.abs(sec[b"BX__"].astype(np.int64)) + (x_bound if k == 0 else h_bound) * abs_sum(sec[b"WX__"], rows)
        bound_h = h_bound * abs_sum(sec[b"WH__"], rows)
        if not (_fits_int32(bound_x, sec[b"MX__"], sec[b"SX__"], sec[b"PX__"])
                and _fits_int32(bound_h, sec[b"MH__"], sec[b"SH__"], sec[b"PH__"])):
            raise BlobError(f"model blob layer {k}: a gate's rescaling can overflow int32")
    head = [sections.get((t, NO_LAYER)) for t in (b"WD__", b"BD__", b"MD__", b"SD__")] + [pre(b"PD__", NO_LAYER, n_cls)]
    if all(v is not None for v in head) and head[0].size == n_cls * hidden and \
            all(v.size == n_cls for v in head[1:]):
        bound = np.abs(head[1].astype(np.int64)) + h_bound * abs_sum(head[0], n_cls)
        if not _fits_int32(bound, head[2], head[3], head[4]):
            raise BlobError("model blob head: a class's rescaling can overflow int32")
    inputs = [sections.get((t, NO_LAYER)) for t in (b"INMU", b"INBI")]
    if all(v is not None and v.size == n_in for v in inputs):
        if int((32768 * inputs[0].astype(np.int64) + np.abs(inputs[1].astype(np.int64))).max()) > INT32_MAX:
            raise BlobError("model blob input quantization can overflow int32")


def unpack(blob: bytes) -> QuantModel:
    fields = check(blob)
    (_, _, _, total, n_in, hidden, n_cls, n_layers, lut_shift, out_frac, head_kind,
     n_sections, dir_offset, state) = fields
    if head_kind >= len(HEAD_KINDS):
        raise BlobError(f"model blob head kind {head_kind} is unknown (0 classifier, 1 anomaly)")
    sections: dict[tuple[bytes, int], object] = {}
    for i in range(n_sections):
        pos = dir_offset + i * ENTRY.size
        if pos + ENTRY.size > total - 4:
            raise BlobError("model blob directory runs past the end of the file")
        tag, code, layer, _, offset, count = ENTRY.unpack_from(blob, pos)
        if code not in DTYPES:
            raise BlobError(f"model blob section {tag!r} has unknown type code {code}")
        dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        end = offset + count * dtype.itemsize
        if offset % ALIGN or end > total - 4:
            raise BlobError(f"model blob section {tag!r} lies outside the file or is misaligned")
        raw = blob[offset:end]
        sections[(tag, layer)] = bytes(raw) if code == UTF8 else \
            np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))

    check_limits(fields, sections)

    def get(tag: bytes, shape: tuple, layer: int = NO_LAYER) -> np.ndarray:
        value = sections.get((tag, layer))
        where = "" if layer == NO_LAYER else f" of layer {layer}"
        if value is None:
            raise BlobError(f"model blob lacks section {tag.decode()}{where}")
        if value.size != int(np.prod(shape)):
            raise BlobError(f"model blob section {tag.decode()}{where} has {value.size} values, expected {int(np.prod(shape))}")
        return value.reshape(shape)

    n_table = (1 << (16 - lut_shift)) + 1 if 1 <= lut_shift <= 15 else 0
    if not n_table:
        raise BlobError(f"model blob lut_shift {lut_shift} is out of range")
    inputs = InputQuant(*(get(t, (n_in,)) for t in (b"INRU", b"INMU", b"INBI", b"INSH", b"INSC", b"INZP")))
    h_bits = STATE_BITS[state]  # checked by check_limits
    pre = (lambda tag, rows, layer=NO_LAYER: get(tag, (rows,), layer)) if h_bits == 16 else (lambda *_: None)
    layers = []
    for k in range(n_layers):
        width = n_in if k == 0 else hidden
        rows = 4 * hidden
        layers.append(QuantLayer(
            get(b"WX__", (rows, width), k), get(b"WH__", (rows, hidden), k),
            get(b"BX__", (rows,), k), get(b"MX__", (rows,), k), get(b"SX__", (rows,), k),
            get(b"MH__", (rows,), k), get(b"SH__", (rows,), k), int(get(b"CFRC", (1,), k)[0]),
            pre(b"PX__", rows, k), pre(b"PH__", rows, k)))
    head = QuantHead(get(b"WD__", (n_cls, hidden)), get(b"BD__", (n_cls,)),
                     get(b"MD__", (n_cls,)), get(b"SD__", (n_cls,)), out_frac, pre(b"PD__", n_cls))
    try:
        names = sections.get((b"NAME", NO_LAYER), b"").decode("utf-8")
    except UnicodeDecodeError:
        raise BlobError("model blob labels are not UTF-8") from None
    labels = names.split("\n") if names else [str(k) for k in range(n_cls)]
    if len(labels) != n_cls:
        raise BlobError(f"model blob names {len(labels)} labels for {n_cls} classes")
    anomaly = None
    if HEAD_KINDS[head_kind] == "anomaly":
        if n_cls != n_in:
            raise BlobError(f"model blob anomaly head predicts {n_cls} values for {n_in} input channels")
        threshold, shift, window, warmup = (int(v) for v in get(b"ANPR", (4,)))
        if not (0 <= shift <= 10 and 1 <= warmup <= window and threshold >= 0):
            raise BlobError("model blob anomaly parameters are out of range")
        weights = get(b"ANWT", (n_in,))
        if weights.min() < 0 or weights.max() > 255:
            raise BlobError("model blob anomaly weights are out of range (0..255)")
        anomaly = AnomalyHead(weights, threshold, shift, window, warmup)
    frontend = _frontend(get, sections, n_in) if (b"FEPR", NO_LAYER) in sections else None
    return QuantModel(inputs, layers, head, get(b"SIGM", (n_table,)), get(b"TANH", (n_table,)),
                      get(b"EXPN", (n_table,)), lut_shift, labels,
                      sections.get((b"FPRT", NO_LAYER), b""), anomaly, frontend, h_bits, INPUT_BITS[state])


def _frontend(get, sections, n_in: int):
    """The front-end sections (docs/format.md), checked as the board checks them."""
    from .reference.frontend import FRAMES, SKIP, from_ints

    values = get(b"FEPR", (9,))
    version, frame, bands = int(values[0]), int(values[3]), int(values[5])
    if version != 1:
        raise BlobError(f"model blob front-end version {version} is not supported (this tool reads 1)")
    if frame not in FRAMES:
        raise BlobError(f"model blob front-end frame {frame} is not a power of two in 64..1024")
    if bands != n_in:
        raise BlobError(f"model blob front-end has {bands} bands, the model takes {n_in} inputs")
    bins = frame // 2 + 1
    slot = get(b"FESL", (bins,))
    weight = get(b"FEWT", (bins,))
    if np.any((slot != SKIP) & (slot > bands)) or weight.min() < 0 or weight.max() > 1 << 14:
        raise BlobError("model blob front-end filterbank is out of range")
    try:
        return from_ints(values, get(b"FEWN", (frame,)), get(b"FECS", (bins,)), get(b"FESN", (bins,)),
                         slot, weight, get(b"FELG", (128,)))
    except (ValueError, UserError) as exc:
        raise BlobError(f"model blob front-end: {exc}") from None


def expect_task(model: QuantModel, task: str, path) -> QuantModel:
    """Refuse a classifier blob where an anomaly one is expected, and vice versa."""
    if model.task != task:
        raise BlobError(f"{path}: this is {'an anomaly' if model.task == 'anomaly' else 'a classifier'} "
                        f"model blob; {'an anomaly' if task == 'anomaly' else 'a classifier'} model is expected here")
    return model


def read(path: str | Path) -> QuantModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: blob not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read blob ({exc.strerror})") from None
    try:
        return unpack(data)
    except BlobError as exc:
        raise BlobError(f"{path}: {exc}") from None
