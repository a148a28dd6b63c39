"""Hostile serial input (issue 15, items 2, 3 and 12): lines with a good CRC and
a bad payload, overlong lines, non-finite numbers. The reader skips and counts
them; the monitor and the bridge stay up and lose none of the good lines."""
from __future__ import annotations

import json
import os
import pty
import time
import tty
import zlib

import pytest

from edge_agent.board import link
from mqtt_helpers import Subscriber, edge_agent


def framed(kind: str, text: str) -> bytes:
    """A board line with a valid checksum around any payload text."""
    body = f"{kind} {text}"
    return f"EA1 {body}*{zlib.crc32(body.encode()):08x}\n".encode()


def det(n: int, **extra) -> dict:
    return {"seq": n, "boot": "0badf00d", "t_ms": 20 * n, "sample": 10 * n, "class": 1,
            "label": "walk", "score": 0.75, **extra}


# every payload the issue lists (item 2), and more of the same family
HOSTILE = [
    framed("det", "5"), framed("det", "[1, 2]"), framed("det", '"text"'), framed("det", "null"),
    framed("det", json.dumps({k: v for k, v in det(1).items() if k != "seq"})),  # no seq
    framed("det", '{"seq": 1e400, "t_ms": 1, "sample": 1, "class": 0, "label": "a", "score": 0.5}'),
    framed("det", '{"seq": NaN, "t_ms": 1, "sample": 1, "class": 0, "label": "a", "score": 0.5}'),
    framed("det", '{"seq": Infinity, "t_ms": 1, "sample": 1, "class": 0, "label": "a", "score": 0.5}'),
    framed("det", json.dumps(det(1, seq="7"))), framed("det", json.dumps(det(1, seq=True))),
    framed("det", json.dumps(det(1, seq=-3))), framed("det", json.dumps(det(1, seq=2**70))),
    framed("det", json.dumps(det(1, label={"a": 1}))), framed("det", json.dumps(det(1, label=[1]))),
    framed("det", json.dumps(det(1, score=7))), framed("det", json.dumps(det(1, score="0.5"))),
    framed("det", json.dumps(det(1, boot=["x"]))), framed("det", json.dumps(det(1, t_ms=1.5))),
    framed("det", json.dumps(det(1, **{"class": -1}))),
    framed("det", "[" * 100_000 + "]" * 100_000),  # 100k-deep nesting
    framed("det", "[" * 20_000 + "]" * 20_000),  # deep, within the line limit
    framed("ready", "[1, 2]"), framed("ready", '{"boot": 5}'), framed("ready", '{"boot": "x", "labels": "walk"}'),
    framed("ready", '{"boot": "x", "labels": [1, 2]}'), framed("ready", '{"boot": "x", "device_id": {}}'),
    framed("status", '{"samples": -1}'), framed("status", "{}"), framed("ack", '{"samples": "many"}'),
    framed("error", '{"what": 5}'), framed("det", "{"), framed("det", ""),
]


def test_reader_skips_and_counts_every_hostile_line_and_keeps_the_good_ones():
    good = [link.frame("det", det(n)).encode() for n in (1, 2, 3)]
    stream = good[0] + b"".join(HOSTILE) + good[1] + b"".join(HOSTILE) + good[2]
    reader = link.Reader()
    got = []
    for i in range(0, len(stream), 4093):  # in chunks, as a serial port delivers
        got += reader.feed(stream[i:i + 4093])
    assert [m.payload["seq"] for m in got] == [1, 2, 3]
    assert reader.dropped == 2 * len(HOSTILE)


def test_long_line_without_newline_is_bounded_and_linear():
    # item 12: 19 MB without a newline made the monitor's reader quadratic and its memory grow
    reader = link.Reader()
    chunk = b"x" * 65536
    for _ in range(300):  # 19.7 MB
        assert reader.feed(chunk) == []
        assert len(reader.pending) <= link.MAX_LINE
    good = link.frame("det", det(1)).encode()
    assert [m.payload["seq"] for m in reader.feed(b"\n" + good)] == [1]
    assert reader.overlong == 1


def test_frame_refuses_non_finite_numbers():
    with pytest.raises(ValueError):
        link.frame("det", det(1, score=float("nan")))


def write_all(fd: int, data: bytes, timeout: float = 30) -> None:
    """Write to the pty, failing (not hanging) when the reader on the other side stops reading."""
    end = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            assert time.monotonic() < end, "the reader stopped reading the port"
            time.sleep(0.01)


