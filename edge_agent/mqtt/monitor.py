"""edge-agent monitor: what a fleet of detectors is saying, from MQTT or a serial board.

FleetView keeps, per device: online/offline, last detection, detection rate,
gaps and duplicates in seq (per boot id, so a reboot is not a gap), last seen.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Device:
    device_id: str
    online: bool | None = None
    boot: str | None = None
    last_seq: int = 0
    seen: set = field(default_factory=set)
    gaps: int = 0
    duplicates: int = 0
    detections: int = 0
    last_label: str = ""
    last_score: float = 0.0
    last_seen: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=256))
    metrics: dict = field(default_factory=dict)

    def rate_per_min(self, now: float) -> float:
        while self.recent and now - self.recent[0] > 60:
            self.recent.popleft()
        return float(len(self.recent))


class FleetView:
    def __init__(self):
        self.devices: dict[str, Device] = {}
        self.ignored = 0  # messages that broke their schema: skipped, counted, never fatal
        self.dropped_lines = 0  # serial lines the reader dropped (checksum, schema, length)

    def device(self, device_id: str) -> Device:
        return self.devices.setdefault(device_id, Device(device_id))

    def detection(self, device_id: str, det: dict, now: float | None = None) -> bool:
        """Record a detection; False if it is a duplicate (QoS 1 may deliver twice)."""
        now = time.time() if now is None else now
        dev = self.device(device_id)
        dev.last_seen = now
        boot, seq = str(det.get("boot", ""))[:64], int(det["seq"])
        if boot != dev.boot:  # a new boot starts its own numbering
            dev.boot, dev.last_seq, dev.seen = boot, 0, set()
        if seq in dev.seen:
            dev.duplicates += 1
            return False
        dev.seen.add(seq)
        if len(dev.seen) > 8192:  # bounded, whatever a publisher sends: keep the recent seqs
            dev.seen = {s for s in dev.seen if s > max(dev.last_seq, seq) - 4096}
        if seq > dev.last_seq + 1:
            dev.gaps += seq - dev.last_seq - 1
        elif seq < dev.last_seq:
            dev.gaps -= 1  # a late arrival fills a gap counted before
        dev.last_seq = max(dev.last_seq, seq)
        dev.detections += 1
        # an anomaly event (docs/mqtt.md) shows as "anomaly onset" / "anomaly end", its score x threshold
        label = det["label"] if "label" in det else f"anomaly {det.get('event', '')}"
        dev.last_label, dev.last_score = str(label)[:64], float(det.get("score", 0.0))
        dev.recent.append(now)
        return True

    def status(self, device_id: str, text: str, now: float | None = None) -> None:
        dev = self.device(device_id)
        dev.online = text == "online"
        dev.last_seen = time.time() if now is None else now

    def table(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        rows = [f"{'device':<16} {'status':<8} {'detections':>10} {'last':<14} {'score':>6} "
                f"{'/min':>6} {'gaps':>5} {'dups':>5} {'seen':>8} {'us/step':>12} {'cpu':>6}"]
        for dev in sorted(self.devices.values(), key=lambda d: d.device_id):
            state = {True: "online", False: "offline", None: "?"}[dev.online]
            ago = f"{now - dev.last_seen:.0f}s ago" if dev.last_seen else "-"
            rows.append(f"{dev.device_id:<16} {state:<8} {dev.detections:>10} {dev.last_label:<14} "
                        f"{dev.last_score:>6.3f} {dev.rate_per_min(now):>6.0f} {dev.gaps:>5} "
                        f"{dev.duplicates:>5} {ago:>8} {cost(dev.metrics)}")
        if self.ignored or self.dropped_lines:
            rows.append(f"({self.ignored + self.dropped_lines} malformed message(s) ignored)")
        return "\n".join(rows)


def cost(metrics: dict) -> str:
    """The board's own cost from its last status: mean/max us per sample, CPU load."""
    if "step_us_mean" not in metrics:
        return f"{'-':>12} {'-':>6}"
    try:  # metrics come from the network: a bad value shows as '?', never ends the view
        step = f"{metrics['step_us_mean']}/{metrics.get('step_us_max', '-')}"[:12]
        return f"{step:>12} {100 * float(metrics.get('cpu_load', 0)):>5.1f}%"
    except (TypeError, ValueError, OverflowError):
        return f"{'?':>12} {'?':>6}"


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(device_id, kind) from <prefix>/<device>/<kind>, also under $share/<group>/."""
    parts = topic.split("/")
    if len(parts) < 3:
        return None
    return parts[-2], parts[-1]


def detection_line(device_id: str, det: dict) -> str:
    return json.dumps({"device_id": device_id, **det})


def handle_message(view: FleetView, on_detection, topic: str, payload: bytes) -> bool:
    """One MQTT message into the view; False if it was malformed (counted, never raised:
    this runs on paho's network thread, which must outlive anything a publisher sends)."""
    from . import client as mqtt

    try:
        where = parse_topic(topic)
        if where is None:
            return True
        device_id, kind = where
        device_id = device_id[:64]
        if kind == "detection":
            on_detection(device_id, mqtt.parse_detection(payload))
        elif kind == "anomaly":
            on_detection(device_id, mqtt.parse_anomaly(payload))
        elif kind == "status":
            view.status(device_id, payload[:64].decode(errors="replace"))
        elif kind == "metrics":
            view.device(device_id).metrics = mqtt.parse_metrics(payload)
        return True
    except Exception:  # noqa: BLE001 (a hostile payload: count it, keep listening)
        view.ignored += 1
        if view.ignored <= 10 or view.ignored % 1000 == 0:
            print(f"edge-agent: ignored a malformed message on {topic[:120]!r} ({view.ignored} so far)",
                  file=sys.stderr)
        return False


# ---- sources: each calls on_detection(device_id, det) and view updates from a thread ----

def mqtt_source(tgt, prefix: str = "edge", group: str | None = None, client_id: str | None = None):
    """Subscribe to every device's detection, status and metrics topics (as a
    shared subscription with a group; a persistent session with a client id)."""
    from . import client as mqtt

    def start(view: FleetView, on_detection):
        share = f"$share/{group}/" if group else ""
        topics = [f"{share}{prefix}/+/{kind}" for kind in ("detection", "anomaly", "status", "metrics")]

        def on_message(msg):
            handle_message(view, on_detection, msg.topic, msg.payload)

        def on_subscribe(reasons):  # the broker's acknowledgement: from here on nothing is missed
            refused = [str(r) for r in reasons if r.is_failure]
            print(f"edge-agent: listening on {tgt.host}:{tgt.port} {share}{prefix}/+/..."
                  + (f" (refused: {', '.join(refused)})" if refused else ""), file=sys.stderr, flush=True)

        client = mqtt.connect(tgt, client_id, clean=client_id is None, v5=True, on_message=on_message,
                              on_connect=lambda c, f, r: c.subscribe([(t, 1) for t in topics]),
                              on_subscribe=on_subscribe)

        def stop():
            client.disconnect()
            client.loop_stop()
        return stop
    return start


def serial_source(port: str):
    """A board on serial: its detection lines, named by the device id it announces."""
    from ..board import link

    def start(view: FleetView, on_detection):
        ser = link.open_serial(port)
        reader = link.Reader()
        done = threading.Event()
        device = ["serial"]

        def read():
            while not done.is_set():
                try:
                    chunk = ser.read(ser.in_waiting or 1)
                except (OSError, ValueError):  # the port went away (pyserial's errors are OSErrors)
                    print(f"edge-agent: {port}: the board went away", file=sys.stderr)
                    done.set()
                    return
                for msg in reader.feed(chunk):  # the reader drops and counts malformed lines
                    try:
                        if msg.kind == "ready":
                            device[0] = msg.payload.get("device_id", device[0])
                            view.status(device[0], "online")
                        elif msg.kind in ("det", "anom"):
                            on_detection(device[0], msg.payload)
                        elif msg.kind == "status":
                            view.device(device[0]).metrics = msg.payload
                    except Exception:  # noqa: BLE001 (the reader thread must outlive any line)
                        view.ignored += 1
                view.dropped_lines = reader.dropped

        thread = threading.Thread(target=read, daemon=True)
        thread.start()

        def stop():
            done.set()
            thread.join(timeout=1)
            ser.close()
        return stop
    return start


def run(source, as_json: bool = False, count: int | None = None, out=None) -> FleetView:
    """Watch until `count` unique detections (or Ctrl-C): JSON lines, or the live table."""
    out = out or sys.stdout
    view = FleetView()
    done = threading.Event()
    lock = threading.Lock()
    seen = [0]

    def on_detection(device_id: str, det: dict) -> None:
        with lock:
            if (count and seen[0] >= count) or not view.detection(device_id, det):
                return  # done already, or a duplicate
            seen[0] += 1
            if as_json:
                print(detection_line(device_id, det), file=out, flush=True)
            if count and seen[0] >= count:
                done.set()

    stop = source(view, on_detection)
    tty = out.isatty()
    last = 0.0
    try:
        while not done.wait(0.2):
            if not as_json and time.monotonic() - last >= (1 if tty else 5):
                last = time.monotonic()
                print(("\x1b[H\x1b[2J" if tty else "") + view.table(), file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    if not as_json:
        print(view.table(), file=out, flush=True)
    return view
