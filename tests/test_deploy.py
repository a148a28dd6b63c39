"""deploy/ proven by the programs it is for (issue 15): the shipped mosquitto.conf
starts a broker that enforces what it says, systemd-analyze verifies the bridge
unit, the Node-RED flow runs in a real headless Node-RED against a real broker
(it drops duplicates and warns on a gap), and the Home Assistant automation names
the entities discovery creates and fires on what a board sends."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import Broker
from edge_agent.errors import UserError
from edge_agent.mqtt import client as mqtt

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NODE_RED = ROOT / ".node-red" / "node_modules" / "node-red" / "red.js"  # installed by .ci/run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port: int, user: str | None = None, password: str | None = None, tls_ca=None):
    tgt = mqtt.target(f"{'mqtts' if tls_ca else 'mqtt'}://127.0.0.1:{port}", user, ca_file=tls_ca)
    tgt.password = password
    return mqtt.connect(tgt, timeout=5)


def test_shipped_mosquitto_conf_starts_and_enforces(tmp_path):
    """The shipped file, line for line, with only its paths and ports pointed at the
    test's: authenticated clients only, the ACL, plain and TLS listeners."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    passwd = tmp_path / "passwd"
    for n, (user, password) in enumerate((("edge-01", "dev1"), ("edge-host", "host"))):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(passwd), user, password],
                       check=True, capture_output=True)
    plain, tls = free_port(), free_port()
    swap = {"password_file": f"password_file {passwd}", "acl_file": f"acl_file {DEPLOY / 'mosquitto' / 'edge-agent.acl'}",
            "listener 1883": f"listener {plain} 127.0.0.1", "listener 8883": f"listener {tls} 127.0.0.1",
            "certfile": f"certfile {cert}", "keyfile": f"keyfile {key}",
            "persistence_location": f"persistence_location {tmp_path}/"}
    lines, swapped = [], set()
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        key_ = next((k for k in swap if line.startswith(k)), None)
        lines.append(swap[key_] if key_ else line)
        swapped.add(key_)
    assert set(swap) <= swapped  # every line we meant to point elsewhere is in the shipped file
    import getpass

    lines += [f"user {getpass.getuser()}", f"log_dest file {tmp_path}/mosquitto.log"]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        with pytest.raises(UserError, match="not authorized|password"):
            connect(plain)  # allow_anonymous false
        host = connect(tls, "edge-host", "host", tls_ca=str(cert))  # the TLS listener, with its cert
        got = []
        host.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        host.subscribe("edge/#", 1)
        device = connect(plain, "edge-01", "dev1")
        time.sleep(0.5)
        device.publish("edge/edge-02/detection", b'{"seq": 1}', 1).wait_for_publish(5)  # not its topic
        device.publish("edge/edge-01/detection", b'{"seq": 2}', 1).wait_for_publish(5)
        time.sleep(1)
        for c in (host, device):
            c.disconnect()
            c.loop_stop()
        assert got == [("edge/edge-01/detection", b'{"seq": 2}')]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs Debian's systemd)")
    unit = (DEPLOY / "systemd" / "edge-agent-bridge@.service").read_text()
    assert "ExecStart=/usr/local/bin/edge-agent bridge" in unit  # where pip puts the console script
    # the only change: ExecStart at this machine's edge-agent (verify checks that it is executable)
    exe = shutil.which("edge-agent")
    assert exe
    (tmp_path / "edge-agent-bridge@.service").write_text(unit.replace("/usr/local/bin/edge-agent", exe))
    proc = subprocess.run([analyze, "verify", "./edge-agent-bridge@ttyACM0.service"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    # and verify is not vacuous here: a misspelt key is reported
    (tmp_path / "broken@.service").write_text(unit.replace("Restart=always", "Restrt=always")
                                              .replace("/usr/local/bin/edge-agent", exe))
    bad = subprocess.run([analyze, "verify", "./broken@ttyACM0.service"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert "Unknown key" in bad.stderr


def test_home_assistant_automation_matches_discovery():
    """The automation's entity is the one discovery creates, and its condition,
    rendered with Jinja as Home Assistant does, fires on a confident shake only."""
    import jinja2

    auto = yaml.safe_load((DEPLOY / "homeassistant" / "automation.yaml").read_text())
    labels = ["still", "walk", "run", "shake"]  # the bundled model's
    configs = {topic: json.loads(payload) for topic, payload in mqtt.discovery("edge", "edge-01", labels)}
    slug = lambda text: re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")  # Home Assistant's entity ids
    entities = {f"{topic.split('/')[1]}.{slug(c['device']['name'])}_{slug(c['name'])}": c
                for topic, c in configs.items()}
    (trigger,) = auto["triggers"]
    event = entities[trigger["entity_id"]]  # KeyError: the automation names no discovered entity
    assert trigger["entity_id"] == "event.edge_01_detection" and "shake" in event["event_types"]
    env = jinja2.Environment()
    env.filters["float"] = lambda v, default=0.0: float(v) if str(v).replace(".", "", 1).isdigit() else default

    def fires(label: str, score: float) -> bool:
        value_json = {"seq": 3, "boot": "0badf00d", "t": 1.0, "class": labels.index(label), "label": label,
                      "score": score}
        attributes = json.loads(env.from_string(event["value_template"]).render(value_json=value_json))
        trig = {"to_state": {"attributes": attributes}}
        (cond,) = auto["conditions"]
        return env.from_string(cond["value_template"]).render(trigger=trig).strip() == "True"

    assert fires("shake", 0.9) and not fires("shake", 0.5) and not fires("walk", 0.95)
    assert auto["actions"][0]["action"] == "persistent_notification.create"


@pytest.fixture
def node_red(tmp_path, broker):
    if not NODE_RED.is_file():
        pytest.fail(f"{NODE_RED}: Node-RED is not installed; .ci/run installs it (npm install --prefix .node-red)")
    flows = json.loads((DEPLOY / "node-red" / "flow.json").read_text())
    for node in flows:  # the shipped flow, pointed at the test's broker; its log node to the console
        if node["type"] == "mqtt-broker":
            node["broker"], node["port"] = "127.0.0.1", str(broker.port)
        if node["type"] == "debug":
            node["console"] = True
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    (user_dir / "flows.json").write_text(json.dumps(flows))
    port = free_port()
    (user_dir / "settings.js").write_text(
        "module.exports = {uiPort: %d, uiHost: '127.0.0.1', flowFile: 'flows.json', httpAdminRoot: false,"
        " httpNodeRoot: false, credentialSecret: false, logging: {console: {level: 'info'}}};\n" % port)
    proc = subprocess.Popen(["node", str(NODE_RED), "--userDir", str(user_dir), "--settings",
                             str(user_dir / "settings.js")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, NODE_RED_ENABLE_PROJECTS="false"))
    log: list[str] = []
    import threading

    threading.Thread(target=lambda: [log.append(line) for line in proc.stdout], daemon=True).start()
    end = time.monotonic() + 60
    while not any("Connected to broker" in line for line in log):
        assert proc.poll() is None and time.monotonic() < end, "".join(log[-30:])
        time.sleep(0.1)
    yield log
    proc.terminate()
    proc.wait(timeout=20)


def test_node_red_flow_dedupes_and_warns_on_gaps(node_red, broker):
    log = node_red
    pub = mqtt.connect(mqtt.target(broker.url))

    def det(seq: int, boot: str = "b1") -> bytes:
        return json.dumps({"seq": seq, "boot": boot, "t": seq, "class": 3, "label": "shake",
                           "score": 0.9}).encode()

    for seq in (1, 2, 2, 5):  # a duplicate (QoS 1 delivers twice), then 3 and 4 missing
        pub.publish("edge/edge-21/detection", det(seq), 1).wait_for_publish(5)
    pub.publish("edge/edge-21/detection", det(1, "b2"), 1).wait_for_publish(5)  # a reboot: not a gap
    end = time.monotonic() + 20
    while sum("edge-21: shake" in line for line in log) < 4 and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(1)
    pub.disconnect()
    pub.loop_stop()
    text = "".join(log)
    confident = [line for line in log if "edge-21: shake 0.9" in line]
    assert len(confident) == 4, text[-3000:]  # 1, 2, 5 and the new boot's 1: the duplicate dropped
    warnings = [line for line in log if "detections missing" in line]
    assert len(warnings) == 1 and "edge-21: 2 detections missing" in warnings[0], text[-3000:]
