# The daemon: sensor -> int8 input -> LSTM cell per sample -> a decision every
# hop samples -> detection through a publisher. Reads config.json (written by
# `edge-agent flash`) and model.bin from the board's filesystem.
import gc
import json
import struct
import time

import blob
import cell
import publishers
import sensors
from layout import BoardModel
from stream import Stream, decide

CONFIG = "config.json"
MODEL = "model.bin"
GOOD_MODEL = "model.good"  # the last model that loaded; kept when model.bin is refused
DEFAULTS = {
    "device_id": "edge-01",
    "window": 100,
    "hop": 100,
    "continuous": False,
    "labels": None,
    "thresholds_q15": None,  # per class, 0..32768
    "sensor": {"kind": "stream", "rate_hz": 50},
    "publisher": {"kind": "serial"},
    "status_every_s": 10,
}


def read_config():
    cfg = dict(DEFAULTS)
    try:
        with open(CONFIG) as fh:
            cfg.update(json.load(fh))
    except OSError:
        pass  # no config yet: defaults
    return cfg


def _same_file(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(512), fb.read(512)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def load_model(say):
    """model.bin if it is good (then remembered as model.good), else model.good."""
    try:
        model = BoardModel(blob.load(MODEL))
    except (OSError, ValueError, blob.BlobError) as exc:
        say("error", {"what": "model.bin refused", "reason": str(exc), "action": "keeping the previous model"})
        return BoardModel(blob.load(GOOD_MODEL))
    if not _same_file(MODEL, GOOD_MODEL):
        import os

        with open(MODEL, "rb") as src, open(GOOD_MODEL + ".tmp", "wb") as dst:
            while True:
                chunk = src.read(512)
                if not chunk:
                    break
                dst.write(chunk)
        os.rename(GOOD_MODEL + ".tmp", GOOD_MODEL)
    return model


def boot_id():
    import os

    return "%08x" % struct.unpack("<I", os.urandom(4))[0]


class Detector:
    def __init__(self, cfg, publisher, boot, model):
        self.cfg = cfg
        self.pub = publisher
        self.boot = boot
        self.seq = 0
        self.samples = 0
        self.windows = 0
        self.sensor_errors = 0
        self.started = time.ticks_ms()
        self.use(model)

    def use(self, model):
        cfg = self.cfg
        self.model = model
        self.cell = cell.Cell(model)
        self.stream = Stream(self.cell, cfg["window"], cfg["hop"], cfg["continuous"])
        self.labels = cfg["labels"] or model.labels
        q = cfg["thresholds_q15"]
        self.thresholds = q if q and len(q) == model.n_classes else [0] * model.n_classes
        gc.collect()
        self.pub.publish("ready", {
            "device_id": cfg["device_id"], "boot": self.boot, "inputs": model.n_inputs, "hidden": model.hidden,
            "layers": model.n_layers, "classes": model.n_classes, "labels": self.labels,
            "model_crc": "%08x" % model.crc,
            "window": cfg["window"], "hop": cfg["hop"], "continuous": cfg["continuous"],
            "model_ram": model.arena_bytes + model.state_bytes * len(self.stream.states),
            "mem_free": gc.mem_free()})

    def command(self, text):
        try:
            cmd = json.loads(text)
            if cmd.get("reload"):
                try:
                    self.use(BoardModel(blob.load(MODEL)))
                except (OSError, ValueError, blob.BlobError) as exc:
                    self.pub.publish("error", {"what": "model.bin refused", "reason": str(exc),
                                               "action": "keeping the previous model"})
            for key in ("window", "hop", "continuous"):
                if key in cmd:
                    self.cfg[key] = cmd[key]
            if "window" in cmd or "hop" in cmd or "continuous" in cmd:
                self.stream = Stream(self.cell, self.cfg["window"], self.cfg["hop"], self.cfg["continuous"])
                self.pub.publish("ack", {"window": self.cfg["window"], "hop": self.cfg["hop"],
                                         "continuous": self.cfg["continuous"], "samples": self.samples})
            if cmd.get("status"):
                self.status()
        except (ValueError, TypeError, KeyError) as exc:
            self.pub.publish("error", {"what": "bad command", "reason": str(exc)})

    def on_sample(self):
        """The reading is in self.cell.raw: quantize, step, decide."""
        c = self.cell
        c.quantize(c.raw)
        ready = self.stream.push()
        self.samples += 1
        if ready is None:
            return
        self.windows += 1
        k, score = decide(self.model, c.head(ready))
        if score >= self.thresholds[k]:
            self.seq += 1
            self.pub.publish("det", {
                "seq": self.seq, "boot": self.boot, "t_ms": time.ticks_diff(time.ticks_ms(), self.started),
                "sample": self.samples - 1, "class": k, "label": self.labels[k],
                "score": (score * 10000 + 16384) >> 15})  # 1/10000 units: link.dumps writes 0.nnnn

    def status(self):
        gc.collect()
        self.pub.publish("status", {
            "uptime_ms": time.ticks_diff(time.ticks_ms(), self.started), "samples": self.samples,
            "windows": self.windows, "detections": self.seq, "sensor_errors": self.sensor_errors,
            "mem_free": gc.mem_free()})


def watchdog():
    try:
        from machine import WDT

        return WDT(timeout=8000)
    except (ImportError, AttributeError, ValueError):
        return None  # the unix port and some boards have none


def run():
    cfg = read_config()
    boot = boot_id()
    publishers.start_wifi(cfg.get("wifi"))
    model = load_model(publishers.SerialPublisher().publish)
    labels = cfg["labels"] or model.labels
    pub = publishers.make(cfg["publisher"], cfg["device_id"], labels, boot)
    det = Detector(cfg, pub, boot, model)
    sensor = sensors.make(cfg["sensor"], det.model.n_inputs, det.command)
    period_us = int(1000000 // cfg["sensor"].get("rate_hz", 50))
    timed = cfg["sensor"].get("kind", "stream") != "stream"
    next_us = time.ticks_us()
    status_ms = int(cfg["status_every_s"] * 1000)
    last_status = time.ticks_ms()
    wdt = watchdog()
    while True:
        if timed:
            wait = time.ticks_diff(next_us, time.ticks_us())
            if wait > 0:
                time.sleep_us(wait)
            next_us = time.ticks_add(next_us, period_us)
        try:
            got = sensor.read(det.cell.raw)
        except OSError:
            det.sensor_errors += 1
            got = False
        if got:
            det.on_sample()
        elif not timed:
            if sensor.eof:
                break
            time.sleep_ms(1)
        pub.poll()
        if time.ticks_diff(time.ticks_ms(), last_status) >= status_ms:
            last_status = time.ticks_ms()
            det.status()
        if wdt:
            wdt.feed()
    det.status()
    end = time.ticks_add(time.ticks_ms(), 3000)  # the host closed the link: flush what is queued
    while pub.pending() and time.ticks_diff(end, time.ticks_ms()) > 0:
        pub.poll()
        time.sleep_ms(5)


if __name__ == "__main__":
    run()
