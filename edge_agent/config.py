"""config.yaml -> typed, validated settings.

Every key is checked against the dataclasses below: an unknown key, a wrong type,
a value out of range or a missing file gets one line naming the key.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .errors import UserError

DEFAULT_PATH = Path("config.yaml")


@dataclass
class Sensor:
    kind: Literal["stream", "mpu6050", "adc"] = "stream"
    rate_hz: float = 50.0
    i2c_bus: int = 0
    i2c_sda: int = 4
    i2c_scl: int = 5
    i2c_address: int = 0x68
    adc_pin: int = 26


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
    publisher: Publisher = field(default_factory=Publisher)
    source: Path | None = None  # the file these came from

    def check(self) -> "Settings":
        where = self.source or "config"
        if self.sensor.rate_hz <= 0:
            raise UserError(f"{where}: sensor.rate_hz must be positive")
        if self.window < 1:
            raise UserError(f"{where}: window must be at least 1 sample")
        if not 1 <= self.hop <= self.window:
            raise UserError(f"{where}: hop must be between 1 and window ({self.window})")
        for label, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{where}: thresholds.{label} must be between 0 and 1")
        if not self.device_id or "/" in self.device_id or "+" in self.device_id or "#" in self.device_id:
            raise UserError(f"{where}: device_id must be non-empty without '/', '+' or '#'")
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
            raise UserError(f"{key}: {value!r} is not one of {choices}")
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
        return {_convert(k, kt, key, base): _convert(v, vt, f"{key}.{k}", base) for k, v in value.items()}
    if hint is Path or (origin is typing.Union and Path in typing.get_args(hint)):
        if not isinstance(value, str) or not value:
            raise UserError(f"{key}: expected a file path")
        path = Path(value)
        return path if path.is_absolute() else base / path
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise UserError(f"{key}: expected text, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {hint}")  # a bug here, not bad input


def _build(cls, data: dict, base: Path, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in known:
            raise UserError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} not valid YAML ({getattr(exc, 'problem', exc)})") from None
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
