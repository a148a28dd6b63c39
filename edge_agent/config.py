"""config.yaml -> typed, validated settings.

Every key is checked against the dataclasses below: an unknown key, a wrong type,
a value out of range or a missing file gets one line naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .errors import UserError

DEFAULT_PATH = Path("config.yaml")
MAX_BYTES = 1 << 20  # a config is a page of settings, not a data file


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors and aliases: a few lines of aliases expand to
    billions of nodes (the "billion laughs"), and a config never needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config",
                                              event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors (&name) are not allowed in a config",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _show(value, limit: int = 40) -> str:
    """A value for an error message, cut short: a message is one line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


def _name(key) -> str:
    """A mapping key for an error message: as written when it prints on one line, else _show'n."""
    text = str(key)
    return text[:40] if text.isprintable() else _show(text)


@dataclass
class Sensor:
    kind: Literal["stream", "mpu6050", "adc", "i2s", "adxl345"] = "stream"
    rate_hz: float = 50.0
    i2c_bus: int = 0
    i2c_sda: int = 4
    i2c_scl: int = 5
    i2c_address: int = 0x68
    adc_pin: int = 26
    i2s_id: int = 0  # i2s only: an INMP441 / ICS-43434 class microphone
    i2s_sck: int = 16  # bit clock
    i2s_ws: int = 17  # word select (must be sck + 1 on rp2)
    i2s_sd: int = 18  # serial data from the microphone
    i2s_shift: int = 12  # sample = sat16(32-bit I2S word >> i2s_shift): 16 keeps the top bits, less adds gain
    spi_bus: int = 0  # adxl345 only: a 3-axis accelerometer on SPI, read through its FIFO
    spi_sck: int = 2
    spi_mosi: int = 3
    spi_miso: int = 4
    spi_cs: int = 5


@dataclass
class Frontend:
    """The spectral front-end (docs/arithmetic.md): auto picks mel for WAV data and
    none for sensor recordings; its parameters travel in the blob."""
    kind: Literal["auto", "none", "mel", "linear", "log"] = "auto"
    rate_hz: int = 16000
    frame: int = 512  # samples per frame, a power of two
    hop: int = 320  # samples between frames
    bands: int = 32
    f_lo: float = 125.0
    f_hi: float = 7500.0
    floor: int = -4096  # lowest feature value (1/256 log2 units)


@dataclass
class Publisher:
    kind: Literal["serial", "mqtt"] = "serial"
    mqtt_url: str = "mqtt://localhost:1883"
    topic_prefix: str = "edge"
    username: str = ""
    password_file: str = ""  # read at flash time; else $EDGE_AGENT_MQTT_PASSWORD
    queue_len: int = 64  # detections the board holds in RAM while the broker is away
    wifi_ssid: str = ""
    wifi_password_file: str = ""


@dataclass
class Anomaly:
    """task: anomaly (docs: README "Anomaly detection"); 0 = chosen from the training data."""

    window: int = 0  # steps (frames) per state reset and training window
    warmup: int = 0  # steps of context before a prediction is scored
    smoothing: int = 0  # EMA span of the score, in steps
    quantile: float = 0.999  # of held-back normal scores ...
    margin: float = 1.5  # ... times this is the threshold stored in the blob
    headroom: float = 2.0  # int8 input range, times the normal data's


