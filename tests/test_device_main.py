"""device/main.py under the real MicroPython unix port, fed by the stream sensor."""
import json
import shutil
import subprocess

import numpy as np
import pytest

from edge_agent import blob, recording
from edge_agent.board import link, unixport
from edge_agent.reference.inputs import quantize_raw, to_raw
from edge_agent.reference.lstm import IntegerLSTM
from edge_agent.reference.stream import decide, score_fraction, stream_decisions


def start_board(board_dir, config):
    (board_dir / "config.json").write_text(json.dumps(config))
    return subprocess.Popen([unixport.binary(), str(unixport.DEVICE_DIR / "main.py")], cwd=board_dir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})


def messages(stdout: bytes):
    out = [link.parse(line) for line in stdout.splitlines()]
    return [m for m in out if m is not None]


@pytest.mark.parametrize("window,hop,continuous", [(100, 100, False), (100, 40, False), (60, 30, True)])
def test_detections_equal_reference(tmp_path, demo_paths, window, hop, continuous):
    shutil.copy(demo_paths["blob"], tmp_path / "model.bin")
    qm = blob.read(demo_paths["blob"])
    rec = recording.load(demo_paths["recording"])
    raw = to_raw(rec.x[:1000], qm.inputs)
    proc = start_board(tmp_path, {"window": window, "hop": hop, "continuous": continuous,
                                  "thresholds_q15": [0] * qm.n_classes})
    out, err = proc.communicate(b"".join(link.sample_line(r) for r in raw), timeout=300)
    assert proc.returncode == 0, err.decode()
    msgs = messages(out)
    assert msgs[0].kind == "ready" and msgs[0].payload["hidden"] == qm.hidden
    dets = [m.payload for m in msgs if m.kind == "det"]
    want = stream_decisions(IntegerLSTM(qm), quantize_raw(raw, qm.inputs), window, hop, continuous)
    classes, scores = decide(np.stack([l for _, l in want]), qm)
    assert [(d["sample"], d["class"], d["score"]) for d in dets] == \
        [(t, int(k), score_fraction(s)) for (t, _), k, s in zip(want, classes, scores)]
    assert [d["seq"] for d in dets] == list(range(1, len(dets) + 1))
    assert msgs[-1].kind == "status" and msgs[-1].payload["samples"] == len(raw)


def test_corrupt_model_refused_previous_kept(tmp_path, demo_paths):
    shutil.copy(demo_paths["blob"], tmp_path / "model.bin")
    proc = start_board(tmp_path, {})
    proc.communicate(b"", timeout=60)  # boots once: model.good now exists
    bad = bytearray(demo_paths["blob"].read_bytes())
    bad[500] ^= 0x04
    (tmp_path / "model.bin").write_bytes(bytes(bad))
    proc = start_board(tmp_path, {"window": 10, "hop": 10})
    out, err = proc.communicate(b"".join(link.sample_line([0] * 6) for _ in range(10)), timeout=60)
    msgs = messages(out)
    assert msgs[0].kind == "error" and "CRC" in msgs[0].payload["reason"]
    assert msgs[1].kind == "ready"  # running the previous model
    assert any(m.kind == "det" for m in msgs)


def test_stray_and_corrupt_lines_told_apart():
    det = {"seq": 1, "boot": "0badf00d", "t_ms": 40, "sample": 99, "class": 2, "label": "run", "score": 0.5}
    good = link.frame("det", det)
    assert link.parse(good).payload == det
    assert link.parse(">>> print('hi')\n") is None
    bad = good.replace('"seq": 1', '"seq": 7')
    with pytest.raises(link.CorruptLine):
        link.parse(bad)
