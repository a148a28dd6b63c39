"""The supervised vibration fault classifier from the command line: DATA windows of
accelerometer samples (rate_hz) go through the log-band front-end in train,
quantize and evaluate, and replay names the faults of a machine recording, the
same on the reference and on device/ under the real MicroPython unix port."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.learn.anomaly import FRONTEND_BANDS
from edge_agent.learn.model import load_npz
from edge_agent.synthetic import MACHINE_RATE_HZ, write_machine_dataset

from helpers import run_cli

WINDOW_FRAMES = (int(1.5 * MACHINE_RATE_HZ) - 512) // 128 + 1  # faults.npz's 1.5 s windows as frames: 15
CONFIG = f"""window: {WINDOW_FRAMES}
hop: 5
smooth: 2
thresholds:
  default: 0.6
  normal: 1.0
"""


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """A small machine (4 min of test recording, 2 fault episodes), a classifier
    trained on its faults.npz and quantized: the paths and train's output."""
    tmp = tmp_path_factory.mktemp("faults")
    write_machine_dataset(tmp / "vib", 200, 80, seed=0, normal_minutes=0.5, test_minutes=4.0, test_recordings=1)
    trained = run_cli("train", "--data", tmp / "vib" / "faults.npz", "--out", tmp / "f.npz", "--epochs", "20")
    assert trained.returncode == 0, trained.stderr
    out = run_cli("quantize", "--model", tmp / "f.npz", "--calib", tmp / "vib" / "faults.npz", "--out", tmp / "f.bin")
    assert out.returncode == 0, out.stderr
    (tmp / "cfg.yaml").write_text(CONFIG)
    return tmp, trained.stdout


def replay(tmp, recording, backend="numpy"):
    out = run_cli("replay", recording, "--blob", tmp / "f.bin", "--config", tmp / "cfg.yaml", "--json",
                  "--backend", backend)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_train_and_quantize_take_the_front_end_for_sensor_windows(faults):
    tmp, said = faults
    assert load_npz(tmp / "f.npz").n_inputs == FRONTEND_BANDS  # log bands, not the 3 raw axes
    fe = blob.read(tmp / "f.bin").frontend
    assert fe is not None and fe.kind == "log" and fe.rate_hz == MACHINE_RATE_HZ
    assert (fe.frame, fe.hop) == (512, 128)
    assert f"log front-end at 1600 Hz, {WINDOW_FRAMES} frames per training window" in said


def test_evaluate_runs_the_blob_front_end(faults):
    tmp, _ = faults
    out = run_cli("evaluate", "--model", tmp / "f.npz", "--blob", tmp / "f.bin", "--data",
                  tmp / "vib" / "faults.npz", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["n"] == 80
    assert summary["float_accuracy"] >= 0.9 and summary["agreement"] >= 0.95


def test_replay_names_each_fault_while_it_runs(faults):
    tmp, _ = faults
    rec = tmp / "vib" / "test" / "machine_1.npz"
    with np.load(rec) as z:
        t, fault, names = z["t"], z["fault"], [str(s) for s in z["faults"]]
    dets = replay(tmp, rec)
    assert dets
    window_s = (WINDOW_FRAMES * 128 + 512) / MACHINE_RATE_HZ  # a decision sees its window: it lags a fault's end
    for d in dets:
        at = np.searchsorted(t, d["t"])
        seen = {names[k] for k in fault[np.searchsorted(t, d["t"] - window_s):at + 1]}
        assert d["label"] in seen, (d, seen)
    for k in set(np.unique(fault)) - {0}:  # every fault episode in the recording is named
        assert any(d["label"] == names[k] for d in dets), names[k]


def test_replay_sums_the_axes_as_the_board_does(faults, tmp_path):
    """The front-end takes one stream: the axes' sum. Permuting the axes changes
    each one but not the sum, so the detections stay; channel 0 alone would not."""
    tmp, _ = faults
    rec = tmp / "vib" / "test" / "machine_1.npz"
    with np.load(rec) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x"] = arrays["x"][:, ::-1]
    np.savez(tmp_path / "permuted.npz", **arrays)
    assert replay(tmp, tmp_path / "permuted.npz") == replay(tmp, rec)


def test_replay_identical_on_device_code(faults, tmp_path):
    tmp, _ = faults
    with np.load(tmp / "vib" / "test" / "machine_1.npz") as z:
        keep = z["t"] >= 100.0  # the imbalance episode and its end
        np.savez(tmp_path / "part.npz", **{k: (z[k][keep] if z[k].shape[:1] == keep.shape else z[k])
                                           for k in z.files})
    on_host = replay(tmp, tmp_path / "part.npz")
    assert on_host and on_host == replay(tmp, tmp_path / "part.npz", "micropython")


@pytest.mark.parametrize("rate, message", [(800.0, "samples at 800 Hz; the front-end takes 1600 Hz"),
                                           (-5.0, "rate_hz must be one number in (0, 1e6] Hz")])
def test_a_wrong_sample_rate_is_one_line(faults, tmp_path, rate, message):
    tmp, _ = faults
    with np.load(tmp / "vib" / "faults.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rate_hz"] = np.float32(rate)
    np.savez(tmp_path / "bad.npz", **arrays)
    out = run_cli("evaluate", "--model", tmp / "f.npz", "--blob", tmp / "f.bin", "--data", tmp_path / "bad.npz")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
