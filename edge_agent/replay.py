"""Replay a recording: the detections a board would publish, from any backend.

numpy: the integer reference. board: the samples stream over serial to a
flashed board, real or virtual, which sends its detections back. micropython:
the same as board, on a virtual board made and flashed for this replay.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import numpy as np

from .blob import QuantModel
from .board import link
from .config import Settings
from .errors import UserError
from .recording import Recording
from .reference.inputs import int8_inputs, to_raw
from .reference.lstm import IntegerLSTM
from .reference.stream import decide, score_fraction, stream_decisions

BACKENDS = ("numpy", "micropython", "board")


def numpy_detections(rec: Recording, qmodel: QuantModel, settings: Settings, progress=None) -> Iterator[dict]:
    labels = settings.labels_for(qmodel.class_names, qmodel.n_classes)
    x_q = int8_inputs(qmodel, rec.x)
    points = stream_decisions(IntegerLSTM(qmodel), x_q, settings.window, settings.hop, settings.continuous)
    if progress is not None:
        progress(len(rec.x))
    if not points:
        return
    classes, scores = decide(np.stack([logits for _, logits in points]), qmodel)
    limits = [settings.threshold_q15(label) for label in labels]
    seq = 0
    for (t, _), cls, score in zip(points, classes, scores):
        if score >= limits[cls]:
            seq += 1
            yield {"seq": seq, "t": round(float(rec.t[t]), 3), "class": int(cls),
                   "label": labels[cls], "score": score_fraction(score)}


class _BoardLink:
    """The runner's line protocol over a serial port, read by a thread so the
    board never blocks on a full output buffer while we write samples."""

    def __init__(self, port: str):
        self.serial = link.open_serial(port)
        self.messages: queue.Queue = queue.Queue()
        self.other: list[link.Message] = []  # messages passed over while waiting for one kind
        self.reader = link.Reader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.serial.read(self.serial.in_waiting or 1)
            except OSError:
                break
            for msg in self.reader.feed(chunk):
                self.messages.put(msg)

    def wait_for(self, kind: str, timeout: float, where=lambda p: True) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.kind == kind and where(msg.payload):
                return msg.payload
            self.other.append(msg)
        raise UserError(f"the board sent no '{kind}' within {timeout:.0f} s: is the runner flashed and running?")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.serial.close()


def board_detections(rec: Recording, qmodel: QuantModel, settings: Settings, port: str,
                     realtime: bool = False, progress=None) -> Iterator[dict]:
    raw = to_raw(rec.x, qmodel.inputs)
    board = _BoardLink(port)
    try:
        board.serial.write(link.command_line({"window": settings.window, "hop": settings.hop,
                                              "continuous": settings.continuous}))
        ack = board.wait_for("ack", 10)
        base = ack["samples"]
        period = 1.0 / settings.sensor.rate_hz
        next_t = time.monotonic()
        for n, row in enumerate(raw):
            if realtime:
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
            board.serial.write(link.sample_line(row))
            if progress is not None and n % 64 == 63:
                progress(64)
        if progress is not None:
            progress(len(raw) % 64)
        board.serial.write(link.command_line({"status": True}))
        board.wait_for("status", 60 + len(raw) * 0.01, lambda p: p["samples"] >= base + len(raw))
        dets = [m.payload for m in board.other if m.kind == "det"]
        while not board.messages.empty():
            msg = board.messages.get()
            if msg.kind == "det":
                dets.append(msg.payload)
    finally:
        board.close()
    for seq, det in enumerate(dets, start=1):
        t = det["sample"] - base
        yield {"seq": seq, "t": round(float(rec.t[t]), 3), "class": det["class"],
               "label": det["label"], "score": det["score"]}


def micropython_detections(rec: Recording, qmodel_path, qmodel: QuantModel, settings: Settings,
                           progress=None) -> Iterator[dict]:
    from .board.flash import flash
    from .board.virtual import VirtualBoard

    with VirtualBoard() as vboard:
        flash(settings, qmodel_path, port=vboard.port, progress=False, warn=lambda m: None)
        yield from board_detections(rec, qmodel, settings, vboard.port, progress=progress)


def detections(rec: Recording, qmodel: QuantModel, settings: Settings, backend: str = "numpy",
               blob_path=None, port: str | None = None, realtime: bool = False,
               progress=None) -> Iterator[dict]:
    if rec.x.shape[1] != qmodel.n_inputs:
        raise UserError(f"recording has {rec.x.shape[1]} channels, the model takes {qmodel.n_inputs}")
    settings.labels_for(qmodel.class_names, qmodel.n_classes)
    if backend == "numpy":
        return numpy_detections(rec, qmodel, settings, progress)
    if backend == "micropython":
        return micropython_detections(rec, blob_path, qmodel, settings, progress)
    if backend == "board":
        from .board.flash import find_port

        return board_detections(rec, qmodel, settings, find_port(port or settings.port), realtime, progress)
    raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def publish_mqtt(dets, tgt, settings: Settings, qmodel: QuantModel, device_id: str | None = None):
    """Publish detections exactly as a board would (status and discovery on
    connect, detections at QoS 1 with seq and a boot id, metrics, then offline);
    yields each detection once it is handed to the broker."""
    import json
    import os

    from .mqtt import client as mqtt

    device_id = device_id or settings.device_id
    prefix = settings.publisher.topic_prefix
    labels = settings.labels_for(qmodel.class_names, qmodel.n_classes)
    boot = os.urandom(4).hex()
    status = mqtt.topic(prefix, device_id, "status")

    def announce(client, *_):
        client.publish(status, "online", 1, True)
        for topic, payload in mqtt.discovery(prefix, device_id, labels):
            client.publish(topic, payload, 1, True)

    def on_message(msg):  # Home Assistant restarted: send discovery again
        if msg.topic == "homeassistant/status" and msg.payload == b"online":
            announce(client)

    client = mqtt.connect(tgt, f"edge-agent-replay-{device_id}", will=(status, "offline", 1, True),
                          on_connect=announce, on_message=on_message)
    client.subscribe("homeassistant/status")
    infos, n = [], 0
    try:
        for det in dets:
            n += 1
            payload = {"seq": det["seq"], "boot": boot, "t": det["t"], "class": det["class"],
                       "label": det["label"], "score": det["score"]}
            infos.append(client.publish(mqtt.topic(prefix, device_id, "detection"), json.dumps(payload), 1))
            yield det
        client.publish(mqtt.topic(prefix, device_id, "metrics"), json.dumps({"boot": boot, "detections": n}), 0)
        for info in infos:
            info.wait_for_publish(30)
        client.publish(status, "offline", 1, True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
