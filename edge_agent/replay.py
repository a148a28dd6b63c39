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
from .learn.anomaly import frontend_samples
from .recording import Recording
from .reference.inputs import model_inputs, to_raw
from .reference.lstm import IntegerLSTM
from .reference.frontend import int8_features
from .reference.stream import decide, score_fraction, smooth_detections, stream_decisions

BACKENDS = ("numpy", "micropython", "board")


def numpy_detections(rec: Recording, qmodel: QuantModel, settings: Settings, progress=None) -> Iterator[dict]:
    labels = settings.labels_for(qmodel.class_names, qmodel.n_classes)
    if qmodel.frontend is not None:  # audio or vibration: windows and hops count front-end frames
        x_q, at = int8_features(qmodel, frontend_samples(rec.x))
    else:
        x_q, at = model_inputs(qmodel, rec.x), np.arange(len(rec.x))
    points = stream_decisions(IntegerLSTM(qmodel), x_q, settings.window, settings.hop, settings.continuous)
    if progress is not None:
        progress(len(rec.x))
    if not points:
        return
    classes, scores = decide(np.stack([logits for _, logits in points]), qmodel)
    limits = [settings.threshold_q15(label) for label in labels]
    found = smooth_detections(classes, scores, limits, settings.smooth, settings.refractory)
    for seq, (i, score) in enumerate(found, start=1):
        t, cls = at[points[i][0]], int(classes[i])
        yield {"seq": seq, "t": round(float(rec.t[t]), 3), "class": cls,
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

    def wait_for(self, kind: str, timeout: float, where=lambda p: True, stall: float = 0.0) -> dict:
        """The first `kind` message that passes `where`. Gives up after `timeout`
        s, or, with `stall`, only once the board has also sent nothing for that
        long: a board still detecting or reporting status is still working."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.kind == kind and where(msg.payload):
                return msg.payload
            self.other.append(msg)
            end = max(end, time.monotonic() + stall)
        raise UserError(f"the board sent no '{kind}' within {timeout:.0f} s: is the runner flashed and running?")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.serial.close()


def _send_lines(board: _BoardLink, raw: np.ndarray, rate_hz: float, realtime: bool, progress) -> None:
    """Raw readings to the board as sample lines, paced at the sensor rate with --realtime."""
    period = 1.0 / rate_hz
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


def _collect(board: _BoardLink, kind: str, last_sample: int, n_sent: int) -> list[dict]:
    """Once the board's status says it has taken every sample sent, its `kind` messages."""
    board.serial.write(link.command_line({"status": True}))
    board.wait_for("status", 60 + n_sent * 0.01, lambda p: p["samples"] >= last_sample, stall=60)
    found = [m.payload for m in board.other if m.kind == kind]
    while not board.messages.empty():
        msg = board.messages.get()
        if msg.kind == kind:
            found.append(msg.payload)
    return found


def board_detections(rec: Recording, qmodel: QuantModel, settings: Settings, port: str,
                     realtime: bool = False, progress=None) -> Iterator[dict]:
    audio = qmodel.frontend is not None
    raw = frontend_samples(rec.x)[:, None] if audio else to_raw(rec.x, qmodel.inputs)
    board = _BoardLink(port)
    try:
        board.serial.write(link.command_line({"window": settings.window, "hop": settings.hop,
                                              "continuous": settings.continuous, "smooth": settings.smooth,
                                              "refractory": settings.refractory}))
        ack = board.wait_for("ack", 10)
        base = ack["samples"]
        if audio:  # audio-rate samples: binary frames (device/link.py), paced per frame
            next_t = time.monotonic()
            sent = 0
            for chunk in link.audio_frames(raw[:, 0]):
                if realtime:
                    next_t += 256 / qmodel.frontend.rate_hz
                    time.sleep(max(0.0, next_t - time.monotonic()))
                board.serial.write(chunk)
                n = (len(chunk) - 7) // 2
                sent += n
                if progress is not None:
                    progress(n)
            raw = raw[:sent]
        else:
            _send_lines(board, raw, settings.sensor.rate_hz, realtime, progress)
        dets = _collect(board, "det", base + len(raw), len(raw))
    finally:
        board.close()
    for seq, det in enumerate(dets, start=1):
        t = det["sample"] - base
        yield {"seq": seq, "t": round(float(rec.t[t]), 3), "class": det["class"],
               "label": det["label"], "score": det["score"]}


def micropython_detections(rec: Recording, qmodel_path, qmodel: QuantModel, settings: Settings,
                           progress=None, realtime: bool = False) -> Iterator[dict]:
    from .board.flash import flash
    from .board.virtual import VirtualBoard

    with VirtualBoard() as vboard:
        flash(settings, qmodel_path, port=vboard.port, progress=False, warn=lambda m: None)
        yield from board_detections(rec, qmodel, settings, vboard.port, realtime, progress=progress)


def paced(dets: Iterator[dict], t0: float) -> Iterator[dict]:
    """The reference is instant: hand out its detections at the recording's pace."""
    start = time.monotonic()
    for det in dets:
        time.sleep(max(0.0, det["t"] - t0 - (time.monotonic() - start)))
        yield det


def detections(rec: Recording, qmodel: QuantModel, settings: Settings, backend: str = "numpy",
               blob_path=None, port: str | None = None, realtime: bool = False,
               progress=None) -> Iterator[dict]:
    if qmodel.anomaly is not None:  # anomaly events (onset / end) instead of detections
        return anomaly_events(rec, qmodel, settings, backend, blob_path, port, realtime, progress)
    fe = qmodel.frontend
    if fe is not None and (rec.rate_hz or fe.rate_hz) != fe.rate_hz:  # its channels are summed, as the board does
        raise UserError(f"the model's front-end takes samples at {fe.rate_hz} Hz; the recording's are at "
                        f"{rec.rate_hz or settings.sensor.rate_hz:g} Hz")
    if fe is None and rec.x.shape[1] != qmodel.n_inputs:
        raise UserError(f"recording has {rec.x.shape[1]} channels, the model takes {qmodel.n_inputs}")
    settings.labels_for(qmodel.class_names, qmodel.n_classes)
    if backend == "numpy":
        dets = numpy_detections(rec, qmodel, settings, progress)
        return paced(dets, float(rec.t[0])) if realtime else dets
    if backend == "micropython":
        return micropython_detections(rec, blob_path, qmodel, settings, progress, realtime)
    if backend == "board":
        from .board.flash import find_port

        return board_detections(rec, qmodel, settings, find_port(port or settings.port), realtime, progress)
    raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def publish_mqtt(dets, tgt, settings: Settings, qmodel: QuantModel, device_id: str | None = None,
                 max_pending: int = 1000, stall_s: float = 30.0):
    """Publish detections exactly as a board would (status and discovery on
    connect, detections at QoS 1 with seq and a boot id, metrics, then offline).
    Yields each detection, in order, once the broker has acknowledged it (PUBACK):
    while the broker is away they wait in paho's queue and are sent again on
    reconnect, as the board and the bridge queue theirs; at most `max_pending`
    wait at once, and `stall_s` seconds without any acknowledgement is an error."""
    import collections
    import json
    import os

    from paho.mqtt.enums import MQTTErrorCode

    from .mqtt import client as mqtt

    device_id = device_id or settings.device_id
    prefix = settings.publisher.topic_prefix
    labels = settings.labels_for(qmodel.class_names, qmodel.n_classes)
    boot = os.urandom(4).hex()
    status = mqtt.topic(prefix, device_id, "status")

    def announce(client, *_):  # every (re)connect: a clean session has lost the subscription
        client.publish(status, "online", 1, True)
        for topic, payload in mqtt.discovery(prefix, device_id, labels, qmodel.anomaly is not None):
            client.publish(topic, payload, 1, True)
        client.subscribe("homeassistant/status")

    def on_message(msg):  # Home Assistant restarted: send discovery again
        if msg.topic == "homeassistant/status" and msg.payload == b"online":
            announce(client)

    client = mqtt.connect(tgt, f"edge-agent-replay-{device_id}", will=(status, "offline", 1, True),
                          on_connect=announce, on_message=on_message)
    pending: collections.deque = collections.deque()  # (MessageInfo, detection), in publish order
    last_progress = [time.monotonic()]

    def publish(topic: str, payload: str, qos: int):
        info = client.publish(topic, payload, qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos:
            # not lost: paho keeps a QoS 1 message and sends it when the connection is back;
            # clear the code so that is_published() reports the PUBACK when it comes
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise UserError(f"MQTT: could not queue a message ({info.rc.name})")
        return info

    def acknowledged(block: bool):
        """Pop the detections acknowledged so far, in order; with block, wait while
        `max_pending` are outstanding (or, at the end, until none is)."""
        while pending:
            if pending[0][0].is_published():
                last_progress[0] = time.monotonic()
                yield pending.popleft()[1]
                continue
            if not block:
                return
            if time.monotonic() - last_progress[0] > stall_s:
                raise UserError(f"MQTT broker {tgt.host}:{tgt.port}: {len(pending)} detection(s) not "
                                f"acknowledged within {stall_s:.0f} s; the ones printed were delivered")
            time.sleep(0.01)

    n = 0
    try:
        for det in dets:
            n += 1
            kind = "anomaly" if "event" in det else "detection"  # an anomaly model's onset / end
            fields = ("t", "event", "score", "level", "threshold", "onset", "end") if kind == "anomaly" \
                else ("t", "class", "label", "score")
            payload = {"seq": det["seq"], "boot": boot, **{k: det[k] for k in fields}}
            if not pending:
                last_progress[0] = time.monotonic()
            pending.append((publish(mqtt.topic(prefix, device_id, kind),
                                    json.dumps(payload, allow_nan=False), 1), det))
            yield from acknowledged(block=len(pending) >= max_pending)
        yield from acknowledged(block=True)
        client.publish(mqtt.topic(prefix, device_id, "metrics"), json.dumps({"boot": boot, "detections": n}), 0)
        end = publish(status, "offline", 1)
        deadline = time.monotonic() + 10
        while not end.is_published() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()


# ---- anomaly models: onset and end events, the same from every backend ------------------

def anomaly_messages(found, at, t, threshold: int) -> Iterator[dict]:
    """Events (reference.anomaly.Event, sample indices via `at`) as the lines
    replay prints and publishes: an onset, then its end, in time order."""
    from .reference.anomaly import ratio

    seq = 0
    for ev in found:
        onset = round(float(t[at[ev.onset]]), 3)
        end = None if ev.end is None else round(float(t[at[ev.end]]), 3)
        seq += 1
        yield {"seq": seq, "t": onset, "event": "onset", "score": ratio(ev.onset_score, threshold),
               "level": ev.onset_score, "threshold": threshold, "onset": onset, "end": None}
        if end is not None:
            seq += 1
            yield {"seq": seq, "t": end, "event": "end", "score": ratio(ev.peak, threshold),
                   "level": ev.peak, "threshold": threshold, "onset": onset, "end": end}


def anomaly_samples(rec: Recording, qmodel: QuantModel) -> np.ndarray:
    """The int16 readings a board's sensor gives: through the blob's input
    scaling, or, with a front-end, its one input stream: the sum of the sensor
    counts the recording holds (as device/sensors.py ADXL345.read_block sums)."""
    if qmodel.frontend is None:
        return to_raw(rec.x, qmodel.inputs)
    return frontend_samples(rec.x)[:, None]


def anomaly_events(rec: Recording, qmodel: QuantModel, settings: Settings, backend: str = "numpy",
                   blob_path=None, port: str | None = None, realtime: bool = False,
                   progress=None) -> Iterator[dict]:
    from .learn.anomaly import sensor_frames
    from .reference import anomaly as ref

    if qmodel.frontend is None and rec.x.shape[1] != qmodel.n_inputs:
        raise UserError(f"recording has {rec.x.shape[1]} channels, the model takes {qmodel.n_inputs}")
    threshold = qmodel.anomaly.threshold
    if backend == "numpy":
        frames, at = sensor_frames(rec.x, qmodel.frontend)
        score = ref.scores(qmodel, model_inputs(qmodel, frames))
        if progress is not None:
            progress(len(rec.x))
        dets = anomaly_messages(ref.events(score, threshold), at, rec.t, threshold)
        return paced(dets, float(rec.t[0])) if realtime else dets
    if backend == "micropython":
        return _virtual_anomaly_events(rec, blob_path, qmodel, settings, progress)
    if backend == "board":
        from .board.flash import find_port

        return board_anomaly_events(rec, qmodel, settings, find_port(port or settings.port), realtime, progress)
    raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def _virtual_anomaly_events(rec, blob_path, qmodel, settings, progress):
    from .board.flash import flash
    from .board.virtual import VirtualBoard

    with VirtualBoard() as vboard:
        flash(settings, blob_path, port=vboard.port, progress=False, warn=lambda m: None)
        yield from board_anomaly_events(rec, qmodel, settings, vboard.port, progress=progress)


def board_anomaly_events(rec: Recording, qmodel: QuantModel, settings: Settings, port: str,
                         realtime: bool = False, progress=None) -> Iterator[dict]:
    """The samples over serial to a flashed board; its `anom` messages back."""
    from .reference.anomaly import Event

    raw = anomaly_samples(rec, qmodel)
    board = _BoardLink(port)
    try:
        board.serial.write(link.command_line({"status": True}))
        base = board.wait_for("status", 10)["samples"]
        _send_lines(board, raw, settings.sensor.rate_hz, realtime, progress)
        msgs = _collect(board, "anom", base + len(raw), len(raw))
    finally:
        board.close()
    found: list = []
    for m in msgs:  # back into events, so every backend prints through anomaly_messages
        if m["event"] == "onset":
            found.append(Event(m["sample"] - base, None, m["level"], m["level"]))
        elif found and m["event"] == "end":
            found[-1].end, found[-1].peak = m["sample"] - base, m["level"]
    yield from anomaly_messages(found, np.arange(len(raw)), rec.t, qmodel.anomaly.threshold)
