"""Hostile MQTT (issue 15, items 4, 5 and 6), against a real mosquitto: payloads
that killed the monitor, a 3 MB PUBLISH to the board, a broker outage during
`replay --mqtt`."""
from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from edge_agent import blob, config
from edge_agent.mqtt import client as mqtt
from edge_agent.replay import publish_mqtt
from mqtt_helpers import DEMO_BLOB, ROOT, Board, edge_agent, seqs, settings_for


def good(seq: int) -> str:
    return json.dumps({"seq": seq, "boot": "0badf00d", "t": seq / 10, "class": 1, "label": "walk", "score": 0.5})


# payloads any client allowed to publish edge/<id>/detection could send (item 4)
HOSTILE = [
    b"5", b"[1,2]", b'"x"', b"null", b"", b"\xff\xfe", b'{"seq":1e400}', b'{"seq":NaN}', b'{"seq":Infinity}',
    b"[" * 100_000 + b"]" * 100_000, b'{"seq":8,"boot":"z","label":{"a":1}}', b'{"seq":"8"}',
    b'{"seq":8,"boot":"z","t":1,"class":0,"label":"a","score":"high"}',
    b'{"seq":8,"boot":"z","t":1,"class":0,"label":"a","score":1e300}',
    b'{"seq":8,"boot":[],"t":1,"class":0,"label":"a","score":0.5}',
    b'{"seq":-1,"boot":"z","t":1,"class":0,"label":"a","score":0.5}',
    b"{" * 50 + b"}" * 50, b"x" * 200_000,
]
METRICS = [b"5", b"[]", b'{"step_us_mean":"x","cpu_load":"y"}', b'{"step_us_mean":1,"cpu_load":{"a":1}}',
           b"[" * 50_000 + b"]" * 50_000]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_monitor_survives_every_hostile_payload(broker, as_json):
    args = ["monitor", "--mqtt", broker.url, "--count", "3"] + (["--json"] if as_json else [])
    mon = edge_agent(*args)
    pub = mqtt.connect(mqtt.target(broker.url))
    try:
        end = time.monotonic() + 90
        while mon.poll() is None and time.monotonic() < end:  # again until done: it may subscribe late
            for seq in (1, 2, 3):
                for payload in HOSTILE:
                    pub.publish("edge/edge-05/detection", payload, 1).wait_for_publish(5)
                for payload in METRICS:
                    pub.publish("edge/edge-05/metrics", payload, 0)
                pub.publish("edge/edge-05/status", b"\xff" * 1000, 1).wait_for_publish(5)
                pub.publish("edge/edge-05/detection", good(seq), 1).wait_for_publish(5)
            time.sleep(1)
        # before the fix paho's network thread died on the first payload: --count never ended
        out, err = mon.communicate(timeout=10)
    finally:
        pub.disconnect()
        pub.loop_stop()
        if mon.poll() is None:
            mon.kill()
    assert mon.returncode == 0, err
    assert "Traceback" not in err and "ignored a malformed message" in err
    if as_json:
        assert sorted(seqs(out, "edge-05")) == [1, 2, 3]
    else:
        assert "edge-05" in out and "malformed message(s) ignored" in out


def test_board_discards_a_3mb_publish_and_keeps_running(tmp_path, broker):
    board = Board(tmp_path / "b", settings_for(broker.url, "edge-11"))
    pub = mqtt.connect(mqtt.target(broker.url))
    try:
        monitor = edge_agent("monitor", "--mqtt", broker.url, "--json", "--count", "20")
        time.sleep(1.5)  # the board is connected and subscribed to homeassistant/status
        # the virtual board's heap is 2 MB: before the fix this PUBLISH was held whole -> MemoryError
        pub.publish("homeassistant/status", b"x" * 3_000_000, 0).wait_for_publish(10)
        pub.publish("homeassistant/status", b"y" * 5000, 0).wait_for_publish(10)
        time.sleep(2)
        end = time.monotonic() + 90
        while monitor.poll() is None and time.monotonic() < end:  # until the monitor has its 20
            board.samples(5 * 20)
            time.sleep(2)
        out, err = monitor.communicate(timeout=10)
        assert monitor.returncode == 0, err
        msgs = []
        while not board.lines.empty():
            msgs.append(board.lines.get())
    finally:
        pub.disconnect()
        pub.loop_stop()
        board.close()
    got = seqs(out, "edge-11")
    assert len(got) == 20 and got == sorted(got)  # the runner kept detecting after the 3 MB packet
    assert not [m for m in msgs if m.kind == "error"]


