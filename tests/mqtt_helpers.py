"""Boards, monitors and subscribers for the MQTT tests: all real processes."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import serial

from edge_agent import config
from edge_agent.board import flash, link
from edge_agent.board.virtual import VirtualBoard

ROOT = Path(__file__).resolve().parents[1]
DEMO_BLOB = ROOT / "edge_agent" / "data" / "demo.bin"


def settings_for(broker_url: str | None, device_id: str, window: int = 5):
    s = config.load(ROOT / "config.yaml")
    s.device_id = device_id
    s.window = s.hop = window
    s.thresholds = {"default": 0.0}  # every window is a detection
    if broker_url:
        s.publisher.kind = "mqtt"
        s.publisher.mqtt_url = broker_url
    return s


class Board:
    """A flashed virtual board; samples in through the pty, serial lines drained."""

    def __init__(self, flash_dir: Path, settings, drain: bool = True):
        self.vboard = VirtualBoard(flash_dir).start()
        self.port = self.vboard.port
        try:
            self.result = flash.flash(settings, DEMO_BLOB, self.port, progress=False)
        except BaseException:
            self.vboard.stop()
            raise
        self.lines: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.writer = os.open(self.port, os.O_WRONLY | os.O_NOCTTY)
        if drain:
            self.ser = serial.Serial(self.port, 115200, timeout=0.1)
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        reader = link.Reader()
        while not self._stop.is_set():
            try:
                chunk = self.ser.read(self.ser.in_waiting or 1)
            except (OSError, serial.SerialException):
                return
            for msg in reader.feed(chunk):
                self.lines.put(msg)

    def samples(self, n: int, value: int = 100):
        for i in range(n):
            os.write(self.writer, link.sample_line([value + (i % 7) * 50] * 6))
            if i % 50 == 49:
                time.sleep(0.01)

    def close(self):
        self._stop.set()
        os.close(self.writer)
        self.vboard.stop()


STARTED: list[subprocess.Popen] = []  # conftest's reap_cli kills what a failed test left running


def edge_agent(*args, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **kw.pop("env", {}))
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)
    STARTED.append(proc)
    return proc


def seqs(stdout: str, device_id: str | None = None) -> list[int]:
    out = []
    for line in stdout.splitlines():
        det = json.loads(line)
        if device_id is None or det["device_id"] == device_id:
            out.append(det["seq"])
    return out


class Subscriber:
    """A paho subscriber collecting (topic, payload, retain) on a queue."""

    def __init__(self, url: str, topics: list[str], username=None, password=None):
        from edge_agent.mqtt import client as mqtt

        tgt = mqtt.target(url, username)
        tgt.password = password
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.connect(tgt, on_message=lambda m: self.messages.put((m.topic, m.payload, m.retain)),
                                   on_connect=lambda c, f, r: [c.subscribe(t, 1) for t in topics])
        time.sleep(0.3)

    def collect(self, seconds: float) -> list:
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            try:
                got.append(self.messages.get(timeout=0.05))
            except queue.Empty:
                pass
        return got

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def says(proc: subprocess.Popen, words: str, timeout: float = 60) -> None:
    """Wait for a line holding `words` on proc's stderr (a fixed sleep is too
    short on a loaded machine)."""
    import select

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
            if words in line:
                return
            if not line:
                raise AssertionError(f"{proc.args[3]} ended before saying {words!r} (status {proc.wait()})")
    raise AssertionError(f"{proc.args[3]} did not say {words!r} within {timeout:.0f} s")


def listening(monitor: subprocess.Popen) -> None:
    """The broker has acknowledged the monitor's subscriptions."""
    says(monitor, "listening on")
