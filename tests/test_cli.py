"""The commands as a user runs them: results, and one-line errors."""
import json
import wave

import numpy as np
import pytest

from helpers import run_cli


def _one_line_error(proc, pattern):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in lines[0], lines[0]


def test_quantize_then_evaluate(tmp_path, demo_paths):
    out, report = tmp_path / "m.bin", tmp_path / "r.json"
    proc = run_cli("quantize", "--model", demo_paths["model"], "--calib", demo_paths["data"],
                   "--out", out, "--report", report)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    assert [g for g in rep["layers"][0]["gates"]] == ["input", "forget", "cell", "output"]
    assert rep["layers"][1]["cell"]["rms_relative"] < 0.05
    proc = run_cli("evaluate", "--model", demo_paths["model"], "--blob", out,
                   "--data", demo_paths["data"], "--json", "--dump", tmp_path / "d.npz")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == {"float_accuracy", "int8_accuracy", "agreement", "n", "backend"}
    assert summary["n"] == 200 and summary["backend"] == "numpy"
    with np.load(tmp_path / "d.npz") as d:
        assert d["logits"].shape == (200, 4) and d["logits"].dtype == np.int32
        assert np.array_equal(d["pred"], d["logits"].argmax(1))


def test_replay_bundled_demo_prints_detections(tmp_path):
    proc = run_cli("replay", "--json", cwd=tmp_path)  # no config here: the bundled demo
    assert proc.returncode == 0, proc.stderr
    dets = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(dets) > 10
    assert [d["seq"] for d in dets] == list(range(1, len(dets) + 1))
    assert {"seq", "t", "class", "label", "score"} == set(dets[0])
    # the demo recording holds all four activities, and the model finds them
    assert {d["label"] for d in dets} == {"still", "walk", "run", "shake"}


@pytest.mark.parametrize("args,pattern", [
    (["quantize", "--model", "nope.npz", "--calib", "x.npz", "--out", "o.bin"], "model file not found"),
    (["evaluate", "--model", "{model}", "--blob", "{model}", "--data", "{data}"], "not an edge-agent model blob"),
    (["evaluate", "--model", "{model}", "--blob", "{bin}", "--data", "{bad_shape}"], "X_train has shape"),
    (["evaluate", "--model", "{other}", "--blob", "{bin}", "--data", "{data}"], "blob does not match the model"),
    (["evaluate", "--model", "{model}", "--blob", "{corrupt}", "--data", "{data}"], "CRC mismatch"),
    (["quantize", "--model", "{model}", "--calib", "{data}", "--out", "/nonexistent/dir/m.bin"], "No such file"),
    (["replay", "{data}"], "needs an array 'x'"),
    (["replay", "--config", "{bad_config}"], "sensor.rate_hz: expected a number"),
    # a voice recording, no model named: the bundled demo takes 6 channels
    (["replay", "{wav}"], "the bundled demo, which takes 6 (name yours with --blob"),
])
def test_bad_input_is_one_line(tmp_path, demo_paths, args, pattern):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "bad_shape.npz", X_train=rng.normal(size=(4, 5)), y_train=np.zeros(4, int),
             X_test=rng.normal(size=(4, 5)), y_test=np.zeros(4, int))
    corrupt = bytearray(demo_paths["blob"].read_bytes())
    corrupt[100] ^= 0x10
    (tmp_path / "corrupt.bin").write_bytes(bytes(corrupt))
    with np.load(demo_paths["model"]) as z:
        other = {k: z[k] for k in z.files}
    other["head.bias"] = other["head.bias"] + 1
    np.savez(tmp_path / "other.npz", **other)
    (tmp_path / "bad.yaml").write_text("sensor:\n  rate_hz: fast\n")
    with wave.open(str(tmp_path / "talk.wav"), "wb") as w:
        w.setparams((1, 2, 16000, 0, "NONE", "not compressed"))  # mono 16-bit 16 kHz: a voice recording
        w.writeframes(bytes(32000))
    names = {"model": demo_paths["model"], "data": demo_paths["data"], "bin": demo_paths["blob"],
             "bad_shape": tmp_path / "bad_shape.npz", "corrupt": tmp_path / "corrupt.bin",
             "other": tmp_path / "other.npz", "bad_config": tmp_path / "bad.yaml", "wav": tmp_path / "talk.wav"}
    proc = run_cli(*[a.format(**names) for a in args], cwd=tmp_path)
    _one_line_error(proc, pattern)


def test_failed_quantize_leaves_no_file(tmp_path, demo_paths):
    np.savez(tmp_path / "three.npz", X_train=np.zeros((2, 5, 3), np.float32), y_train=np.zeros(2, int),
             X_test=np.zeros((2, 5, 3), np.float32), y_test=np.zeros(2, int))
    out = tmp_path / "m.bin"
    proc = run_cli("quantize", "--model", demo_paths["model"], "--calib", tmp_path / "three.npz", "--out", out)
    _one_line_error(proc, "channels")
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "three.npz"]


def test_evaluate_micropython_dump_equals_numpy(tmp_path, demo_paths):
    """device/ under the real MicroPython unix port, on every test window of the
    bundled dataset, writes the very logits the numpy reference does."""
    dumps = {}
    for backend in ("numpy", "micropython"):
        out = tmp_path / f"{backend}.npz"
        proc = run_cli("evaluate", "--model", demo_paths["model"], "--blob", demo_paths["blob"],
                       "--data", demo_paths["data"], "--backend", backend, "--json", "--dump", out)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["backend"] == backend
        with np.load(out) as z:
            dumps[backend] = {k: z[k] for k in z.files}
    for key in ("logits", "pred", "score"):
        assert np.array_equal(dumps["numpy"][key], dumps["micropython"][key]), key
    assert len(dumps["numpy"]["logits"]) == 200
