"""MQTT on the host: connection settings, topics and payloads (docs/mqtt.md).

paho-mqtt 2.x does the protocol. The payloads here are the ones a board sends
(device/publishers.py is the board's twin), so replay --mqtt and the bridge
publish exactly what a WiFi board would.
"""
from __future__ import annotations

import json
import os
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..board import link
from ..errors import UserError

PASSWORD_ENV = "EDGE_AGENT_MQTT_PASSWORD"


@dataclass
class Target:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"Target({self.host}:{self.port}, tls={self.tls}, user={self.username!r})"


def _redacted(url: str) -> str:
    """url for a message: no password, cut short."""
    head, at, tail = url.rpartition("@")
    if at:
        url = head.split(":", 2)[0] + ("://" if "://" in head else "") + "***@" + tail if "://" in head \
            else "***@" + tail
    return url[:80]


def target(url: str, username: str | None = None, password_file: str | None = None,
           ca_file: str | None = None, insecure: bool = False) -> Target:
    """mqtt://[user@]host[:port] or mqtts://...; the password comes from the
    file given, else $EDGE_AGENT_MQTT_PASSWORD (never from the URL or the command line)."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise UserError(f"--mqtt {_redacted(url)!r}: not a URL with a numeric port; "
                        "expected mqtt://host[:port]") from None
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise UserError(f"--mqtt {_redacted(url)!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    if parsed.password:
        raise UserError("--mqtt: put no password in the URL; use $EDGE_AGENT_MQTT_PASSWORD or --password-file")
    tls = parsed.scheme == "mqtts" or ca_file is not None
    port = parsed.port or (8883 if tls else 1883)
    password = None
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--password-file {password_file}: {exc.strerror}") from None
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    user = username or (unquote(parsed.username) if parsed.username else None)
    return Target(parsed.hostname, port, tls, user, password, ca_file, insecure)


def topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/{device_id}/{kind}"


def discovery(prefix: str, device_id: str, labels: list[str], anomaly: bool = False) -> list[tuple[str, str]]:
    """Home Assistant discovery configs (retained); the board's twin is
    device/publishers.py discovery(), and a test holds the two equal. An anomaly
    model gets a binary sensor (on from onset to end) and its score instead."""
    base = f"{prefix}/{device_id}"
    device = {"identifiers": ["edge-agent-" + device_id], "name": device_id,
              "manufacturer": "edge-agent", "model": "LSTM detector"}
    avail = {"availability_topic": base + "/status", "payload_available": "online",
             "payload_not_available": "offline"}
    event = {"name": "Detection", "unique_id": device_id + "-detection", "state_topic": base + "/detection",
             "event_types": list(labels),
             "value_template": "{{ {'event_type': value_json.label, 'score': value_json.score, "
                               "'seq': value_json.seq} | tojson }}",
             "device": device, **avail}
    score = {"name": "Score", "unique_id": device_id + "-score", "state_topic": base + "/detection",
             "value_template": "{{ value_json.score }}", "state_class": "measurement",
             "device": device, **avail}
    if anomaly:
        flag = {"name": "Anomaly", "unique_id": device_id + "-anomaly", "state_topic": base + "/anomaly",
                "value_template": "{{ 'ON' if value_json.event == 'onset' else 'OFF' }}",
                "device_class": "problem", "device": device, **avail}
        level = {"name": "Anomaly score", "unique_id": device_id + "-anomaly-score",
                 "state_topic": base + "/anomaly", "value_template": "{{ value_json.score }}",
                 "state_class": "measurement", "device": device, **avail}
        return [(f"homeassistant/binary_sensor/{device_id}/anomaly/config", json.dumps(flag)),
                (f"homeassistant/sensor/{device_id}/anomaly_score/config", json.dumps(level))]
    return [(f"homeassistant/event/{device_id}/detection/config", json.dumps(event)),
            (f"homeassistant/sensor/{device_id}/score/config", json.dumps(score))]


MAX_PAYLOAD = 65536  # bytes: a detection is ~100; anything far larger is not ours


def _seconds(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e12


DETECTION = {"seq": link.COUNT, "boot": link._text(64), "t": _seconds, "class": link.COUNT,
             "label": link._text(), "score": link._number(0, 1)}


def parse_detection(payload: bytes) -> dict:
    """A detection payload (docs/mqtt.md) checked against its schema; ValueError if it breaks it."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes is too long for a detection")
    det = link.loads(payload)
    problem = link.schema_problem(det, DETECTION)
    if problem:
        raise ValueError(problem)
    return det


def _end(v):
    return v is None or _seconds(v)


ANOMALY = {"seq": link.COUNT, "boot": link._text(64), "t": _seconds, "event": link._text(8),
           "score": _seconds, "level": link.COUNT, "threshold": link.COUNT, "onset": _seconds, "end": _end}