def test_board_mqtt_client_reads_oversize_packets_through():
    """device/mqtt.py under the real MicroPython: the oversize packet's bytes are
    never held, and the packets after it are read."""
    import subprocess

    from edge_agent.board import unixport

    script = r"""
import mqtt
CHUNK = b"x" * 512
class Sock:  # the broker's side: a small PUBLISH, a 3 MB one, a PUBACK, another small one
    def __init__(self):
        topic = mqtt._str("homeassistant/status")
        small = mqtt._packet(0x30, topic + b"online")
        big_head = mqtt._packet(0x30, topic)  # its remaining length, patched to 3 MB + topic
        n = len(topic) + 3000000
        head = bytearray([0x30])
        while True:
            byte = n & 0x7F
            n >>= 7
            head.append(byte | 0x80 if n else byte)
            if not n:
                break
        self.pieces = [small, bytes(head) + topic] + [CHUNK] * (3000000 // 512) + \
                      [b"x" * (3000000 % 512) + b"\x40\x02\x00\x07", small]
    def read(self, n):
        return self.pieces.pop(0) if self.pieces else None
class Poller:
    def __init__(self, sock):
        self.sock = sock
    def poll(self, t):
        return [1] if self.sock.pieces else []
c = mqtt.MQTTClient("t", "localhost")
c.sock = Sock()
c.poller = Poller(c.sock)
c.state = mqtt.CONNECTED
got = []
c._handle = lambda kind, body: got.append((kind, bytes(body)))
c._receive()  # the real read loop
print(len(got), got[0][0], got[1], got[2][0], c.oversize)
"""
    proc = subprocess.run([unixport.binary(), "-X", "heapsize=1M", "-c", script], capture_output=True,
                          text=True, timeout=120, env={"MICROPYPATH": str(unixport.DEVICE_DIR)})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.split() == ["3", "48", "(64,", "b'\\x00\\x07')", "48", "1"]


def test_replay_mqtt_rides_out_a_broker_outage(tmp_path, broker):
    # item 6: before the fix, replay exited 70 ("The client is not currently connected")
    # after claiming every detection published
    settings = config.load(ROOT / "config.yaml")
    qm = blob.read(DEMO_BLOB)
    received: queue.Queue = queue.Queue()
    sub = mqtt.connect(mqtt.target(broker.url), "outage-sub", clean=False,
                       on_message=lambda m: received.put(json.loads(m.payload)["seq"]),
                       on_connect=lambda c, f, r: c.subscribe("edge/edge-12/detection", 1))
    time.sleep(0.5)
    labels = settings.labels_for(qm.class_names, qm.n_classes)

    def dets():
        for n in range(1, 601):
            if n == 150:
                broker.stop()
                threading.Timer(3.0, broker.start).start()
            if n % 50 == 0:
                time.sleep(0.2)  # some of them are produced during the outage
            yield {"seq": n, "t": n / 10, "class": 0, "label": labels[0], "score": 0.5}

    yielded = [d["seq"] for d in publish_mqtt(dets(), mqtt.target(broker.url), settings, qm, "edge-12")]
    got = set()
    end = time.monotonic() + 30
    while len(got) < 600 and time.monotonic() < end:
        try:
            got.add(received.get(timeout=0.2))
        except queue.Empty:
            pass
    sub.disconnect()
    sub.loop_stop()
    assert yielded == list(range(1, 601))
    assert got == set(yielded)


def test_replay_mqtt_claims_nothing_unacknowledged(broker):
    settings = config.load(ROOT / "config.yaml")
    qm = blob.read(DEMO_BLOB)
    labels = settings.labels_for(qm.class_names, qm.n_classes)
    yielded = []

    def dets():
        for n in range(1, 201):
            if n == 100:
                broker.stop()  # for good
            yield {"seq": n, "t": n / 10, "class": 0, "label": labels[0], "score": 0.5}

    from edge_agent.errors import UserError

    with pytest.raises(UserError, match="not acknowledged"):
        for det in publish_mqtt(dets(), mqtt.target(broker.url), settings, qm, "edge-13", stall_s=3):
            yielded.append(det["seq"])
    assert yielded == list(range(1, len(yielded) + 1)) and len(yielded) < 200


def test_runner_survives_a_failing_publisher(tmp_path, demo_paths):
    """item 5, the runner's side: whatever the publisher raises (here MemoryError on
    every call, as a board out of heap would), sampling and detection go on."""
    import shutil
    import subprocess

    from edge_agent.board import link, unixport

    shutil.copy(demo_paths["blob"], tmp_path / "model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"window": 10, "hop": 10}))
    script = tmp_path / "run.py"
    script.write_text(
        "import publishers, main\n"
        "class Failing(publishers.Publisher):\n"
        "    calls = 0\n"
        "    def publish(self, kind, payload):\n"
        "        Failing.calls += 1\n"
        "        if kind == 'det' and payload['seq'] % 2:\n"
        "            raise MemoryError('out of heap')\n"
        "        publishers.SerialPublisher().publish(kind, payload)\n"
        "    def poll(self):\n"
        "        raise OSError(113)\n"
        "make = publishers.make\n"
        "publishers.make = lambda *a: publishers.Fanout([Failing()])\n"
        "main.run()\n")
    proc = subprocess.run([unixport.binary(), str(script)], cwd=tmp_path, capture_output=True, timeout=120,
                          input=b"".join(link.sample_line([0] * 6) for _ in range(60)),
                          env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()[-400:]
    msgs = [m for m in (link.parse(line) for line in proc.stdout.splitlines()) if m is not None]
    assert [m.payload["seq"] for m in msgs if m.kind == "det"] == [2, 4, 6]  # 1, 3, 5 raised: not fatal
    assert msgs[-1].kind == "status" and msgs[-1].payload["samples"] == 60