@pytest.fixture
def pty_port():
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        os.close(fd)


def test_monitor_on_serial_survives_hostile_lines(pty_port):
    master, port = pty_port
    mon = edge_agent("monitor", "--port", port, "--json", "--count", "3")
    try:
        # sent again until the monitor is done: the port may not be open yet (pyserial flushes
        # what came before); the monitor drops the repeats as duplicates
        end = time.monotonic() + 90
        while mon.poll() is None and time.monotonic() < end:
            write_all(master, link.frame("ready", {"boot": "0badf00d", "device_id": "edge-07"}).encode())
            for n in (1, 2, 3):
                for line in HOSTILE:
                    write_all(master, line)
                write_all(master, link.frame("det", det(n)).encode())
            time.sleep(1)
        # before the fix: the reader thread died on the first bad line and --count never ended
        out, err = mon.communicate(timeout=10)
    finally:
        if mon.poll() is None:
            mon.kill()
    assert mon.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    # three detections, each a good one (the port may open mid-stream, before the ready line)
    assert len(lines) == 3 and all(d["seq"] in (1, 2, 3) and d["device_id"] in ("edge-07", "serial")
                                   for d in lines)
    assert "Traceback" not in err


def test_bridge_survives_hostile_lines_and_loses_no_good_one(pty_port, broker, tmp_path):
    master, port = pty_port
    sub = Subscriber(broker.url, ["edge/edge-08/detection"])
    bridge = edge_agent("bridge", "--port", port, "--mqtt", broker.url, "--device-id", "edge-08",
                        "--queue", tmp_path / "q.sqlite")
    got = []
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and {json.loads(p)["seq"] for _, p, _ in got} != {1, 2, 3, 4, 5}:
            write_all(master, link.frame("ready", {"boot": "0badf00d", "labels": ["still", "walk"]}).encode())
            # good and hostile lines in the same chunk: before the fix the bridge exited 70 and lost them
            for n in range(1, 6):
                write_all(master, link.frame("det", det(n)).encode() + b"".join(HOSTILE[:12]))
            got += sub.collect(2)
            assert bridge.poll() is None, bridge.communicate()[1]
    finally:
        bridge.terminate()
        _, err = bridge.communicate(timeout=20)
        sub.close()
    payloads = [json.loads(p) for _, p, _ in got]
    assert sorted({p["seq"] for p in payloads}) == [1, 2, 3, 4, 5]
    assert "Traceback" not in err and "dropped" in err


def test_bridge_never_publishes_non_finite_numbers(tmp_path, broker):
    # item 3: "seq": Infinity went out as-is (not JSON); now such a line never gets that far,
    # and the MQTT payloads are written with allow_nan=False
    from edge_agent.mqtt import client as mqtt

    with pytest.raises(link.InvalidPayload):
        link.parse(framed("det", '{"seq": Infinity, "t_ms": 1, "sample": 1, "class": 0, "label": "a", '
                                 '"score": 0.5}'))
    with pytest.raises(ValueError):
        mqtt.board_message("edge", "x", "b", "det", det(1, score=float("inf")))


def test_replay_waits_for_a_slow_board_while_it_keeps_talking():
    """A board that takes longer than the wait's budget to work through its
    input, but keeps sending status lines meanwhile, is waited for; one that
    falls silent is given up on with one line. The "board" is a thread writing
    the runner's frames on a real pseudo-terminal: what is under test is the
    host's wait, and a slow chip cannot be made on demand."""
    import threading

    from edge_agent.board.link import frame
    from edge_agent.errors import UserError
    from edge_agent.replay import _BoardLink

    master, slave = pty.openpty()
    tty.setraw(slave)
    board = _BoardLink(os.ttyname(slave))
    try:
        def busy_board():
            for samples in range(1, 9):  # 8 status lines 0.25 s apart: 2 s in all
                time.sleep(0.25)
                os.write(master, frame("status", {"samples": samples}).encode())

        talker = threading.Thread(target=busy_board)
        talker.start()
        done = board.wait_for("status", 1.0, lambda p: p["samples"] >= 8, stall=1.0)
        talker.join()
        assert done["samples"] == 8
        start = time.monotonic()
        with pytest.raises(UserError, match="sent no 'status'"):
            board.wait_for("status", 0.5, lambda p: p["samples"] >= 9, stall=1.0)  # silent: no extension
        assert time.monotonic() - start < 1.0
    finally:
        board.close()
        os.close(master)
        os.close(slave)
