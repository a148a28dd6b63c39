# model.bin reader for the board (spec: docs/format.md; host twin: edge_agent/blob.py).
# Checks magic, version, size and CRC32 before anything is used, so a damaged
# file raises BlobError and the caller keeps the model it already has.
import struct

try:
    from binascii import crc32 as _binascii_crc32
except ImportError:  # a port built without binascii.crc32
    _binascii_crc32 = None

MAGIC = b"EAQM"
VERSION = 1
HEADER_SIZE = 32
ENTRY_SIZE = 16
NO_LAYER = 255
ITEM_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 1}


class BlobError(Exception):
    pass


def crc32(data):
    """CRC-32 (IEEE) of data; binascii's where the port has it (link.py shares it)."""
    if _binascii_crc32:
        return _binascii_crc32(data) & 0xFFFFFFFF
    crc = 0xFFFFFFFF  # bitwise, only for ports built without binascii.crc32
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def check(data):
    """Validate framing and CRC of a whole blob; return the header tuple."""
    n = len(data)
    if n < HEADER_SIZE + 4:
        raise BlobError("model blob truncated: %d bytes is shorter than a header" % n)
    fields = struct.unpack_from("<4sHHIHHHBBBBHII", data, 0)
    if fields[0] != MAGIC:
        raise BlobError("not an edge-agent model blob (bad magic)")
    if fields[1] != VERSION:
        raise BlobError("model blob format version %d is not supported" % fields[1])
    total = fields[3]
    if n < total:
        raise BlobError("model blob truncated: %d of %d bytes" % (n, total))
    if n > total:
        raise BlobError("model blob has %d unexpected bytes after its end" % (n - total))
    want = struct.unpack_from("<I", data, total - 4)[0]
    body = memoryview(data)[: total - 4]
    if crc32(body) != want:
        raise BlobError("model blob CRC mismatch: the file is corrupt")
    if fields[2] != HEADER_SIZE:
        raise BlobError("model blob header size %d is not %d" % (fields[2], HEADER_SIZE))
    return fields


class Blob:
    """Header fields and the sections, as memoryviews into the checked bytes."""

    def __init__(self, data):
        f = check(data)
        self.data = data
        self.crc = struct.unpack_from("<I", data, f[3] - 4)[0]  # names the model in messages
        self.n_inputs, self.hidden, self.n_classes = f[4], f[5], f[6]
        self.n_layers, self.lut_shift, self.out_frac = f[7], f[8], f[9]
        total = f[3]
        self.sections = {}
        for i in range(f[11]):
            pos = f[12] + i * ENTRY_SIZE
            if pos + ENTRY_SIZE > total - 4:
                raise BlobError("model blob directory runs past the end of the file")
            tag, code, layer, _, offset, count = struct.unpack_from("<4sBBHII", data, pos)
            size = ITEM_SIZE.get(code)
            if size is None:
                raise BlobError("model blob section %s has unknown type %d" % (tag, code))
            if offset % 4 or offset + count * size > total - 4:
                raise BlobError("model blob section %s lies outside the file" % tag)
            self.sections[(tag, layer)] = (offset, count, code)

    def section(self, tag, count, layer=NO_LAYER):
        """(byte offset, element size) of a required section with `count` elements."""
        entry = self.sections.get((tag, layer))
        if entry is None:
            raise BlobError("model blob lacks section %s" % tag.decode())
        if entry[1] != count:
            raise BlobError("model blob section %s has %d values, expected %d" % (tag.decode(), entry[1], count))
        return entry[0], ITEM_SIZE[entry[2]]

    def ints(self, tag, count, layer=NO_LAYER):
        """A section's values as a list of Python ints (load time only)."""
        offset, size = self.section(tag, count, layer)
        code = self.sections[(tag, layer)][2]
        fmt = {1: "b", 2: "B", 3: "h", 4: "i"}[code]
        return struct.unpack_from("<%d%s" % (count, fmt), self.data, offset)

    def labels(self):
        entry = self.sections.get((b"NAME", NO_LAYER))
        if entry is None or entry[1] == 0:
            return [str(k) for k in range(self.n_classes)]
        names = str(bytes(self.data[entry[0]:entry[0] + entry[1]]), "utf-8").split("\n")
        if len(names) != self.n_classes:
            raise BlobError("model blob names %d labels for %d classes" % (len(names), self.n_classes))
        return names


def load(path):
    with open(path, "rb") as fh:
        return Blob(fh.read())
