"""config.yaml: typed, and every mistake named by its key."""
from pathlib import Path

import pytest

from edge_agent import config
from edge_agent.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_repo_config_loads_and_points_at_the_demo():
    s = config.load(ROOT / "config.yaml")
    assert s.sensor.rate_hz == 50.0 and s.window == 100 and s.hop == 100
    assert s.model_file() == ROOT / "edge_agent" / "data" / "demo.bin"
    assert s.publisher.kind == "serial" and s.thresholds["default"] == 0.5


@pytest.mark.parametrize("text,message", [
    ("windw: 10\n", "windw: unknown key"),
    ("sensor:\n  rate: 10\n", "sensor.rate: unknown key"),
    ("window: ten\n", "window: expected an integer"),
    ("board: stm32\n", "board: 'stm32' is not one of rp2040 | esp32 | auto"),
    ("thresholds:\n  walk: 2\n", "thresholds.walk must be between 0 and 1"),
    ("hop: 200\nwindow: 100\n", "hop must be between 1 and window"),
    ("labels: walk\n", "labels: expected a list"),
    ("[1, 2]\n", "expected a mapping"),
    ("window: [\n", "not valid YAML"),
])
def test_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        config.load(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_model_file_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: gone.bin\n")
    with pytest.raises(UserError, match="model: file not found"):
        config.load(path).model_file()
