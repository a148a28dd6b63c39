"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent import synthetic

DATA = Path(__file__).resolve().parents[1] / "edge_agent" / "data"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def imu_windows():
    return synthetic.make_windows(64, steps=50, seed=3)


@pytest.fixture(scope="session")
def demo_paths():
    return {"model": DATA / "demo_model.npz", "blob": DATA / "demo.bin",
            "data": DATA / "demo_data.npz", "recording": DATA / "demo_recording.csv"}
