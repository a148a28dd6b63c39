"""MQTT end to end against a real mosquitto on loopback: the virtual board
publishing itself, the bridge for serial boards, monitor, Home Assistant
discovery, credentials, ACL and shared subscriptions."""
import json
import signal
import subprocess
import time

import pytest

from edge_agent.mqtt import client as mqtt

from pathlib import Path

from conftest import Broker

ROOT = Path(__file__).resolve().parents[1]
from mqtt_helpers import Board, Subscriber, edge_agent, listening, says, seqs, settings_for

N = 40  # detections per test (window = hop = 5 samples)


def wait_done(proc, timeout=90):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def test_board_publishes_and_monitor_gets_all_in_order(tmp_path, broker):
    board = Board(tmp_path / "b", settings_for(broker.url, "edge-01"))
    try:
        monitor = edge_agent("monitor", "--mqtt", broker.url, "--json", "--count", N)
        listening(monitor)
        board.samples(5 * N)
        out = wait_done(monitor)
    finally:
        board.close()
    assert seqs(out, "edge-01") == list(range(1, N + 1))
    first = json.loads(out.splitlines()[0])
    assert set(first) == {"device_id", "seq", "boot", "t", "class", "label", "score"}


def test_discovery_retained_and_equal_on_board_and_host(tmp_path, broker):
    board = Board(tmp_path / "b", settings_for(broker.url, "edge-07"))
    try:
        time.sleep(1.5)  # connected, discovery and status sent
        sub = Subscriber(broker.url, ["homeassistant/#", "edge/edge-07/status"])
        got = {t: (p, r) for t, p, r in sub.collect(1.5)}
        sub.close()
    finally:
        board.close()
    labels = ["still", "walk", "run", "shake"]
    want = dict(mqtt.discovery("edge", "edge-07", labels))
    assert set(want) <= set(got)
    for topic, payload in want.items():
        body, retained = got[topic]
        assert retained
        assert json.loads(body) == json.loads(payload)  # the board's twin says the same
    event = json.loads(got["homeassistant/event/edge-07/detection/config"][0])
    assert event["event_types"] == labels and event["availability_topic"] == "edge/edge-07/status"
    assert got["edge/edge-07/status"] == (b"online", True)


def test_broker_outage_nothing_lost_from_board(tmp_path, broker):
    board = Board(tmp_path / "b", settings_for(broker.url, "edge-02"))
    try:
        monitor = edge_agent("monitor", "--mqtt", broker.url, "--json", "--count", N, "--client-id", "mon-a")
        listening(monitor)
        board.samples(5 * N // 2)
        time.sleep(1.0)
        broker.stop()
        board.samples(5 * N // 2)  # the board queues in RAM while the broker is away
        time.sleep(5)
        broker.start()
        out = wait_done(monitor, timeout=120)
    finally:
        board.close()
    assert sorted(set(seqs(out, "edge-02"))) == list(range(1, N + 1))


def test_broker_outage_and_bridge_restart_nothing_lost(tmp_path, broker):
    board = Board(tmp_path / "b", settings_for(None, "edge-03"), drain=False)
    queue_file = tmp_path / "bridge.sqlite"
    bridge_args = ["bridge", "--port", board.port, "--mqtt", broker.url, "--device-id", "edge-03",
                   "--queue", queue_file]
    try:
        bridge = edge_agent(*bridge_args)
        monitor = edge_agent("monitor", "--mqtt", broker.url, "--json", "--count", N, "--client-id", "mon-b")
        listening(monitor)
        says(bridge, "bridging")  # the port is open: what the board says now is read
        board.samples(5 * N // 2)
        time.sleep(1.5)
        broker.stop()
        board.samples(5 * N // 4)  # into the bridge's disk queue
        time.sleep(2)
        bridge.send_signal(signal.SIGKILL)  # the bridge dies with messages queued
        bridge.wait()
        bridge = edge_agent(*bridge_args)
        says(bridge, "bridging")
        board.samples(5 * N // 4)
        time.sleep(2)
        broker.start()
        out = wait_done(monitor, timeout=120)
        bridge.terminate()
        bridge.wait(timeout=10)
    finally:
        board.close()
    assert sorted(set(seqs(out, "edge-03"))) == list(range(1, N + 1))


@pytest.fixture
def secure_broker(tmp_path):
    passwd = tmp_path / "passwd"
    for user, password in (("edge-01", "s3cret"), ("edge-host", "h0st")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "edge-01" else []), str(passwd),
                        user, password], check=True, capture_output=True)
    acl = ROOT / "deploy" / "mosquitto" / "edge-agent.acl"  # the ACL we ship
    b = Broker(tmp_path, f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n").start()
    yield b
    b.stop()


def test_wrong_credentials_one_clear_error(secure_broker):
    proc = edge_agent("monitor", "--mqtt", secure_broker.url, "--username", "edge-01", "--count", 1,
                      env={"EDGE_AGENT_MQTT_PASSWORD": "wrong"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "password" in err or "not authorized" in err
    assert "wrong" not in err  # the password is never echoed


def test_acl_confines_device_to_its_topics(secure_broker):
    admin = Subscriber(secure_broker.url, ["edge/#"], "edge-host", "h0st")
    tgt = mqtt.target(secure_broker.url, "edge-01")
    tgt.password = "s3cret"
    device = mqtt.connect(tgt)
    device.publish("edge/edge-02/detection", '{"seq": 1}', 1).wait_for_publish(5)
    device.publish("edge/edge-01/detection", '{"seq": 2}', 1).wait_for_publish(5)
    got = admin.collect(1.5)
    device.disconnect()
    admin.close()
    assert [(t, json.loads(p)["seq"]) for t, p, _ in got] == [("edge/edge-01/detection", 2)]


def test_shared_subscription_splits_the_stream(tmp_path, broker):
    monitors = [edge_agent("monitor", "--mqtt", broker.url, "--json", "--group", "fleet") for _ in range(2)]
    for monitor in monitors:
        listening(monitor)
    replay = edge_agent("replay", "--mqtt", broker.url, "--device-id", "edge-09", "--json", "--hop", "25",
                        cwd=tmp_path)
    out, err = replay.communicate(timeout=120)
    assert replay.returncode == 0, err
    published = len(out.splitlines())
    time.sleep(1.5)
    halves = []
    for m in monitors:
        m.send_signal(signal.SIGINT)
        halves.append(sorted(seqs(m.communicate(timeout=30)[0], "edge-09")))
    assert published > 50
    assert all(halves), "each monitor in the group got a share"
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == list(range(1, published + 1))


def test_tls_end_to_end(tmp_path):
    """mqtts:// with a CA file: replay publishes, monitor receives, over TLS."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    b = Broker(tmp_path, f"allow_anonymous true\ncertfile {cert}\nkeyfile {key}\n").start()
    url = b.url.replace("mqtt://", "mqtts://")
    try:
        monitor = edge_agent("monitor", "--mqtt", url, "--tls-ca", cert, "--json", "--count", 5)
        listening(monitor)
        replay = edge_agent("replay", "--mqtt", url, "--tls-ca", cert, "--device-id", "tls-01", "--json",
                            cwd=tmp_path)
        assert replay.communicate(timeout=60)[0].count("\n") >= 5
        out = wait_done(monitor)
        plain = edge_agent("monitor", "--mqtt", url, "--count", 1)  # no CA given: the system's CAs refuse it
        _, err = plain.communicate(timeout=30)
    finally:
        b.stop()
    assert seqs(out, "tls-01") == [1, 2, 3, 4, 5]
    assert plain.returncode != 0 and "TLS" in err and err.count("\n") == 1
