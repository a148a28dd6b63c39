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

    def device(self, device_id: str) -> Device:
        return self.devices.setdefault(device_id, Device(device_id))

    def detection(self, device_id: str, det: dict, now: float | None = None) -> bool:
        """Record a detection; False if it is a duplicate (QoS 1 may deliver twice)."""
        now = time.time() if now is None else now
        dev = self.device(device_id)
        dev.last_seen = now
        boot, seq = str(det.get("boot", "")), int(det["seq"])
        if boot != dev.boot:  # a new boot starts its own numbering
            dev.boot, dev.last_seq, dev.seen = boot, 0, set()
        if seq in dev.seen:
            dev.duplicates += 1
            return False
        dev.seen.add(seq)
        if seq > dev.last_seq + 1:
            dev.gaps += seq - dev.last_seq - 1
        elif seq < dev.last_seq:
            dev.gaps -= 1  # a late arrival fills a gap counted before
        dev.last_seq = max(dev.last_seq, seq)
        dev.detections += 1
        dev.last_label, dev.last_score = det.get("label", ""), float(det.get("score", 0.0))
        dev.recent.append(now)
        return True

    def status(self, device_id: str, text: str, now: float | None = None) -> None:
        dev = self.device(device_id)
        dev.online = text == "online"
        dev.last_seen = time.time() if now is None else now

    def table(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        rows = [f"{'device':<16} {'status':<8} {'detections':>10} {'last':<14} {'score':>6} "
                f"{'/min':>6} {'gaps':>5} {'dups':>5} {'seen':>8}"]
        for dev in sorted(self.devices.values(), key=lambda d: d.device_id):
            state = {True: "online", False: "offline", None: "?"}[dev.online]
            ago = f"{now - dev.last_seen:.0f}s ago" if dev.last_seen else "-"
            rows.append(f"{dev.device_id:<16} {state:<8} {dev.detections:>10} {dev.last_label:<14} "
                        f"{dev.last_score:>6.3f} {dev.rate_per_min(now):>6.0f} {dev.gaps:>5} "
                        f"{dev.duplicates:>5} {ago:>8}")
        return "\n".join(rows)


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(device_id, kind) from <prefix>/<device>/<kind>, also under $share/<group>/."""
    parts = topic.split("/")
    if len(parts) < 3:
        return None
    return parts[-2], parts[-1]


def detection_line(device_id: str, det: dict) -> str:
    return json.dumps({"device_id": device_id, **det})


# ---- sources: each calls on_detection(device_id, det) and view updates from a thread ----

def mqtt_source(tgt, prefix: str = "edge", group: str | None = None, client_id: str | None = None):
    """Subscribe to every device's detection, status and metrics topics (as a
    shared subscription with a group; a persistent session with a client id)."""
    from . import client as mqtt

    def start(view: FleetView, on_detection):
        share = f"$share/{group}/" if group else ""
        topics = [f"{share}{prefix}/+/{kind}" for kind in ("detection", "status", "metrics")]

        def on_message(msg):
            where = parse_topic(msg.topic)
            if where is None:
                return
            device_id, kind = where
            try:
                if kind == "detection":
                    on_detection(device_id, json.loads(msg.payload))
                elif kind == "status":
                    view.status(device_id, msg.payload.decode(errors="replace"))
                elif kind == "metrics":
                    view.device(device_id).metrics = json.loads(msg.payload)
            except (ValueError, KeyError, TypeError):
                print(f"edge-agent: ignored a malformed message on {msg.topic}", file=sys.stderr)

        client = mqtt.connect(tgt, client_id, clean=client_id is None, v5=True, on_message=on_message,
                              on_connect=lambda c, f, r: [c.subscribe(t, 1) for t in topics])

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
                for msg in reader.feed(ser.read(ser.in_waiting or 1)):
                    if msg.kind == "ready":
                        device[0] = msg.payload.get("device_id", device[0])
                        view.status(device[0], "online")
                    elif msg.kind == "det":
                        on_detection(device[0], msg.payload)

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
