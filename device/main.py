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
from anomaly import ratio as anomaly_ratio
from stream import Smoother, Stream, decide

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


def build(b):
    """A checked blob as the runner uses it: the model, and its front-end if it has one."""
    import frontend

    model = BoardModel(b)
    model.frontend = frontend.of_blob(b)  # pyright: ignore[reportAttributeAccessIssue]
    return model


def load_model(say):
    """model.bin if it is good (then remembered as model.good), else model.good."""
    try:
        model = build(blob.load(MODEL))
    except Exception as exc:  # any failure (a refused blob, MemoryError, a bug): run the last good one
        say("error", {"what": "model.bin refused", "reason": "%s: %s" % (type(exc).__name__, exc),
                      "action": "keeping the previous model"})
        gc.collect()
        return build(blob.load(GOOD_MODEL))
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
        self.onset = self.onset_ms = 0  # the open anomaly's onset: sample, ms since boot
        self.samples = 0
        self.windows = 0
        self.sensor_errors = 0
        self.sensor = None  # run() sets it: its bad_frames (damaged audio frames) go in the status
        self.started = time.ticks_ms()
        self._cost_reset(time.ticks_us())
        self.use(model)

    def _cost_reset(self, now_us):
        # the cell's cost since the last status: us summed and at most, per sample
        self.cost_us = self.cost_max_us = self.cost_n = 0
        self.cost_since = now_us

    def use(self, model):
        cfg = self.cfg
        self.model = model
        self.cell = cell.Cell(model)
        self.stream = Stream(self.cell, cfg["window"], cfg["hop"], cfg["continuous"])
        self.anomaly = None
        if getattr(model, "task", "classify") == "anomaly":  # a score every step, events on its threshold
            from anomaly import Anomaly

            self.anomaly = Anomaly(self.cell, model)
        self.labels = cfg["labels"] or model.labels
        q = cfg["thresholds_q15"]
        self.thresholds = q if q and len(q) == model.n_classes else [0] * model.n_classes
        self.smoother = Smoother(cfg.get("smooth", 1), cfg.get("refractory", 0), self.thresholds)
        self.fe = getattr(model, "frontend", None)  # audio in: the front-end makes the model's inputs
        if self.fe:
            self.audio = bytearray(1024)  # a sensor block: up to 512 int16 samples
        gc.collect()
        self.pub.publish("ready", {
            "device_id": cfg["device_id"], "boot": self.boot, "inputs": model.n_inputs, "hidden": model.hidden,
            "layers": model.n_layers, "classes": model.n_classes, "labels": self.labels,
            "model_crc": "%08x" % model.crc, "task": getattr(model, "task", "classify"),
            "window": cfg["window"], "hop": cfg["hop"], "continuous": cfg["continuous"],
            "model_ram": model.arena_bytes + model.state_bytes * len(self.stream.states)
            + (self.fe.ram_bytes if self.fe else 0), "frontend_bands": self.fe.bands if self.fe else 0,
            "mem_free": gc.mem_free()})

    def command(self, text):
        try:
            cmd = json.loads(text)
            if cmd.get("reload"):
                try:
                    self.use(build(blob.load(MODEL)))
                except Exception as exc:  # whatever went wrong, the running model stays
                    self.pub.publish("error", {"what": "model.bin refused", "reason": "%s: %s" % (type(exc).__name__, exc),
                                               "action": "keeping the previous model"})
            for key in ("window", "hop", "continuous", "smooth", "refractory"):
                if key in cmd:
                    self.cfg[key] = cmd[key]
            if "window" in cmd or "hop" in cmd or "continuous" in cmd:
                self.stream = Stream(self.cell, self.cfg["window"], self.cfg["hop"], self.cfg["continuous"])
                self.smoother = Smoother(self.cfg.get("smooth", 1), self.cfg.get("refractory", 0), self.thresholds)
                if self.fe:
                    self.fe.reset()
                self.pub.publish("ack", {"window": self.cfg["window"], "hop": self.cfg["hop"],
                                         "continuous": self.cfg["continuous"], "samples": self.samples})
            if cmd.get("status"):
                self.status()
        except Exception as exc:  # a host's command, however malformed, never stops the runner
            self.pub.publish("error", {"what": "bad command", "reason": "%s: %s" % (type(exc).__name__, exc)})

    def on_sample(self):
        """The reading is in self.cell.raw: quantize, step, decide."""
        c = self.cell
        t0 = time.ticks_us()
        c.quantize(c.raw)
        a = self.anomaly
        if a:
            self.on_anomaly(a, a.push(), t0)
            return
        ready = self.stream.push()
        self.count_step(t0)
        if ready is None:
            return
        self.windows += 1
        k, score = decide(self.model, c.head(ready))
        score = self.smoother.push(k, score)  # -1: below threshold, or refractory
        if score >= 0:
            self.seq += 1
            self.pub.publish("det", {
                "seq": self.seq, "boot": self.boot, "t_ms": time.ticks_diff(time.ticks_ms(), self.started),
                "sample": self.samples - 1, "class": k, "label": self.labels[k],
                "score": (score * 10000 + 16384) >> 15})  # 1/10000 units: link.dumps writes 0.nnnn

    def count_step(self, t0):
        """One sample done: its cost since t0 (ticks_us) goes into the status figures."""
        dt = time.ticks_diff(time.ticks_us(), t0)
        self.cost_us += dt
        self.cost_n += 1
        if dt > self.cost_max_us:
            self.cost_max_us = dt
        self.samples += 1

    def on_anomaly(self, a, event, t0):
        """Count the step; publish an onset or end (anomaly.py) as an `anom` message."""
        self.count_step(t0)
        if not event:
            return
        now = time.ticks_diff(time.ticks_ms(), self.started)
        if event == 1:
            self.onset, self.onset_ms = self.samples - 1, now
        level = a.score if event == 1 else a.peak  # at an end: the peak of the episode
        self.seq += 1
        self.pub.publish("anom", {
            "seq": self.seq, "boot": self.boot, "t_ms": now, "sample": self.samples - 1,
            "event": "onset" if event == 1 else "end", "level": level, "threshold": a.threshold,
            "score": anomaly_ratio(level, a.threshold),  # level / threshold, 1/10000: link.dumps writes n.nnnn
            "onset_ms": self.onset_ms, "end_ms": now if event == 2 else None})

    def on_block(self, buf, n):
        """Raw audio samples buf[0:n] into the front-end; a model step per frame.
        `samples` counts audio samples here, so a detection names the sample that
        completed its frame, as the host's replay does."""
        fe = self.fe
        if fe is None:
            return
        i = 0
        while i < n:
            j = fe.feed(buf, i, n)
            self.samples += j - i
            i = j
            if fe.due():
                fe.compute(self.cell.raw)
                self.samples -= 1  # on_sample counts the step as one sample: keep audio samples
                self.on_sample()

    def status(self):
        gc.collect()
        now = time.ticks_us()
        span = time.ticks_diff(now, self.cost_since)
        # step_us_*: one sample's quantize + cell steps; cpu_load: that time / time passed
        self.pub.publish("status", {
            "uptime_ms": time.ticks_diff(time.ticks_ms(), self.started), "samples": self.samples,
            "windows": self.windows, "detections": self.seq, "sensor_errors": self.sensor_errors,
            "bad_frames": getattr(self.sensor, "bad_frames", 0),
            "mem_free": gc.mem_free(), "step_us_mean": self.cost_us // self.cost_n if self.cost_n else 0,
            "step_us_max": self.cost_max_us, "cpu_load": round(self.cost_us / span, 4) if span > 0 else 0})
        self._cost_reset(now)


