"""edge-agent monitor: what a fleet of detectors is saying, from MQTT or a serial board.

FleetView keeps, per device: online/offline, last detection, detection rate,
gaps and duplicates in seq (per boot id, so a reboot is not a gap), last seen.
"""
from __future__ import annotations

import json
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
