"""Careless or hostile files and flags (issue 15, items 1 and 13, and "clear
errors instead of internal ones"): one line on stderr, a non-zero exit status,
no traceback, no output file."""
from __future__ import annotations

import resource
import subprocess
import sys

import numpy as np
import pytest

from edge_agent import config, replay
from helpers import ROOT, random_model, run_cli

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
device_id: *h
"""


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode not in (0, 70), (proc.returncode, proc.stderr)  # 70: an internal error
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def limited_cli(*args, cwd=None):
    """The CLI with 1 GB of address space: before the fix the bomb grew ~55 MB/s."""
    import os

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "edge_agent", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60,
                          preexec_fn=limit)


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    line = one_line_error(limited_cli("replay", "--config", tmp_path / "bomb.yaml"))
    assert "anchors" in line or "aliases" in line
    assert len(line) < 300


@pytest.mark.parametrize("text,message", [
    ("device_id: " + "x" * 100_000 + "\n", "device_id must be 1 to 64 characters"),
    ("device_id: [" + ", ".join(["1"] * 30_000) + "]\n", "device_id: expected text"),
    ("sensor:\n  rate_hz: .nan\n", "sensor.rate_hz: expected a finite number"),
    ("sensor:\n  rate_hz: .inf\n", "sensor.rate_hz: expected a finite number"),
    ("sensor:\n  rate_hz: 1.0e+400\n", "sensor.rate_hz: expected a finite number"),
    ("thresholds:\n  walk: .nan\n", "thresholds.walk: expected a finite number"),
    ("publisher:\n  topic_prefix: '#'\n", "publisher.topic_prefix must be"),
    ("publisher:\n  topic_prefix: 'a/+/b'\n", "publisher.topic_prefix must be"),
    ("publisher:\n  topic_prefix: '$SYS'\n", "publisher.topic_prefix must be"),
    ("publisher:\n  topic_prefix: 'a//b'\n", "publisher.topic_prefix must be"),
    ("publisher:\n  queue_len: -5\n", "publisher.queue_len must be between 1 and 10000"),
    ("publisher:\n  queue_len: 0\n", "publisher.queue_len must be between 1 and 10000"),
    ("model: \"a\\0b\"\n", "model: expected a file path"),
    ('labels: ["a\\nb", "c"]\n', "labels: each label must be"),
    ("device_id: \"a\\nb\"\n", "device_id must be 1 to 64 characters"),
    ("[" * 5000 + "]" * 5000 + "\n", "config"),
    ("window: " + "9" * 5000 + "\n", "cannot be read"),
    ("window: " + "9" * 30 + "\n", "window must be between 1 and 1000000"),
])
def test_config_mistakes_are_one_short_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(config.UserError) as err:
        config.load(path)
    assert message in str(err.value)
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_config_bad_value_on_the_command_line_is_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("sensor:\n  rate_hz: .nan\n")
    one_line_error(run_cli("replay", "--config", tmp_path / "c.yaml"))


def test_mistyped_url_scheme_never_echoes_the_password():
    line = one_line_error(run_cli("monitor", "--mqtt", "mqtts-typo://bob:hunter2@localhost:8883", "--count", "1"))
    assert "hunter2" not in line and "expected mqtt://" in line
    line = one_line_error(run_cli("monitor", "--mqtt", "mqtt://bob:hunter2@localhost:x1", "--count", "1"))
    assert "hunter2" not in line


def test_train_refuses_float32_overflow(tmp_path, demo_paths):
    # item 13: float64 1e300 became inf in float32 and gave a NaN model with exit 0
    with np.load(demo_paths["data"]) as z:
        data = {k: z[k] for k in z.files}
    data["X_train"] = data["X_train"].astype(np.float64)
    data["X_train"][3, 5, 1] = 1e300
    np.savez(tmp_path / "big.npz", **data)
    line = one_line_error(run_cli("train", "--data", tmp_path / "big.npz", "--out", tmp_path / "m.npz",
                                  "--epochs", "1", "--hidden", "4"))
    assert "float32" in line and not (tmp_path / "m.npz").exists()
    # quantize calibrating on the same data: refused, not a warning
    line = one_line_error(run_cli("quantize", "--model", demo_paths["model"], "--calib", tmp_path / "big.npz",
                                  "--out", tmp_path / "m.bin"))
    assert "float32" in line and not (tmp_path / "m.bin").exists()


def test_quantize_refuses_a_model_float32_cannot_hold(tmp_path, demo_paths, rng):
    fm = random_model(rng, n_in=6, hidden=8, layers=1, classes=4)
    arrays = {k: v.astype(np.float64) for k, v in fm.arrays().items()}
    arrays["lstm.weight_hh_l0"][0, 0] = 1e300
    np.savez(tmp_path / "m.npz", **arrays)
    line = one_line_error(run_cli("quantize", "--model", tmp_path / "m.npz", "--calib", demo_paths["data"],
                                  "--out", tmp_path / "m.bin"))
    assert "float32" in line and not (tmp_path / "m.bin").exists()


def test_training_that_diverges_writes_no_model(monkeypatch):
    from edge_agent.errors import UserError
    from edge_agent.learn import train as train_mod

    real_fit = train_mod.fit

    def fit(model, *a, **kw):  # as if an exploding gradient had poisoned the weights
        out = real_fit(model, *a, **kw)
        model.head_w[0, 0] = np.nan
        return out

    monkeypatch.setattr(train_mod, "fit", fit)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (20, 8, 3))
    y = np.arange(20) % 2
    with pytest.raises(UserError, match="diverged"):
        train_mod.train(x, y, cfg=train_mod.TrainConfig(hidden=4, epochs=1))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def model_arrays(rng, **changes):
    fm = random_model(rng, n_in=6, hidden=8, layers=1, classes=4)
    arrays = dict(fm.arrays())
    arrays.update(changes)
    return arrays


@pytest.mark.parametrize("what", ["empty model", "1-D weight", "string weight", "complex weight", "hidden 0",
                                  "K 0", "class name with newline", "empty data", "complex data",
                                  "string data"])
def test_quantize_inputs_are_one_line_errors(tmp_path, demo_paths, rng, what):
    model, data = demo_paths["model"], demo_paths["data"]
    if what == "empty model":
        model = tmp_path / "m.npz"
        model.write_bytes(b"")
    elif what == "1-D weight":
        model = _npz(tmp_path / "m.npz", **model_arrays(rng, **{"lstm.weight_ih_l0": np.zeros(32)}))
    elif what == "string weight":
        model = _npz(tmp_path / "m.npz", **model_arrays(rng, **{"lstm.weight_ih_l0": np.full((32, 6), "1.0")}))
    elif what == "complex weight":
        model = _npz(tmp_path / "m.npz", **model_arrays(rng, **{"lstm.weight_ih_l0": np.ones((32, 6), complex)}))
    elif what == "hidden 0":
        model = _npz(tmp_path / "m.npz", **{"lstm.weight_ih_l0": np.zeros((0, 6)), "lstm.weight_hh_l0": np.zeros((0, 0)),
                                            "lstm.bias_ih_l0": np.zeros(0), "lstm.bias_hh_l0": np.zeros(0),
                                            "head.weight": np.zeros((4, 0)), "head.bias": np.zeros(4)})
    elif what == "K 0":
        model = _npz(tmp_path / "m.npz", **model_arrays(rng, **{"head.weight": np.zeros((0, 8)),
                                                                 "head.bias": np.zeros(0)}))
    elif what == "class name with newline":
        model = _npz(tmp_path / "m.npz", **model_arrays(rng, class_names=np.array(["a", "b\nc", "d", "e"])))
    else:
        with np.load(demo_paths["data"]) as z:
            arrays = {k: z[k] for k in z.files}
        if what == "empty data":
            data = tmp_path / "d.npz"
            data.write_bytes(b"")
        else:
            arrays["X_train"] = arrays["X_train"].astype(complex if what == "complex data" else str)
            data = _npz(tmp_path / "d.npz", **arrays)
    one_line_error(run_cli("quantize", "--model", model, "--calib", data, "--out", tmp_path / "out.bin"))
    assert not (tmp_path / "out.bin").exists()


def test_recordings_bom_long_fields_and_bad_values(tmp_path, demo_paths):
    from edge_agent import recording

    (tmp_path / "bom.csv").write_bytes("\ufefft,a,b\n0,1,2\n0.02,3,4\n".encode())
    rec = recording.load(tmp_path / "bom.csv")
    assert rec.channels == ["a", "b"] and rec.x.shape == (2, 2)  # not a third channel named "\ufefft"
    (tmp_path / "long.csv").write_text("a\n" + "1" * 200_000 + "\n")
    (tmp_path / "nan_t.csv").write_text("t,a\nnan,1\n0.1,2\n")
    np.savez(tmp_path / "cx.npz", x=np.ones((5, 6), complex))
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("long.csv", "nan_t.csv", "cx.npz", "empty.npz"):
        one_line_error(run_cli("replay", tmp_path / name, "--json"))


def test_replay_never_prints_nan(tmp_path):
    # item 3: "t": NaN came out of a NaN timestamp
    (tmp_path / "r.csv").write_text("t,a,b,c,d,e,f\n" + "".join(f"{'nan' if n == 3 else n / 50},1,2,3,4,5,6\n"
                                                              for n in range(300)))
    proc = run_cli("replay", tmp_path / "r.csv", "--json")
    line = one_line_error(proc)
    assert "NaN" not in proc.stdout and "timestamps" in line


def test_realtime_paces_every_backend(monkeypatch, demo_paths):
    """--realtime was ignored with --mqtt and with the micropython backend."""
    from edge_agent import blob, recording

    slept = []
    monkeypatch.setattr(replay.time, "sleep", lambda s: slept.append(s))
    rec = recording.load(demo_paths["recording"])
    rec.x, rec.t = rec.x[:600], rec.t[:600]
    qm = blob.read(demo_paths["blob"])
    settings = config.load(ROOT / "config.yaml")
    dets = list(replay.detections(rec, qm, settings, "numpy", realtime=True))
    assert dets == list(replay.detections(rec, qm, settings, "numpy"))
    assert len(slept) == len(dets) and sum(slept) > 0  # a pause before each, the recording's own times
    calls = {}
    monkeypatch.setattr(replay, "micropython_detections",
                        lambda *a, **kw: calls.setdefault("realtime", a[5] if len(a) > 5 else kw.get("realtime")))
    replay.detections(rec, qm, settings, "micropython", blob_path=demo_paths["blob"], realtime=True)
    assert calls["realtime"] is True


def test_flash_killed_leaves_no_temp_folder(tmp_path, demo_paths):
    """flash left /tmp/tmpXXXX folders when killed (SIGTERM) while compiling the runner."""
    import os
    import signal

    code = """
import os, signal, sys, time
from pathlib import Path
from edge_agent import config
from edge_agent.board import flash

class Repl:  # a board that answers as an RP2040 would, up to the compile step
    def __init__(self, port): pass
    def enter(self): pass
    def eval(self, expr): return (4 << 10) | 6
    def close(self): pass

flash.RawRepl = Repl
flash._mpy_version = lambda: 6
def killed(*a, **k):  # the first mpy-cross call: the temporary folder exists now
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
flash.subprocess.run = killed
flash.flash(config.Settings(), Path(sys.argv[1]), port="/dev/null", progress=False)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code, str(demo_paths["blob"])], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert list(tmp_path.iterdir()) == []
