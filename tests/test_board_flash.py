"""A virtual board on a real pseudo-terminal, flashed and replayed through the
same code path a real board uses (raw REPL over pyserial, line protocol)."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent import blob, config, recording
from edge_agent.board import flash
from edge_agent.board.virtual import VirtualBoard
from edge_agent.learn import model as fmodel
from edge_agent.errors import UserError
from edge_agent.quant import quantize
from edge_agent.replay import detections
from edge_agent.board.transport import RawRepl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings():
    return config.load(ROOT / "config.yaml")


@pytest.fixture
def other_blob(tmp_path, demo_paths):
    """A second model of the same shape: the demo quantized on other windows."""
    data = np.load(demo_paths["data"])
    qm = quantize(fmodel.load_model(demo_paths["model"]), data["X_train"][:50])
    path = tmp_path / "other.bin"
    blob.write(qm, path)
    assert path.read_bytes() != demo_paths["blob"].read_bytes()
    return path


def crc_of(path: Path) -> str:
    return path.read_bytes()[-4:][::-1].hex()


def test_flash_reflash_and_replay_equal_numpy(settings, demo_paths):
    with VirtualBoard() as board:
        first = flash.flash(settings, demo_paths["blob"], board.port, progress=False)
        assert "model.bin" in first.written and "config.json" in first.written
        assert first.ready["model_crc"] == crc_of(demo_paths["blob"])
        again = flash.flash(settings, demo_paths["blob"], board.port, progress=False)
        assert again.written == [] and len(again.skipped) == len(first.written)
        rec = recording.load(demo_paths["recording"])
        qm = blob.read(demo_paths["blob"])
        settings.hop = 40  # overlapping windows, set on the board before streaming
        on_board = list(detections(rec, qm, settings, "board", port=board.port))
        reference = list(detections(rec, qm, settings, "numpy"))
    assert len(reference) > 40
    assert on_board == reference


def test_killed_mid_flash_keeps_previous_model(tmp_path, settings, demo_paths, other_blob):
    flash_dir = tmp_path / "board"
    flash_dir.mkdir()
    board = VirtualBoard(flash_dir).start()
    flash.flash(settings, demo_paths["blob"], board.port, progress=False)
    sent = []

    def kill_halfway(n):
        sent.append(n)
        if sum(sent) > other_blob.stat().st_size // 2:
            board.stop()  # power cut in the middle of model.new

    with pytest.raises(UserError):
        flash.flash(settings, other_blob, board.port, progress=kill_halfway)
    assert (flash_dir / "model.new").exists()  # the half-written new model
    assert crc_of(flash_dir / "model.bin") == crc_of(demo_paths["blob"])
    with VirtualBoard(flash_dir) as board:
        repl = RawRepl(board.port)
        ready = flash.wait_ready(repl.t.serial, 20)  # main.py boots on the previous model
        repl.close()
        assert ready["model_crc"] == crc_of(demo_paths["blob"]) and not ready["errors"]
        done = flash.flash(settings, other_blob, board.port, progress=False)
        assert "model.bin" in done.written
        assert done.ready["model_crc"] == crc_of(other_blob)


def test_corrupt_model_refused_by_device(tmp_path, settings, demo_paths):
    flash_dir = tmp_path / "board"
    flash_dir.mkdir()
    with VirtualBoard(flash_dir) as board:
        flash.flash(settings, demo_paths["blob"], board.port, progress=False)
        bad = bytearray(demo_paths["blob"].read_bytes())
        bad[1000] ^= 0x01
        (flash_dir / "model.bin").write_bytes(bytes(bad))
        repl = RawRepl(board.port)
        repl.enter()
        repl.reset()  # reboot: main.py finds the corrupt model.bin
        ready = flash.wait_ready(repl.t.serial, 20)
        repl.close()
    assert ready["model_crc"] == crc_of(demo_paths["blob"])  # still the previous model
    assert ready["errors"] and "CRC" in ready["errors"][0]["reason"]
    assert ready["errors"][0]["action"] == "keeping the previous model"


def test_mpremote_works_on_the_virtual_board():
    with VirtualBoard() as board:
        proc = subprocess.run([shutil.which("mpremote"), "connect", board.port, "resume", "exec",
                               "import sys; print(sys.implementation.name, 6 * 7)"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["micropython", "42"]


def test_board_command_prints_port_first(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "board", "--emulate", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("port: /dev/pts/")
        port = first.split()[1]
        repl = RawRepl(port)
        repl.enter()
        assert repl.eval("1 + 1") == 2
        repl.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class FakePort:  # USB descriptors of real boards cannot exist here: a stand-in
    def __init__(self, device, vid):
        self.device, self.vid = device, vid


@pytest.mark.parametrize("ports,expect", [
    ([FakePort("/dev/ttyACM0", 0x2E8A), FakePort("/dev/ttyS0", None)], "/dev/ttyACM0"),
    ([FakePort("/dev/ttyS0", None)], "no board found"),
    ([FakePort("/dev/ttyACM0", 0x2E8A), FakePort("/dev/ttyUSB0", 0x10C4)], "several boards found"),
])
def test_auto_port(monkeypatch, ports, expect):
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: ports)
    if expect.startswith("/dev"):
        assert flash.find_port("auto") == expect
    else:
        with pytest.raises(UserError, match=expect):
            flash.find_port("auto")