@dataclass
class Settings:
    device_id: str = "edge-01"
    board: Literal["rp2040", "esp32", "auto"] = "auto"
    port: str = "auto"
    model: Path = Path("model.bin")
    sensor: Sensor = field(default_factory=Sensor)
    window: int = 100
    hop: int = 100
    continuous: bool = False
    labels: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=lambda: {"default": 0.5})
    smooth: int = 1  # decisions averaged per class before the threshold (posterior smoothing)
    refractory: int = 0  # decisions after a detection during which none is published
    frontend: Frontend = field(default_factory=Frontend)
    publisher: Publisher = field(default_factory=Publisher)
    task: Literal["classify", "anomaly"] = "classify"
    anomaly: Anomaly = field(default_factory=Anomaly)
    source: Path | None = None  # the file these came from

    def check(self) -> "Settings":
        where = self.source or "config"
        if not 0 < self.sensor.rate_hz <= 100_000:
            raise UserError(f"{where}: sensor.rate_hz must be a positive number of samples per second "
                            "(at most 100000)")
        if not 1 <= self.publisher.queue_len <= 10_000:
            raise UserError(f"{where}: publisher.queue_len must be between 1 and 10000")
        prefix = self.publisher.topic_prefix
        if not prefix or any(ch in prefix for ch in "+#\0") or prefix.startswith("$") \
                or "" in prefix.split("/") or len(prefix) > 128:
            raise UserError(f"{where}: publisher.topic_prefix must be MQTT topic levels without "
                            "'+', '#', a leading '$' or empty levels")
        a = self.anomaly
        if min(a.window, a.warmup, a.smoothing) < 0 or not 0 < a.quantile <= 1 or a.margin <= 0 \
                or a.headroom < 1:
            raise UserError(f"{where}: anomaly: window, warmup, smoothing >= 0; 0 < quantile <= 1; "
                            "margin > 0; headroom >= 1")
        if not 1 <= self.smooth <= 64 or not 0 <= self.refractory <= 10_000:
            raise UserError(f"{where}: smooth must be 1..64 decisions and refractory 0..10000")
        if not 1 <= self.window <= 1_000_000:
            raise UserError(f"{where}: window must be between 1 and 1000000 samples")
        if not 1 <= self.hop <= self.window:
            raise UserError(f"{where}: hop must be between 1 and window ({self.window})")
        for label, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{where}: thresholds.{str(label)[:40]} must be between 0 and 1")
        if not self.device_id or any(ch in self.device_id for ch in "/+#\0\n") or len(self.device_id) > 64:
            raise UserError(f"{where}: device_id must be 1 to 64 characters without '/', '+', '#' or newlines")
        for label in self.labels:
            if not label or "\n" in label or len(label) > 64:
                raise UserError(f"{where}: labels: each label must be 1 to 64 characters on one line")
        return self

    def labels_for(self, class_names: list[str], n_classes: int) -> list[str]:
        """The configured labels, else the model's class names; one per class."""
        labels = list(self.labels or class_names)
        if len(labels) != n_classes:
            raise UserError(f"{self.source or 'config'}: labels: {len(labels)} given, "
                            f"the model has {n_classes} classes")
        return labels

    def threshold_q15(self, label: str) -> int:
        """The detection threshold of a label as the board compares it (Q0.15)."""
        value = self.thresholds.get(label, self.thresholds.get("default", 0.0))
        return int(round(value * 32768))

    def model_file(self) -> Path:
        """The model blob, which must exist."""
        if not self.model.is_file():
            raise UserError(f"{self.source or 'config'}: model: file not found: {self.model}")
        return self.model


def _convert(value, hint, key: str, base: Path):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, base, key + ".")
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = " | ".join(map(str, typing.get_args(hint)))
            raise UserError(f"{key}: {_show(value)} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(v, item, f"{key}[{i}]", base) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(hint)
        return {_convert(k, kt, key, base): _convert(v, vt, f"{key}.{_name(k)}", base)
                for k, v in value.items()}
    if hint is Path or (origin is typing.Union and Path in typing.get_args(hint)):
        if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
            raise UserError(f"{key}: expected a file path")
        path = Path(value)
        return path if path.is_absolute() else base / path
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"{key}: expected a finite number, got {_show(value)}")
        return number
    if hint is str:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise UserError(f"{key}: expected text, got {_show(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {hint}")  # a bug here, not bad input


def _build(cls, data: dict, base: Path, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in known:
            raise UserError(f"{prefix}{_name(key)}: unknown key (known: {', '.join(sorted(known))})")
    values = {k: _convert(v, hints[k], prefix + k, base) for k, v in data.items()}
    return cls(**values)


def load(path: str | Path | None = None) -> Settings:
    """Read settings; with no path, config.yaml in the working directory if present."""
    if path is None:
        if not DEFAULT_PATH.is_file():
            return Settings().check()
        path = DEFAULT_PATH
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: {path.stat().st_size} bytes is too large for a config (at most {MAX_BYTES})")
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} not valid YAML ({' '.join(str(getattr(exc, 'problem', None) or exc).split())[:120]})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{path}: a value cannot be read ({str(exc)[:80]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    try:
        settings = _build(Settings, data, path.parent)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    settings.source = path
    return settings.check()