def parse_anomaly(payload: bytes) -> dict:
    """An anomaly event payload (docs/mqtt.md) checked against its schema; ValueError if it breaks it."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes is too long for an anomaly event")
    msg = link.loads(payload)
    problem = link.schema_problem(msg, ANOMALY)
    if problem or msg["event"] not in ("onset", "end"):
        raise ValueError(problem or "event must be onset or end")
    return msg


def parse_metrics(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes is too long for metrics")
    metrics = link.loads(payload)
    if not isinstance(metrics, dict):
        raise ValueError("metrics must be a JSON object")
    return metrics


def board_message(prefix: str, device_id: str, boot: str, kind: str, payload: dict):
    """A board line (device/link.py) as the MQTT message a WiFi board would send:
    (topic, payload, qos, retain), or None for kinds that stay on serial."""
    base = f"{prefix}/{device_id}"
    if kind == "det":
        return (base + "/detection", json.dumps({
            "seq": payload["seq"], "boot": boot, "t": payload["t_ms"] / 1000, "class": payload["class"],
            "label": payload["label"], "score": payload["score"]}, allow_nan=False), 1, False)
    if kind == "anom":
        end = payload["end_ms"]
        return (base + "/anomaly", json.dumps({
            "seq": payload["seq"], "boot": boot, "t": payload["t_ms"] / 1000, "event": payload["event"],
            "score": payload["score"], "level": payload["level"], "threshold": payload["threshold"],
            "onset": payload["onset_ms"] / 1000, "end": None if end is None else end / 1000},
            allow_nan=False), 1, False)
    if kind == "status":
        return base + "/metrics", json.dumps(dict(payload, boot=boot), allow_nan=False), 0, False
    if kind == "ready":
        return base + "/info", json.dumps(payload, allow_nan=False), 1, True
    if kind == "error":
        return base + "/log", json.dumps(payload, allow_nan=False), 1, False
    return None


_CONNACK_HINTS = {
    "Bad user name or password": "wrong MQTT user name or password",
    "Not authorized": "the broker refused these credentials (not authorized)",
}


def connect(tgt: Target, client_id: str | None = None, clean: bool = True, will: tuple | None = None,
            v5: bool = False, timeout: float = 10.0, on_message=None, on_connect=None,
            on_disconnect=None, on_publish=None, on_subscribe=None, wait: bool = True, log=None):
    """A connected paho client with its network loop running, or one clear UserError.
    wait=False: a broker that is down is not an error; the loop keeps trying
    (for the bridge, which must queue while the broker is away)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    protocol = paho.MQTTv5 if v5 else paho.MQTTv311
    client_id = client_id or f"edge-agent-{uuid.uuid4().hex[:8]}"
    kwargs = {"clean_session": clean} if not v5 else {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
    if tgt.username is not None:
        client.username_pw_set(tgt.username, tgt.password)
    if tgt.tls:
        client.tls_set(ca_certs=tgt.ca_file, cert_reqs=ssl.CERT_NONE if tgt.insecure else ssl.CERT_REQUIRED)
        client.tls_insecure_set(tgt.insecure)
    if will:
        client.will_set(*will)
    first = threading.Event()
    outcome: dict = {}

    def _on_connect(c, userdata, flags, reason, properties):
        if not first.is_set():
            outcome["reason"] = reason
            first.set()
        if reason.is_failure and log:  # a background reconnect refused: say why, keep trying
            log(f"MQTT broker {tgt.host}:{tgt.port}: {_CONNACK_HINTS.get(str(reason), str(reason))}")
        if not reason.is_failure and on_connect:
            on_connect(c, flags, reason)

    def _on_disconnect(c, userdata, flags, reason, properties):
        if on_disconnect:
            on_disconnect(c, reason)

    client.on_connect = _on_connect
    client.on_disconnect = _on_disconnect
    if on_message:
        client.on_message = lambda c, u, msg: on_message(msg)
    if on_publish:
        client.on_publish = lambda c, u, mid, reason, props: on_publish(mid)
    if on_subscribe:
        client.on_subscribe = lambda c, u, mid, reasons, props: on_subscribe(reasons)
    client.reconnect_delay_set(min_delay=0.2, max_delay=5)
    props = None
    if v5 and not clean:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # keep our queued messages across a broker restart
    where = f"{tgt.host}:{tgt.port}"
    args = {"keepalive": 30, **({"clean_start": clean, "properties": props} if v5 else {})}
    try:
        client.connect(tgt.host, tgt.port, **args)
    except ssl.SSLError as exc:
        raise UserError(f"MQTT broker {where}: TLS failed ({exc.reason or exc})") from None
    except OSError as exc:
        if wait:
            raise UserError(f"MQTT broker {where}: cannot connect ({exc.strerror or exc})") from None
        client.connect_async(tgt.host, tgt.port, **args)  # the loop retries until it is up
    client.loop_start()
    if not wait:
        return client
    if not first.wait(timeout):
        client.loop_stop()
        raise UserError(f"MQTT broker {where}: no answer to CONNECT within {timeout:.0f} s")
    reason = outcome["reason"]
    if reason.is_failure:
        client.loop_stop()
        client.disconnect()
        text = _CONNACK_HINTS.get(str(reason), str(reason))
        raise UserError(f"MQTT broker {where}: {text}")
    return client