_wdt = None  # the armed watchdog
_held = None  # the Timer feeding it while a host holds the REPL (hold_watchdog)


class Guarded:
    """A publisher whose failures (MemoryError, a bug, a hostile broker) are counted,
    never raised into the sampling loop: detection goes on, delivery retries."""

    def __init__(self, pub):
        self.pub = pub
        self.errors = 0

    def publish(self, kind, payload):
        try:
            self.pub.publish(kind, payload)
        except Exception:
            self.errors += 1

    def poll(self):
        try:
            self.pub.poll()
        except Exception:
            self.errors += 1

    def pending(self):
        try:
            return self.pub.pending()
        except Exception:
            self.errors += 1
            return 0


def watchdog():
    """Arm the 8-s watchdog; from here a runner that stops feeding it (a hung sensor
    read, a crash into the REPL) is reset, and main.py starts again."""
    global _wdt
    _release_watchdog()
    try:
        from machine import WDT

        _wdt = WDT(timeout=8000)
    except (ImportError, AttributeError, ValueError):
        _wdt = None  # the unix port and some boards have none
    return _wdt


def hold_watchdog():
    """The runner stopped on purpose: a host's Ctrl-C (flash, mpremote, a terminal),
    or no model to run. An armed watchdog cannot be stopped on rp2/esp32, and a flash
    over a slow link outlasts it, so a soft timer feeds it until the next reset or
    run(). Only these two exits hold it: a hung or crashed runner is still reset."""
    global _held
    if _wdt is None:
        return
    if _held is None:
        from machine import Timer

        try:
            _held = Timer(-1)
        except ValueError:  # ESP32: hardware timers only
            _held = Timer(0)
    wdt = _wdt
    # init after the assignment: a second Ctrl-C landing here is retried without leaking a timer
    _held.init(period=1000, mode=_held.PERIODIC, callback=lambda t: wdt.feed())


