"""Fuzzing every boundary (issue 15): the serial reader, the MQTT payload
handler, the config loader and both blob readers (the board's under the real
MicroPython) get random and schema-breaking input. Asserted each time: no
exception escapes, nothing valid is lost, and the reader keeps working after."""
from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from edge_agent import blob, config
from edge_agent.board import link, unixport
from edge_agent.errors import UserError
from edge_agent.mqtt import monitor

ROOT = Path(__file__).resolve().parents[1]
DEMO = (ROOT / "edge_agent" / "data" / "demo.bin").read_bytes()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- values: valid ones, and anything JSON can say ------------------------------------

json_any = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                        | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
valid_det = st.fixed_dictionaries({
    "seq": st.integers(1, 2**31 - 1), "boot": st.text("0123456789abcdef", min_size=8, max_size=8),
    "t_ms": st.integers(0, 2**31 - 1), "sample": st.integers(0, 2**31 - 1), "class": st.integers(0, 100),
    "label": st.text(max_size=30), "score": st.floats(0, 1)})


def framed(kind: str, text: str) -> bytes:
    body = f"{kind} {text}"
    return f"EA1 {body}*{zlib.crc32(body.encode()):08x}\n".encode()


BAD = {"seq": [0, -1, "1", 1.5, None, True, 2**31, [1]], "t_ms": ["1", 1.5, None, 2**40],
       "sample": [-1, "1", None, 2.0], "class": [-1, 1.5, "a", None, False], "boot": [5, ["x"], "x" * 65],
       "label": [1, None, ["a"], {"a": 1}, "x" * 300], "score": [-0.1, 1.5, "0.5", None, True, 2]}


def broken_det(draw) -> bytes:
    """A line with a good checksum whose payload breaks the det schema."""
    det = draw(valid_det)
    how = draw(st.sampled_from(["drop", "retype", "nonfinite", "notobject", "deep", "garbage"]))
    if how == "drop":
        det.pop(draw(st.sampled_from(["seq", "t_ms", "sample", "class", "label", "score"])))  # boot is optional
    elif how == "retype":
        name = draw(st.sampled_from(sorted(BAD)))
        det[name] = draw(st.sampled_from(BAD[name]))
    elif how == "nonfinite":
        text = json.dumps(det).replace(f'"score": {json.dumps(det["score"])}',
                                       '"score": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"])))
        return framed("det", text)
    elif how == "notobject":
        return framed("det", json.dumps(draw(st.one_of(st.lists(json_any), st.integers(), st.text(), st.none()))))
    elif how == "deep":
        n = draw(st.integers(2000, 30000))
        return framed("det", "[" * n + "]" * n)
    else:
        return framed("det", draw(st.text(max_size=40)).replace("\n", " ") + "{")
    return framed("det", json.dumps(det))


@st.composite
def serial_stream(draw):
    """(bytes, the valid detections in order): valid lines, corrupt ones, schema-breaking
    ones, stray console output and overlong runs, cut into random chunks."""
    parts, valid = [], []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["valid", "broken", "crc", "stray", "binary", "overlong"]))
        if kind == "valid":
            det = draw(valid_det)
            valid.append(det)
            parts.append(link.frame("det", det).encode())
        elif kind == "broken":
            parts.append(broken_det(draw))
        elif kind == "crc":
            line = bytearray(link.frame("det", draw(valid_det)).encode())
            line[draw(st.integers(4, len(line) - 12))] ^= draw(st.integers(1, 255))
            parts.append(bytes(line).replace(b"\n", b"") + b"\n")
        elif kind == "stray":
            parts.append(draw(st.text(max_size=200)).encode() + b"\n")
        elif kind == "binary":
            parts.append(draw(st.binary(max_size=300)) + b"\n")
        else:
            parts.append(b"EA1 det " + b"x" * draw(st.integers(link.MAX_LINE, 3 * link.MAX_LINE)) + b"\n")
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=30)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])], valid


@FAST
@given(serial_stream())
def test_serial_reader(stream):
    chunks, valid = stream
    reader = link.Reader()
    got = []
    for chunk in chunks:
        got += reader.feed(chunk)  # nothing may raise
        assert len(reader.pending) <= link.MAX_LINE
    assert [m.payload for m in got if m.kind == "det"] == valid  # every valid line, in order
    # still working afterwards
    after = {"seq": 5, "boot": "0badf00d", "t_ms": 1, "sample": 1, "class": 0, "label": "a", "score": 0.5}
    assert [m.payload["seq"] for m in reader.feed(b"\n" + link.frame("det", after).encode())] == [5]


# ---- the MQTT payload handler (what the monitor runs on paho's network thread) --------

mqtt_valid = st.fixed_dictionaries({
    "seq": st.integers(1, 2**31 - 1), "boot": st.text(max_size=8), "t": st.floats(-1e6, 1e6),
    "class": st.integers(0, 100), "label": st.text(max_size=30), "score": st.floats(0, 1)})


@st.composite
def mqtt_messages(draw):
    out = []
    for _ in range(draw(st.integers(1, 30))):
        device = draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(st.sampled_from(["valid", "json", "bytes", "nonfinite", "deep", "metrics", "status", "topic"]))
        if kind == "valid":
            out.append((f"edge/{device}/detection", json.dumps(draw(mqtt_valid)).encode(), True))
        elif kind == "json":
            out.append((f"edge/{device}/detection", json.dumps(draw(json_any)).encode(), False))
        elif kind == "bytes":
            out.append((f"edge/{device}/detection", draw(st.binary(max_size=200)), False))
        elif kind == "nonfinite":
            det = json.dumps(draw(mqtt_valid)).replace('"seq": ', '"seq": 1e400, "x": ', 1)
            out.append((f"edge/{device}/detection", det.encode(), False))
        elif kind == "deep":
            n = draw(st.integers(1000, 100000))
            out.append((f"edge/{device}/detection", b"[" * n + b"]" * n, False))
        elif kind == "metrics":
            out.append((f"edge/{device}/metrics", json.dumps(draw(json_any)).encode(), None))
        elif kind == "status":
            out.append((f"edge/{device}/status", draw(st.binary(max_size=100)), None))
        else:
            out.append((draw(st.text(max_size=50)), draw(st.binary(max_size=50)), None))
    return out


