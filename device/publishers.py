# Where detections and status go. A publisher has publish(kind, payload) and
# poll(); serial is here, MQTT joins it behind the same two methods.
import sys

from link import frame


class Publisher:
    def publish(self, kind, payload):
        raise NotImplementedError

    def poll(self):
        pass

    def pending(self):
        """Messages not yet delivered."""
        return 0


class SerialPublisher(Publisher):
    """Checksummed lines on the USB serial console (sys.stdout)."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout

    def publish(self, kind, payload):
        self.out.write(frame(kind, payload))


class Fanout(Publisher):
    """Several publishers behind one: the serial console always, MQTT when configured."""

    def __init__(self, publishers):
        self.publishers = publishers

    def publish(self, kind, payload):
        for p in self.publishers:
            p.publish(kind, payload)

    def poll(self):
        for p in self.publishers:
            p.poll()

    def pending(self):
        return sum(p.pending() for p in self.publishers)


def make(cfg, device_id, labels, boot, anomaly=False):
    pubs = []  # type: list[Publisher]
    pubs.append(SerialPublisher())
    if cfg.get("kind") == "mqtt":
        pubs.append(MQTTPublisher(cfg, device_id, labels, boot, anomaly))
    return Fanout(pubs)


def start_wifi(cfg):
    """Join the configured WiFi network without waiting: MQTT retries until it is up."""
    if not cfg or not cfg.get("ssid"):
        return
    try:
        import network
    except ImportError:
        return  # no radio on this port (the unix port reaches the broker directly)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(cfg["ssid"], cfg.get("password", ""))


class MQTTPublisher(Publisher):
    """Detections, status and metrics on MQTT (topics: docs/mqtt.md), with Home
    Assistant discovery sent on every connect and when Home Assistant says online."""

    def __init__(self, cfg, device_id, labels, boot, anomaly=False):
        from mqtt import MQTTClient

        self.anomaly = anomaly  # an anomaly model: its discovery is a binary sensor
        self.prefix = "%s/%s" % (cfg.get("topic_prefix", "edge"), device_id)
        self.device_id = device_id
        self.labels = labels
        self.boot = boot
        self.client = MQTTClient(
            cfg.get("client_id") or "edge-agent-" + device_id, cfg.get("host", "localhost"),
            cfg.get("port", 1883), cfg.get("username"), cfg.get("password"), cfg.get("keepalive", 30),
            will=(self.prefix + "/status", "offline", True), queue_len=cfg.get("queue_len", 64),
            on_message=self._message, on_connect=self._connected)
        self.client.subscribe("homeassistant/status")

    def _connected(self):
        # status and discovery go ahead of anything queued while offline
        c = self.client
        c.queue.insert(0, (self.prefix + "/status", "online", 1, True, False))
        for topic, payload in discovery(self.prefix, self.device_id, self.labels, self.anomaly):
            c.queue.insert(1, (topic, payload, 1, True, False))

    def _message(self, topic, payload):
        if topic == "homeassistant/status" and payload == b"online":
            for topic, payload in discovery(self.prefix, self.device_id, self.labels, self.anomaly):
                self.client.publish(topic, payload, 1, True)

    def publish(self, kind, payload):
        import json

        from link import dumps

        c = self.client
        if kind == "det":
            c.publish(self.prefix + "/detection", dumps({
                "seq": payload["seq"], "boot": self.boot, "t": payload["t_ms"] / 1000,
                "class": payload["class"], "label": payload["label"], "score": payload["score"]}), 1)
        elif kind == "anom":
            end = payload["end_ms"]
            c.publish(self.prefix + "/anomaly", dumps({
                "seq": payload["seq"], "boot": self.boot, "t": payload["t_ms"] / 1000, "event": payload["event"],
                "score": payload["score"], "level": payload["level"], "threshold": payload["threshold"],
                "onset": payload["onset_ms"] / 1000, "end": None if end is None else end / 1000}), 1)
        elif kind == "status":
            metrics = dict(payload)
            metrics["boot"] = self.boot
            metrics["dropped"] = c.dropped
            metrics["queued"] = c.pending()
            c.publish(self.prefix + "/metrics", json.dumps(metrics), 0)
        elif kind in ("ready", "error"):
            c.publish(self.prefix + "/" + ("info" if kind == "ready" else "log"), json.dumps(payload), 1,
                      kind == "ready")

    def poll(self):
        self.client.poll()

    def pending(self):
        return self.client.pending()


def discovery(prefix, device_id, labels, anomaly=False):
    """Home Assistant MQTT discovery: an event entity (one event type per label)
    and a score sensor, both available while the status topic says online; for
    an anomaly model a binary sensor (on from onset to end) and its score.
    Host twin: edge_agent/mqtt/client.py discovery()."""
    import json

    device = {"identifiers": ["edge-agent-" + device_id], "name": device_id,
              "manufacturer": "edge-agent", "model": "LSTM detector"}
    avail = {"availability_topic": prefix + "/status", "payload_available": "online",
             "payload_not_available": "offline"}
    event = {"name": "Detection", "unique_id": device_id + "-detection", "state_topic": prefix + "/detection",
             "event_types": list(labels),
             "value_template": "{{ {'event_type': value_json.label, 'score': value_json.score, 'seq': value_json.seq} | tojson }}",
             "device": device}
    score = {"name": "Score", "unique_id": device_id + "-score", "state_topic": prefix + "/detection",
             "value_template": "{{ value_json.score }}", "state_class": "measurement", "device": device}
    event.update(avail)
    score.update(avail)
    if anomaly:
        flag = {"name": "Anomaly", "unique_id": device_id + "-anomaly", "state_topic": prefix + "/anomaly",
                "value_template": "{{ 'ON' if value_json.event == 'onset' else 'OFF' }}",
                "device_class": "problem", "device": device}
        level = {"name": "Anomaly score", "unique_id": device_id + "-anomaly-score",
                 "state_topic": prefix + "/anomaly", "value_template": "{{ value_json.score }}",
                 "state_class": "measurement", "device": device}
        flag.update(avail)
        level.update(avail)
        return [("homeassistant/binary_sensor/%s/anomaly/config" % device_id, json.dumps(flag)),
                ("homeassistant/sensor/%s/anomaly_score/config" % device_id, json.dumps(level))]
    return [("homeassistant/event/%s/detection/config" % device_id, json.dumps(event)),
            ("homeassistant/sensor/%s/score/config" % device_id, json.dumps(score))]
