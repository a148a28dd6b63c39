"""Helpers the tests import: small float models and the CLI as a child process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_agent.learn import model as fmodel

ROOT = Path(__file__).resolve().parents[1]


def random_model(rng: np.random.Generator, n_in=6, hidden=16, layers=2, classes=4,
                 scale=0.3) -> fmodel.FloatModel:
    def layer(width):
        return fmodel.LSTMLayer(rng.normal(0, scale, (4 * hidden, width)),
                                rng.normal(0, scale, (4 * hidden, hidden)),
                                rng.normal(0, 0.1, 4 * hidden), rng.normal(0, 0.1, 4 * hidden))
    layers_ = [layer(n_in if k == 0 else hidden) for k in range(layers)]
    return fmodel.FloatModel(layers_, rng.normal(0, 0.5, (classes, hidden)), rng.normal(0, 0.1, classes),
                             rng.normal(0, 1, n_in), rng.uniform(0.5, 2, n_in)).validate()


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The real console entry point, in a child process, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edge_agent", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def run_board_script(script: str, blobs: list[bytes], tmp: Path) -> list[str]:
    """`script` under the real MicroPython unix port with device/ importable and the
    blobs' paths as its arguments; the lines it prints."""
    from edge_agent.board import unixport

    paths = []
    for n, data in enumerate(blobs):
        paths.append(tmp / f"board{n}.bin")
        paths[-1].write_bytes(data)
    (tmp / "board_script.py").write_text(script)
    proc = subprocess.run([unixport.binary(), str(tmp / "board_script.py"), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, env={"MICROPYPATH": str(unixport.DEVICE_DIR)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()