@FAST
@given(mqtt_messages())
def test_mqtt_payload_handler(messages):
    view = monitor.FleetView()
    delivered = []
    for topic, payload, valid in messages:
        ok = monitor.handle_message(view, lambda d, det: (view.detection(d, det), delivered.append(det)),
                                    topic, payload)  # nothing may raise
        if valid is True:
            assert ok
    want = [json.loads(p) for _, p, v in messages if v is True]
    # a JSON object that happens to fit the schema is a detection too: the valid ones are all in
    for det in want:
        assert det in delivered
    assert view.table()  # the table view renders whatever came in


# ---- the config loader --------------------------------------------------------------

config_valid = st.fixed_dictionaries({
    "device_id": st.text("abcdefgh-_0123456789", min_size=1, max_size=20),
    "window": st.integers(1, 1000), "continuous": st.booleans(),
    "sensor": st.fixed_dictionaries({"rate_hz": st.floats(0.1, 1000)}),
    "publisher": st.fixed_dictionaries({"queue_len": st.integers(1, 10000),
                                        "topic_prefix": st.sampled_from(["edge", "plant/line-1", "a"])}),
})
yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
yaml_any = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["device_id", "window", "hop", "sensor", "rate_hz",
                                                           "publisher", "labels", "thresholds", "kind", "x"])
                                          | st.text(max_size=8), inner, max_size=5), max_leaves=15)


@FAST
@given(st.one_of(yaml_any.map(lambda v: yaml.safe_dump(v)), st.text(max_size=300),
                 st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
@example(text="? '\n\n  '\n: null\n")  # a key that is a line break: the message stays one line
def test_config_loader_hostile(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        config.load(path)
    except UserError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
    except Exception as exc:  # anything else is a bug
        pytest.fail(f"{type(exc).__name__}: {exc}")


@FAST
@given(config_valid)
def test_config_loader_keeps_valid(tmp_path_factory, values):
    values = dict(values, hop=values["window"])
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    s = config.load(path)
    assert (s.device_id, s.window, s.hop, s.continuous) == (values["device_id"], values["window"],
                                                            values["window"], values["continuous"])
    assert s.sensor.rate_hz == values["sensor"]["rate_hz"]
    assert s.publisher.queue_len == values["publisher"]["queue_len"]


# ---- both blob readers ----------------------------------------------------------------

def recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


@st.composite
def mutated_blobs(draw):
    """The demo blob with random bytes, header fields or directory entries changed and
    the CRC recomputed (a CRC alone stops random damage; these get past it)."""
    data = bytearray(DEMO)
    n_dir = struct.unpack_from("<H", data, 22)[0]
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["header", "directory", "data", "anywhere", "truncate"]))
        if where == "header":
            pos = draw(st.integers(4, 31))
        elif where == "directory":
            pos = 32 + 16 * draw(st.integers(0, n_dir - 1)) + draw(st.sampled_from([4, 5, 8, 9, 10, 12, 13, 14, 15]))
        elif where == "data":
            pos = draw(st.integers(32 + 16 * n_dir, len(data) - 5))
        elif where == "anywhere":
            pos = draw(st.integers(0, len(data) - 5))
        else:
            cut = draw(st.integers(36, len(data) - 1))
            data = data[:cut] + b"\0\0\0\0"
            struct.pack_into("<I", data, 8, len(data))
            break  # the last change: the offsets above are the whole file's
        data[pos] = draw(st.integers(0, 255))
    return recrc(data)


def host(data: bytes) -> str:
    try:
        blob.unpack(data)
        return "ok"
    except blob.BlobError:
        return "refused"


def test_host_blob_reader_keeps_the_valid_blob():
    assert host(DEMO) == "ok"


@FAST
@given(mutated_blobs())
def test_host_blob_reader(data):
    host(data)  # only BlobError may leave it


DEVICE_READER = """
import sys
import blob
from layout import BoardModel
for path in sys.argv[1:]:
    try:
        BoardModel(blob.load(path))  # the reader, then the layout that trusts it
        print("ok")
    except blob.BlobError:
        print("refused")
"""


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_blobs(), min_size=40, max_size=40))
def test_board_blob_reader_agrees_with_the_host(tmp_path_factory, blobs):
    """device/blob.py under the real MicroPython: the same verdict as the host for every
    blob, no other exception (the process would exit non-zero), and the valid blob,
    read last by the same process, still loads."""
    tmp = tmp_path_factory.mktemp("blobs")
    paths = []
    for n, data in enumerate(blobs + [DEMO]):
        paths.append(tmp / f"{n}.bin")
        paths[-1].write_bytes(data)
    (tmp / "reader.py").write_text(DEVICE_READER)
    proc = subprocess.run([unixport.binary(), "-X", "heapsize=8M", str(tmp / "reader.py"), *map(str, paths)],
                          capture_output=True, text=True, timeout=600,
                          env={"MICROPYPATH": str(unixport.DEVICE_DIR)})
    assert proc.returncode == 0, proc.stderr[-800:]
    assert proc.stdout.split() == [host(b) for b in blobs] + ["ok"]
