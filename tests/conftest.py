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


class Broker:
    """A real mosquitto on a free loopback port, with persistence so that a
    restart keeps persistent sessions (as a production broker would)."""

    def __init__(self, workdir, extra: str = ""):
        import socket

        self.dir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = workdir / "mosquitto.conf"
        import getpass

        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root mosquitto would drop to 'mosquitto' and lose the temp dir
            f"persistence true\npersistence_location {workdir}/\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            + (extra or "allow_anonymous true\n"))
        self.proc = None
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def start(self):
        import shutil
        import socket
        import subprocess
        import time

        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start: " + (self.dir / "mosquitto.log").read_text()[-500:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def reap_cli():
    """A test that fails mid-way (a timeout) must not leave a monitor or bridge running."""
    yield
    from mqtt_helpers import STARTED

    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()
