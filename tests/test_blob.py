"""model.bin: round trip, and every kind of damage refused."""
import struct
import zlib

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.quant import quantize

from helpers import random_model


@pytest.fixture(scope="module")
def packed():
    rng = np.random.default_rng(5)
    fm = random_model(rng, hidden=8, layers=2, classes=3)
    fm.class_names = ["idle", "wave", "tap"]
    x = rng.normal(0, 2, (16, 20, 6))
    return blob.pack(quantize(fm, x))


def test_round_trip_is_identity(packed):
    qm = blob.unpack(packed)
    assert blob.pack(qm) == packed
    assert qm.class_names == ["idle", "wave", "tap"]
    assert (qm.n_inputs, qm.hidden, qm.n_classes, len(qm.layers)) == (6, 8, 3, 2)
    assert qm.layers[1].wx.shape == (32, 8) and qm.layers[1].wx.dtype == np.int8


def test_layout_matches_spec(packed):
    magic, version, header_size, total = struct.unpack_from("<4sHHI", packed)
    assert (magic, version, header_size, total) == (b"EAQM", 1, 32, len(packed))
    assert struct.unpack_from("<I", packed, total - 4)[0] == zlib.crc32(packed[:-4])
    n_sections, dir_offset = struct.unpack_from("<HI", packed, 22)
    for i in range(n_sections):
        tag, code, layer, _, offset, count = struct.unpack_from("<4sBBHII", packed, dir_offset + 16 * i)
        assert offset % 4 == 0  # stated alignment


def test_every_truncation_refused(packed):
    for n in range(len(packed)):
        with pytest.raises(blob.BlobError, match="truncated|shorter"):
            blob.unpack(packed[:n])


def test_random_bit_flips_refused(packed):
    rng = np.random.default_rng(0)
    for _ in range(1000):
        bad = bytearray(packed)
        pos = int(rng.integers(len(bad)))
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(blob.BlobError):
            blob.unpack(bytes(bad))


def test_trailing_bytes_refused(packed):
    with pytest.raises(blob.BlobError, match="unexpected bytes"):
        blob.unpack(packed + b"\0")


def _recrc(data: bytearray) -> bytes:
    return bytes(data[:-4]) + struct.pack("<I", zlib.crc32(bytes(data[:-4])))


def test_bad_magic_and_version_named(packed):
    bad = bytearray(packed)
    bad[0:4] = b"ELF\x7f"
    with pytest.raises(blob.BlobError, match="magic"):
        blob.unpack(_recrc(bad))
    bad = bytearray(packed)
    bad[4:6] = struct.pack("<H", 9)
    with pytest.raises(blob.BlobError, match="version 9"):
        blob.unpack(_recrc(bad))


def test_write_is_atomic(tmp_path, packed, monkeypatch):
    target = tmp_path / "model.bin"
    target.write_bytes(b"previous model")
    qm = blob.unpack(packed)

    def boom(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(blob, "pack", boom)
    with pytest.raises(RuntimeError):
        blob.write(qm, target)
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temp file left
