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
HEAD_KINDS = ("classify", "anomaly")  # header byte 21
# header word 28, the state format: 0 int8 h; 1 int16 h; 2 int16 h and int16 inputs. Indexed by it:
STATE_BITS = (8, 16, 16)  # the hidden state's width
INPUT_BITS = (8, 8, 16)  # layer 0's inputs' width
WIDE_MAX_HIDDEN = 128  # H (and C of int16 inputs): the int32 proof of kernels.matvec16_viper


class BlobError(Exception):
    pass


# Limits: docs/format.md "Limits", checked the same way by edge_agent/blob.py.
INT32_MAX = 0x7FFFFFFF
F32_POSITIVE = -1  # lo marker: a finite float32 above zero (checked on its bits: no float here)
# header fields 4..9 and 13: C, H, K, L, lut_shift, out_frac, state format
HEADER_LIMITS = ((1, 2048), (1, 2048), (1, 4096), (1, 3), (1, 15), (0, 30), (0, 2))
HEADER_NAMES = ("C", "H", "K", "L", "lut_shift", "out_frac", "state format")
HEADER_FIELDS = (4, 5, 6, 7, 8, 9, 13)
# tag -> (element type, per layer, lo, hi); lo None: any value of the type
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
        if f[10] >= len(HEAD_KINDS):
            raise BlobError("model blob head kind %d is unknown" % f[10])
        self.task = HEAD_KINDS[f[10]]  # classify | anomaly
        known = f[13] < len(STATE_BITS)  # else refused by _check_limits
        self.h_bits = STATE_BITS[f[13]] if known else 0
        self.x_bits = INPUT_BITS[f[13]] if known else 0
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
        self._check_limits(f)

    def _check_limits(self, f):
        """Every documented range and type, at load time (no timestep runs before it)."""
        for i in range(len(HEADER_FIELDS)):
            lo, hi = HEADER_LIMITS[i]
            v = f[HEADER_FIELDS[i]]
            if not lo <= v <= hi:
                raise BlobError("model blob header %s = %d is outside %d..%d" % (HEADER_NAMES[i], v, lo, hi))
        wide = self.h_bits == 16
        if wide and self.hidden > WIDE_MAX_HIDDEN:
            raise BlobError("model blob header H = %d is outside 1..%d (16-bit state)" % (self.hidden, WIDE_MAX_HIDDEN))
        if self.x_bits == 16 and self.n_inputs > WIDE_MAX_HIDDEN:
            raise BlobError("model blob header C = %d is outside 1..%d (int16 inputs)" % (self.n_inputs, WIDE_MAX_HIDDEN))
        if wide and self.task == "anomaly":
            raise BlobError("model blob has an anomaly head with a 16-bit state (anomaly models keep 8 bits)")
        for key in self.sections:
            tag, layer = key
            limit = LIMITS.get(tag)
            if limit is None or (limit[1] and layer >= self.n_layers) or (not limit[1] and layer != NO_LAYER):
                continue  # unknown, or not one this model uses: skipped
            offset, count, code = self.sections[key]
            where = tag.decode() + (" of layer %d" % layer if limit[1] else "")
            if code != limit[0]:
                raise BlobError("model blob section %s has element type %d, expected %d" % (where, code, limit[0]))
            lo, hi = limit[2], limit[3]
            if lo == F32_POSITIVE:
                for bits in struct.unpack_from("<%dI" % count, self.data, offset):
                    if bits >> 31 or not bits & 0x7FFFFFFF or (bits >> 23) & 0xFF == 0xFF:
                        raise BlobError("model blob section %s holds a value that is not a finite positive number" % where)
            elif lo is not None and count:
                values = self.ints(tag, count, layer)
                if min(values) < lo or max(values) > hi:
                    raise BlobError("model blob section %s holds a value outside %d..%d" % (where, lo, hi))
        for tag in (b"INRU", b"INSC", b"INZP"):
            self.section(tag, self.n_inputs)  # host-only, but required: refused alike on both sides
        if wide:  # the pre-shifts a 16-bit state requires
            for k in range(self.n_layers):
                self.section(b"PX__", 4 * self.hidden, k)
                self.section(b"PH__", 4 * self.hidden, k)
            self.section(b"PD__", self.n_classes)
        if (b"NAME", NO_LAYER) in self.sections:
            try:
                self.labels()
            except UnicodeError:
                raise BlobError("model blob labels are not UTF-8")
        # the int32 proof, from the weights stored (docs/arithmetic.md, "Why nothing overflows
        # int32" and "16-bit hidden state": |h| and |int16 inputs| <= 32768, and each accumulator's pre-shift)
        C, H, K = self.n_inputs, self.hidden, self.n_classes
        hb = 32768 if wide else 128
        for k in range(self.n_layers):
            try:
                bx, mx, sx = self.ints(b"BX__", 4 * H, k), self.ints(b"MX__", 4 * H, k), self.ints(b"SX__", 4 * H, k)
                mh, sh = self.ints(b"MH__", 4 * H, k), self.ints(b"SH__", 4 * H, k)
                px, ph = self.pre_shifts(b"PX__", 4 * H, k), self.pre_shifts(b"PH__", 4 * H, k)
                wx = self.section(b"WX__", 4 * H * (C if k == 0 else H), k)[0]
                wh = self.section(b"WH__", 4 * H * H, k)[0]
            except BlobError:
                continue  # missing or miscounted: the layout names it
            width = C if k == 0 else H
            xb = (1 << (self.x_bits - 1)) if k == 0 else hb
            for r in range(4 * H):
                if not (self._fits(abs(bx[r]) + xb * self._abs_sum(wx + r * width, width), px[r], mx[r], sx[r])
                        and self._fits(hb * self._abs_sum(wh + r * H, H), ph[r], mh[r], sh[r])):
                    raise BlobError("model blob layer %d: a gate's rescaling can overflow int32" % k)
        try:
            bd, md, sd = self.ints(b"BD__", K), self.ints(b"MD__", K), self.ints(b"SD__", K)
            pd = self.pre_shifts(b"PD__", K)
            wd = self.section(b"WD__", K * H)[0]
        except BlobError:
            bd = ()
        for r in range(len(bd)):
            if not self._fits(abs(bd[r]) + hb * self._abs_sum(wd + r * H, H), pd[r], md[r], sd[r]):
                raise BlobError("model blob head: a class's rescaling can overflow int32")
        try:
            im, ib = self.ints(b"INMU", C), self.ints(b"INBI", C)
        except BlobError:
            im = ()
        for c in range(len(im)):
            if 32768 * im[c] + abs(ib[c]) > INT32_MAX:
                raise BlobError("model blob input quantization can overflow int32")

    @staticmethod
    def _fits(bound, pre, mult, shift):
        # |acc| <= bound: acc + 2^(P-1) and, pre-shifted, acc * M + 2^(S-1) fit int32 (P 0: none)
        bound += (1 << pre) >> 1
        return bound <= INT32_MAX and (bound >> pre) * mult + (1 << (shift - 1)) <= INT32_MAX

    def pre_shifts(self, tag, count, layer=NO_LAYER):
        """A 16-bit state's pre-shifts (PX__, PH__, PD__); an 8-bit state has none (all 0)."""
        return self.ints(tag, count, layer) if self.h_bits == 16 else (0,) * count

    def _abs_sum(self, offset, n):
        """sum |w| over n int8 weights at offset (load time only)."""
        data = self.data
        total = 0
        for i in range(offset, offset + n):
            v = data[i]
            total += 256 - v if v > 127 else v
        return total

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


def expect_task(b, task):
    """Refuse a classifier blob where an anomaly one is expected, and vice versa."""
    if b.task != task:
        raise BlobError("this is %s model blob; %s model is expected here" % (
            "an anomaly" if b.task == "anomaly" else "a classifier",
            "an anomaly" if task == "anomaly" else "a classifier"))
    return b


def load(path):
    with open(path, "rb") as fh:
        return Blob(fh.read())
