"""edge-agent bridge: a serial-only board's messages to MQTT, store and forward.

Every message from the board goes first into an on-disk queue (SQLite: atomic,
crash-safe, in the standard library), and leaves it only when the broker has
acknowledged it (QoS 1 PUBACK). So a broker outage, or the bridge's own
restart, loses nothing that reached the disk: delivery is at least once, and
subscribers drop duplicates by (device, boot, seq).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..board import link
from ..errors import UserError
from . import client as mqtt


@dataclass
class QueueLimits:
    max_messages: int = 10000
    max_bytes: int = 10_000_000
    ttl_s: float = 7 * 24 * 3600
    drop: str = "oldest"  # oldest: keep the newest messages; newest: refuse new ones when full


class DiskQueue:
    def __init__(self, path: str | Path, limits: QueueLimits):
        self.limits = limits
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the bridge crashing or being killed (WAL);
            # only a power cut may lose the last few, and fsync per message costs 10x
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, "
                            "payload BLOB, qos INTEGER, retain INTEGER, created REAL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
        except sqlite3.Error as exc:
            raise UserError(f"{path}: cannot open the bridge queue ({exc})") from None
        self.lock = threading.Lock()
        # size kept in memory (one writer: this process), so a put is O(1) however long the backlog
        self.count, self.bytes = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM q").fetchone()
        self.next_expiry = 0.0

    def _bump(self, name: str, n: int = 1) -> None:
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                        (name, n, n))

    def counters(self) -> dict:
        with self.lock:
            out = dict(self.db.execute("SELECT name, value FROM counters"))
            return {"queued": self.count, "queued_bytes": self.bytes,
                    **{k: out.get(k, 0) for k in ("received", "sent", "dropped", "expired")}}

    def put(self, messages: list[tuple[str, bytes, int, bool]]) -> int:
        """Store messages (topic, payload, qos, retain) in one transaction; returns how many were kept."""
        kept = 0
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                n, size = self.count, self.bytes
                for topic, payload, qos, retain in messages:
                    self._bump("received")
                    full = lambda: n + 1 > self.limits.max_messages or size + len(payload) > self.limits.max_bytes
                    if full() and self.limits.drop == "newest":
                        self._bump("dropped")
                        continue
                    while n and full():
                        row = self.db.execute("SELECT id, LENGTH(payload) FROM q ORDER BY id LIMIT 1").fetchone()
                        self.db.execute("DELETE FROM q WHERE id = ?", (row[0],))
                        self._bump("dropped")
                        n, size = n - 1, size - row[1]
                    self.db.execute("INSERT INTO q (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                                    (topic, payload, qos, int(retain), time.time()))
                    n, size, kept = n + 1, size + len(payload), kept + 1
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.count, self.bytes = n, size
        return kept

    def oldest(self, limit: int, exclude: set[int]) -> list[tuple]:
        with self.lock:
            if time.monotonic() >= self.next_expiry:  # TTL, checked once a second
                self.next_expiry = time.monotonic() + 1.0
                gone = self.db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM q "
                                       "WHERE created < ?", (time.time() - self.limits.ttl_s,)).fetchone()
                if gone[0]:
                    self.db.execute("DELETE FROM q WHERE created < ?", (time.time() - self.limits.ttl_s,))
                    self._bump("expired", gone[0])
                    self.count, self.bytes = self.count - gone[0], self.bytes - gone[1]
            rows = self.db.execute("SELECT id, topic, payload, qos, retain FROM q ORDER BY id LIMIT ?",
                                   (limit + len(exclude),)).fetchall()
        return [r for r in rows if r[0] not in exclude][:limit]

    def done(self, row_ids: list[int]) -> None:
        """Forget messages the broker has acknowledged, in one transaction."""
        if not row_ids:
            return
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            for row_id in row_ids:
                size = self.db.execute("SELECT LENGTH(payload) FROM q WHERE id = ?", (row_id,)).fetchone()
                if size is not None:
                    self.db.execute("DELETE FROM q WHERE id = ?", (row_id,))
                    self._bump("sent")
                    self.count, self.bytes = self.count - 1, self.bytes - size[0]
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class Bridge:
    """Board lines in, MQTT out through the disk queue."""

    def __init__(self, tgt: mqtt.Target, queue: DiskQueue, device_id: str, prefix: str = "edge",
                 client_id: str | None = None, window: int = 256, v5: bool = False, log=None):
        self.queue = queue
        self.device_id = device_id
        self.prefix = prefix
        self.boot = ""
        self.labels: list[str] = []
        self.anomaly = False  # the board runs an anomaly model (its ready message says): discovery differs
        self.window = window
        self.log = log or (lambda msg: None)
        self.inflight: dict[int, int] = {}  # paho mid -> queue row id
        self.acked: list[int] = []  # row ids acknowledged, forgotten at the next pump
        self.lock = threading.Lock()
        self.connected = threading.Event()
        status = mqtt.topic(prefix, device_id, "status")
        self.client = mqtt.connect(
            tgt, client_id or f"edge-agent-bridge-{device_id}", clean=False, v5=v5,
            will=(status, "offline", 1, True), on_connect=self._on_connect,
            on_disconnect=self._on_disconnect, on_publish=self._on_publish, wait=False, log=self.log)

    def _on_connect(self, client, flags, reason) -> None:
        client.publish(mqtt.topic(self.prefix, self.device_id, "status"), "online", 1, True)
        if self.labels:
            for topic, payload in mqtt.discovery(self.prefix, self.device_id, self.labels, self.anomaly):
                client.publish(topic, payload, 1, True)
        with self.lock:
            self.inflight.clear()  # unacknowledged rows are sent again
        self.connected.set()

    def _on_disconnect(self, client, reason) -> None:
        self.connected.clear()

    def _on_publish(self, mid: int) -> None:
        with self.lock:
            row = self.inflight.pop(mid, None)
            if row is not None:
                self.acked.append(row)

    def board_messages(self, messages: list[link.Message]) -> None:
        """Board messages -> MQTT messages, stored together in one transaction."""
        out = []
        for msg in messages:
            try:
                out += self._to_mqtt(msg)
            except (KeyError, TypeError, ValueError):  # the reader checked the schema; belt and braces
                self.log(f"skipped a malformed '{msg.kind[:10]}' message from the board")
        if out:
            self.queue.put(out)

    def _to_mqtt(self, msg: link.Message) -> list:
        """One board message as the MQTT messages it becomes."""
        out = []
        if msg.kind == "ready":
            self.boot = msg.payload.get("boot", self.boot)
            self.labels = msg.payload.get("labels", self.labels)
            self.anomaly = msg.payload.get("task") == "anomaly"
            out += [(t, p.encode(), 1, True)
                    for t, p in mqtt.discovery(self.prefix, self.device_id, self.labels, self.anomaly)]
        message = mqtt.board_message(self.prefix, self.device_id, msg.payload.get("boot", self.boot),
                                     msg.kind, msg.payload)
        if message:
            topic, payload, qos, retain = message
            if msg.kind == "status":
                payload = json.dumps(dict(json.loads(payload), bridge=self.queue.counters()), allow_nan=False)
            out.append((topic, payload.encode(), qos, retain))
        return out

    def pump(self) -> int:
        """Forget acknowledged rows; publish queued ones while connected, up to
        `window` awaiting PUBACK."""
        with self.lock:
            acked, self.acked = self.acked, []
        self.queue.done(acked)
        if not self.connected.is_set():
            return 0
        with self.lock:
            busy = set(self.inflight.values())
            room = self.window - len(busy)
        if room <= 0:
            return 0
        sent = 0
        for row_id, topic, payload, qos, retain in self.queue.oldest(room, busy):
            info = self.client.publish(topic, payload, qos, bool(retain))
            if info.rc != 0:
                break
            if qos == 0:
                self.queue.done([row_id])
            else:
                with self.lock:
                    self.inflight[info.mid] = row_id
            sent += 1
        return sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.queue.close()


def run(port: str, bridge: Bridge, stop: threading.Event, on_open=lambda: None) -> None:
    """Read the board's serial port into the bridge until stop is set; on_open
    once the port is open (what the board said before that is not seen)."""
    import serial

    ser = link.open_serial(port, timeout=0.05)
    on_open()
    reader = link.Reader()
    try:
        while not stop.is_set():
            try:
                chunk = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise UserError(f"{port}: the board went away ({exc})") from None
            dropped = reader.dropped
            bridge.board_messages(reader.feed(chunk))
            if reader.dropped > dropped:
                bridge.log(f"dropped {reader.dropped - dropped} corrupt, malformed or overlong line(s) "
                           "from the board")
            bridge.pump()
    finally:
        ser.close()
