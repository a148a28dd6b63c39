"""Voice commands end to end: the espeak-ng corpus (Speech Commands layout, held-out
voices), WAV data through the front-end into train / quantize / evaluate as written,
and a long WAV replayed with identical detections on the numpy, micropython and board
backends (continuous decisions, posterior smoothing, refractory period)."""
import json
import subprocess
import wave

import numpy as np
import pytest

from edge_agent import blob, config, dataset, keywords, recording
from edge_agent.board import link, unixport
from edge_agent.board.flash import flash
from edge_agent.board.virtual import VirtualBoard
from edge_agent.learn.train import TrainConfig, train
from edge_agent.quant.frontend import quantize_with_frontend
from edge_agent.reference.stream import smooth_detections
from edge_agent.replay import detections
from helpers import run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("kw")
    counts = keywords.make_corpus(out, per_class=3, test_per_class=1, seed=5)
    return out, counts


def test_corpus_layout_and_held_out_voices(corpus):
    out, counts = corpus
    assert counts == {"clips": 54, "test": 12, "classes": 12}  # unknown: 3x the training clips
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(keywords.CLASSES)
    listed = (out / "testing_list.txt").read_text().split()
    assert len(listed) == 12
    for label in keywords.CLASSES:
        clips = sorted((out / label).glob("*.wav"))
        assert len(clips) == (10 if label == "unknown" else 4)
        for clip in clips:
            with wave.open(str(clip)) as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
            speaker = clip.name.split("_nohash_")[0]
            variant = speaker.split("-")[-1]
            held_out = f"{label}/{clip.name}" in listed
            assert variant in (keywords.TEST_VARIANTS if held_out else keywords.TRAIN_VARIANTS), clip
    # speech is there: a keyword clip is louder than its quietest stretch
    x, _ = recording.read_wav(sorted((out / "yes").glob("*.wav"))[0], 16000)
    frames = np.abs(x.astype(float)).reshape(50, -1).mean(axis=1)
    assert frames.max() > 4 * frames.min() + 1


def test_corpus_is_reproducible(corpus, tmp_path):
    out, _ = corpus
    keywords.make_corpus(tmp_path, per_class=3, test_per_class=1, seed=5)
    for clip in sorted((out / "go").glob("*.wav")):
        assert clip.read_bytes() == (tmp_path / "go" / clip.name).read_bytes()


def test_wav_folder_dataset_and_bad_clips(corpus, tmp_path):
    out, _ = corpus
    settings = config.Settings()
    fe = dataset.frontend_for(settings, dataset.is_wav_folder(out))
    assert fe is not None and fe.kind == "mel"
    data = dataset.load(out, frontend=fe)
    assert data.train.x.shape == (42, 49, 32) and data.test.x.shape == (12, 49, 32)
    assert data.class_names == sorted(keywords.CLASSES) and data.frontend is fe
    # a bad clip is skipped and named, the rest loads
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF....WAVEjunk")
    recording.write_wav(copy / "no" / "fast_nohash_0.wav", np.zeros(100, np.int16), 22050)
    data = dataset.load(copy, frontend=fe)
    assert len(data.skipped) == 2 and len(data.train.y) + len(data.test.y) == 54
    # config.yaml overrides the default front-end
    settings.frontend.kind = "linear"
    settings.frontend.bands = 16
    assert dataset.frontend_for(settings, True).kind == "linear"
    settings.frontend.kind = "none"
    with pytest.raises(Exception, match="front-end"):
        dataset.load(out, frontend=dataset.frontend_for(settings, True))


def test_cli_as_written(corpus, tmp_path):
    """dataset keywords, train --data D, quantize --calib D, evaluate --data OTHER (a few
    epochs and a small model only to keep the test short)."""
    out, _ = corpus
    other = tmp_path / "other"
    res = run_cli("dataset", "keywords", "--out", other, "--per-class", "1", "--test-per-class", "1", "--seed", "9")
    assert res.returncode == 0, res.stderr
    m, b = tmp_path / "m.npz", tmp_path / "m.bin"
    res = run_cli("train", "--data", out, "--out", m, "--epochs", "2", "--hidden", "8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_cli("quantize", "--model", m, "--calib", out, "--out", b, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    qm = blob.read(b)
    assert qm.frontend is not None and qm.frontend.bands == qm.n_inputs == 32
    assert np.all(qm.inputs.raw_per_unit == 1)
    res = run_cli("evaluate", "--model", m, "--blob", b, "--data", other, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 12 and 0 <= summary["int8_accuracy"] <= 1  # the test split: 1 per class
    res = run_cli("dataset", "activity", "--out", tmp_path / "a.npz", "--per-class", "2", "--test-per-class", "2")
    assert res.returncode == 0, res.stderr
    assert dataset.load(tmp_path / "a.npz").train.x.shape[0] == 8  # (vibration: issue 14's tests)


def test_smoothing_and_refractory_device_equals_host():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, 400)
    scores = rng.integers(0, 32768, 400)
    thresholds = [32768, 9000, 15000, 20000]  # class 0 never fires, like silence and unknown
    for n, refractory in ((1, 0), (3, 5), (4, 0), (2, 12)):
        want = smooth_detections(classes, scores, thresholds, n, refractory)
        code = (f"from stream import Smoother\ns = Smoother({n}, {refractory}, {thresholds})\n"
                f"c = {classes.tolist()}\nv = {scores.tolist()}\nout = []\n"
                "for i in range(len(c)):\n r = s.push(c[i], v[i])\n if r >= 0:\n  out.append((i, r))\nprint(out)")
        proc = subprocess.run([unixport.binary(), "-c", code], capture_output=True, text=True, timeout=60,
                              env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})
        assert proc.returncode == 0, proc.stderr
        assert eval(proc.stdout) == [tuple(map(int, d)) for d in want]
        if refractory:
            gaps = np.diff([i for i, _ in want])
            assert len(want) > 3 and gaps.min() > refractory
        if n == 1 and refractory == 0:  # windowed use: a decision stands alone, as before
            assert [i for i, _ in want] == [i for i in range(400) if scores[i] >= thresholds[classes[i]]]


