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

import numpy as np

from .errors import UserError
from .fileio import write_bytes_atomic

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
    """raw reading (int) -> int8: clamp((raw * mult + bias) >> shift, -128, 127)."""

    raw_per_unit: np.ndarray  # f32 [C]: host-side float -> raw integer reading
    mult: np.ndarray  # i32 [C]
    bias: np.ndarray  # i32 [C] (zero point and rounding folded in)
    shift: np.ndarray  # u8 [C]
    scale: np.ndarray  # f32 [C]: real units per int8 step (reports only)
    zero: np.ndarray  # i32 [C]: int8 zero point (reports only)


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


@dataclass
class QuantHead:
    w: np.ndarray  # i8 [K, H]
    b: np.ndarray  # i32 [K]
    m: np.ndarray  # i32 [K]: accumulator -> logits with scale 2**-out_frac
    s: np.ndarray  # u8 [K]
    out_frac: int


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
    yield b"WD__", NO_LAYER, model.head.w.astype(np.int8)
    yield b"BD__", NO_LAYER, model.head.b.astype(np.int32)
    yield b"MD__", NO_LAYER, model.head.m.astype(np.int32)
    yield b"SD__", NO_LAYER, model.head.s.astype(np.uint8)
    yield b"NAME", NO_LAYER, "\n".join(model.class_names).encode("utf-8")
    yield b"FPRT", NO_LAYER, model.fingerprint


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
                         model.head.out_frac, 0, len(sections), HEADER.size, 0)
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


def unpack(blob: bytes) -> QuantModel:
    fields = check(blob)
    (_, _, _, total, n_in, hidden, n_cls, n_layers, lut_shift, out_frac, _,
     n_sections, dir_offset, _) = fields
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
    layers = []
    for k in range(n_layers):
        width = n_in if k == 0 else hidden
        rows = 4 * hidden
        layers.append(QuantLayer(
            get(b"WX__", (rows, width), k), get(b"WH__", (rows, hidden), k),
            get(b"BX__", (rows,), k), get(b"MX__", (rows,), k), get(b"SX__", (rows,), k),
            get(b"MH__", (rows,), k), get(b"SH__", (rows,), k), int(get(b"CFRC", (1,), k)[0])))
    head = QuantHead(get(b"WD__", (n_cls, hidden)), get(b"BD__", (n_cls,)),
                     get(b"MD__", (n_cls,)), get(b"SD__", (n_cls,)), out_frac)
    try:
        names = sections.get((b"NAME", NO_LAYER), b"").decode("utf-8")
    except UnicodeDecodeError:
        raise BlobError("model blob labels are not UTF-8") from None
    labels = names.split("\n") if names else [str(k) for k in range(n_cls)]
    if len(labels) != n_cls:
        raise BlobError(f"model blob names {len(labels)} labels for {n_cls} classes")
    return QuantModel(inputs, layers, head, get(b"SIGM", (n_table,)), get(b"TANH", (n_table,)),
                      get(b"EXPN", (n_table,)), lut_shift, labels,
                      sections.get((b"FPRT", NO_LAYER), b""))


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