def _release_watchdog():
    """Stop a hold, also one left by main.py when run() is called again from the REPL."""
    global _held
    import __main__  # pyright: ignore[reportMissingImports]

    for timer in (_held, getattr(__main__, "_held", None)):
        if timer is not None:
            timer.deinit()
    _held = None
    __main__._held = None  # pyright: ignore[reportAttributeAccessIssue]


def run():
    cfg = read_config()
    boot = boot_id()
    publishers.start_wifi(cfg.get("wifi"))
    wdt = watchdog()  # first: a watchdog armed before a soft reset keeps counting
    try:
        model = load_model(publishers.SerialPublisher().publish)
    except Exception:
        hold_watchdog()  # no model to run: wait in the REPL for a flash
        raise
    labels = cfg["labels"] or model.labels
    pub = Guarded(publishers.make(cfg["publisher"], cfg["device_id"], labels, boot,
                                  getattr(model, "task", "classify") == "anomaly"))
    det = Detector(cfg, pub, boot, model)
    sensor = sensors.make(cfg["sensor"], det.model.n_inputs, det.command)
    det.sensor = sensor  # pyright: ignore[reportAttributeAccessIssue]  (None until here)
    period_us = int(1000000 // cfg["sensor"].get("rate_hz", 50))
    timed = cfg["sensor"].get("kind", "stream") not in ("stream", "i2s")  # those two wait for data
    next_us = time.ticks_us()
    status_ms = int(cfg["status_every_s"] * 1000)
    last_status = time.ticks_ms()
    while True:
        if timed:
            wait = time.ticks_diff(next_us, time.ticks_us())
            if wait > 0:
                time.sleep_us(wait)
            next_us = time.ticks_add(next_us, period_us)
        try:  # audio (a front-end model) comes in blocks of samples, other sensors a reading at a time
            got = sensor.read_block(det.audio) if det.fe else sensor.read(det.cell.raw)
        except OSError:
            det.sensor_errors += 1
            got = False
        if got:
            if det.fe:
                det.on_block(det.audio, got)
            else:
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
    try:
        run()
    except KeyboardInterrupt:
        while True:
            try:
                hold_watchdog()
                break
            except KeyboardInterrupt:  # the host's second Ctrl-C
                pass