@pytest.fixture(scope="module")
def keyword_model(corpus, tmp_path_factory):
    out, _ = corpus
    data = dataset.load(out, frontend=dataset.frontend_for(config.Settings(), True))
    fm, _ = train(data.train.x, data.train.y, None, TrainConfig(hidden=8, epochs=3), data.class_names)
    path = tmp_path_factory.mktemp("model") / "kw.bin"
    blob.write(quantize_with_frontend(fm, data.train.x, data.frontend), path)
    return path


def test_wav_replay_same_on_every_backend(keyword_model, tmp_path):
    samples, truth = keywords.make_recording(9, seed=3, keyword_every=2.0)
    assert len(truth) >= 2
    wav = tmp_path / "long.wav"
    recording.write_wav(wav, samples, 16000)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {keyword_model}\nwindow: 49\nhop: 7\ncontinuous: true\nsmooth: 3\n"
                   "refractory: 4\nthresholds:\n  default: 0.06\n")
    settings = config.load(cfg)
    qm = blob.read(keyword_model)
    rec = recording.load(wav)
    reference = list(detections(rec, qm, settings, "numpy"))
    assert len(reference) >= 2
    assert list(detections(rec, qm, settings, "micropython", keyword_model)) == reference
    with VirtualBoard() as vboard:
        flash(settings, keyword_model, port=vboard.port, progress=False, warn=lambda m: None)
        import serial

        with serial.Serial(vboard.port, 115200) as port:  # a damaged frame first: skipped, not fed
            frame = bytearray(next(link.audio_frames(np.arange(100))))
            frame[10] ^= 0xFF
            port.write(bytes(frame))
        assert list(detections(rec, qm, settings, "board", port=vboard.port)) == reference
    res = run_cli("replay", wav, "--config", cfg, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [json.loads(line) for line in res.stdout.splitlines()] == reference


@pytest.mark.rp2040
def test_wav_replay_on_the_emulated_rp2040(keyword_model, tmp_path):
    """The official firmware on an emulated RP2040 (its Thumb FFT and filterbank,
    32-bit viper) gives the reference's detections for a WAV streamed to it."""
    import os
    from pathlib import Path

    from edge_agent.board.rp2040 import FIRMWARE_ENV, RP2040Board

    firmware = Path(os.environ.get(FIRMWARE_ENV, Path(__file__).resolve().parents[2] / "shared" / "firmware"))
    if not firmware.is_dir():
        pytest.fail(f"no RP2040 firmware at {firmware} (set {FIRMWARE_ENV}, or deselect: -m 'not rp2040')")
    samples, _ = keywords.make_recording(4, seed=4, keyword_every=1.5)
    wav = tmp_path / "short.wav"
    recording.write_wav(wav, samples, 16000)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {keyword_model}\nwindow: 49\nhop: 7\nsmooth: 2\nrefractory: 3\n"
                   "thresholds:\n  default: 0.06\n")
    settings = config.load(cfg)
    qm = blob.read(keyword_model)
    rec = recording.load(wav)
    reference = list(detections(rec, qm, settings, "numpy"))
    assert reference
    with RP2040Board(tmp_path / "flash", firmware) as board:
        result = flash(settings, keyword_model, port=board.port, progress=False, ready_timeout=120)
        assert "frontend_thumb.mpy" in result.written and result.ready["frontend_bands"] == 32
        assert list(detections(rec, qm, settings, "board", port=board.port)) == reference


def test_i2s_words_become_int16_samples():
    """The microphone's 32-bit I2S words (24 bits left-justified) to int16 samples,
    as device/sensors.py converts them on the board: word >> shift, saturated."""
    rng = np.random.default_rng(2)
    words = np.concatenate([rng.integers(-2**31, 2**31, 200), [2**31 - 1, -2**31, 0, -1, 1 << 20, -(1 << 20)]])
    for shift in (16, 12, 8):
        want = np.clip(words >> shift, -32768, 32767)
        code = (f"import sensors, struct\nw = struct.pack('<{len(words)}i', *{words.tolist()})\n"
                f"out = bytearray({2 * len(words)})\nsensors.words_to_int16(w, out, {len(words)}, {shift})\n"
                f"print(list(struct.unpack('<{len(words)}h', out)))")
        proc = subprocess.run([unixport.binary(), "-c", code], capture_output=True, text=True, timeout=60,
                              env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})
        assert proc.returncode == 0, proc.stderr
        assert eval(proc.stdout) == want.tolist()
