"""Voice commands end to end: the espeak-ng corpus (Speech Commands layout, held-out
voices), WAV data through the front-end into train / quantize / evaluate as written,
and a long WAV replayed with identical detections on the numpy, micropython and board
backends (continuous decisions, posterior smoothing, refractory period)."""
import json
import re
import subprocess
from pathlib import Path
import wave

import numpy as np
import pytest

from edge_agent import blob, config, dataset, keywords, recording
from edge_agent.board import link, unixport
from edge_agent.board.flash import flash
from edge_agent.board.virtual import VirtualBoard
from edge_agent.learn import model as fmodel
from edge_agent.learn.train import AUDIO_RECIPE, TrainConfig, train
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
    # training: 11 classes x 3, plus 3x3 whole other words and 3x3 cut words as `unknown`
    assert counts == {"clips": 75, "test": 12, "validation": 12, "classes": 12}
    assert keywords.corpus_size(3, 1) == 75
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(keywords.CLASSES)
    listed = (out / "testing_list.txt").read_text().split()
    validation = (out / "validation_list.txt").read_text().split()
    assert len(listed) == len(validation) == 12 and not set(listed) & set(validation)
    assert not set(keywords.TEST_VARIANTS) & set(keywords.VAL_VARIANTS)
    assert not (set(keywords.TEST_VARIANTS) | set(keywords.VAL_VARIANTS)) & set(keywords.TRAIN_VARIANTS)
    made = 0
    for label in keywords.CLASSES:
        clips = sorted((out / label).glob("*.wav"))
        assert len(clips) == (20 if label == "unknown" else 5)
        for clip in clips:
            with wave.open(str(clip)) as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
            speaker = clip.name.split("_nohash_")[0]
            variant = speaker.split("-")[-1]
            name = f"{label}/{clip.name}"
            if name in listed:
                assert variant in keywords.TEST_VARIANTS, clip
            elif name in validation:
                assert variant in keywords.VAL_VARIANTS, clip
            else:  # a training variant, or a voice made from them (random_voices)
                assert variant in keywords.TRAIN_VARIANTS or re.fullmatch(r"rv\d{4}", variant), clip
                made += variant.startswith("rv")
    assert made >= 10  # about half the training clips
    # speech is there: a keyword clip is louder than its quietest stretch
    x, _ = recording.read_wav(sorted((out / "yes").glob("*.wav"))[0], 16000)
    frames = np.abs(x.astype(float)).reshape(50, -1).mean(axis=1)
    assert frames.max() > 4 * frames.min() + 1


def test_made_voices_are_read_by_espeak_and_differ(tmp_path):
    """random_voices writes variants espeak-ng really reads (--path): each speaks
    unlike the stock voice, the same seed makes the same voices, and the vocal
    tract moves every formant of a variant the same way (give or take 6%)."""
    n = keywords.VOICES_PER_FOLDER + 2  # espeak-ng lists at most 349 voices in one data folder
    made = keywords.random_voices(tmp_path / "a", n, seed=4)
    again = keywords.random_voices(tmp_path / "b", n, seed=4)
    assert len({sp.data for sp in made}) == 2 and "en-gb" not in {sp.accent for sp in made}  # no variants there
    variant_file = lambda sp: Path(sp.data) / "espeak-ng-data" / "voices" / "!v" / sp.variant
    for sp, sp2 in zip(made, again):
        assert variant_file(sp).read_text() == variant_file(sp2).read_text()
    for sp in made[:2] + made[-1:]:  # the first folder's and the second's
        word = keywords.synthesize("left", sp, 160, 50)
        stock = keywords.synthesize("left", keywords.Speaker(sp.accent, "m1"), 160, 50)
        plain = keywords.synthesize("left", keywords.Speaker(sp.accent, sp.variant), 160, 50)  # no --path
        assert len(word) > 2000 and np.abs(word).max() > 0.05
        for other in (stock, plain):
            assert len(other) != len(word) or not np.allclose(other, word)
    base = "language variant\nname x\npitch 80 120\nformant 1 100 100 100\nformant 2 120 90 100\nklatt 3\n"
    for seed in range(20):
        text = keywords.perturb_variant(base, np.random.default_rng(seed))
        f = {int(ln.split()[1]): int(ln.split()[2]) for ln in text.splitlines() if ln.startswith("formant")}
        assert set(f) == {1, 2, 3, 4, 5} and "klatt 3" in text
        ratio = np.array([f[1] / 100, f[2] / 120, f[3] / 100])
        assert np.all((0.88 * 0.94 - 0.02 <= ratio) & (ratio <= 1.15 * 1.06 + 0.02))
        assert ratio.max() / ratio.min() <= 1.06 / 0.94 + 0.03
    # a crossover takes each voice-quality setting of the other variant half of the time
    took = [("voicing 30" in keywords.perturb_variant(base, np.random.default_rng(seed), "voicing 30\npitch 1 2\n"))
            for seed in range(40)]
    assert 8 <= sum(took) <= 32


def test_recording_speaks_with_made_voices(tmp_path, monkeypatch):
    """make_recording(made=...) gives about half its words to the made voices
    (with accents espeak-ng applies a variant to), the rest to the stock
    variants; without made voices only stock variants speak. The spy records
    who is asked to speak and passes every word on to the real espeak-ng."""
    made = keywords.random_voices(tmp_path, 4, seed=9, bases=keywords.VAL_VARIANTS)
    spoken = []
    real = keywords.synthesize

    def spy(word, speaker, rate, pitch):
        spoken.append(speaker)
        return real(word, speaker, rate, pitch)

    monkeypatch.setattr(keywords, "synthesize", spy)
    samples, truth = keywords.make_recording(40, seed=2, variants=keywords.VAL_VARIANTS, keyword_every=1.0,
                                             made=made)
    words = spoken[12:]  # after the babble's 12 words (stock variants)
    by_made = [sp for sp in words if sp.data is not None]
    assert {sp.variant for sp in by_made} <= {sp.variant for sp in made} and len({sp.variant for sp in by_made}) >= 3
    assert {sp.data for sp in by_made} == {made[0].data} and "en-gb" not in {sp.accent for sp in by_made}
    assert 0.3 * len(words) <= len(by_made) <= 0.7 * len(words)
    assert {sp.variant for sp in words if sp.data is None} <= set(keywords.VAL_VARIANTS)
    assert len(truth) >= 10 and samples.dtype == np.int16 and np.abs(samples).max() > 3000
    spoken.clear()
    keywords.make_recording(10, seed=2, variants=keywords.VAL_VARIANTS, keyword_every=1.0)
    assert spoken and all(sp.data is None and sp.variant in keywords.VAL_VARIANTS for sp in spoken)


def test_training_clips_are_cut_like_stream_windows():
    """A cut word is a piece (10 to 60%) at an edge of the clip; a whole word is
    whole, and a neighbour's piece sits at an edge, apart from it."""
    word = 0.5 + np.hanning(8000)  # a half-second 'word', never zero inside
    other = np.full(6000, 0.7)
    placed = 0
    for seed in range(40):
        speech, w = keywords._train_speech(np.random.default_rng(seed), word, True, None)
        sound = np.flatnonzero(speech)
        assert sound[0] == 0 or sound[-1] == keywords.CLIP - 1  # at an edge
        assert 0.1 * len(word) - 1 <= len(sound) == len(w) <= 0.6 * len(word)
        speech, w = keywords._train_speech(np.random.default_rng(seed), word, False, other)
        peak = np.abs(w).max()
        whole = np.flatnonzero(np.isin(speech, w))
        assert len(w) == len(word) and np.array_equal(speech[whole[0]:whole[0] + len(w)], w)
        rest = np.flatnonzero(speech)
        rest = rest[(rest < whole[0]) | (rest >= whole[0] + len(w))]
        if len(rest):  # the neighbour's piece: at an edge, 50 ms or more from the word
            placed += 1
            assert rest[0] == 0 or rest[-1] == keywords.CLIP - 1
            assert min(abs(rest - whole[0]).min(), abs(rest - (whole[0] + len(w) - 1)).min()) >= 0.05 * 16000
            assert np.all(speech[rest] <= 1.2 * peak + 1e-9)
    assert placed >= 20
    clip = keywords._train_clip(np.random.default_rng(0), word, None, True, None)
    assert clip.dtype == np.int16 and len(clip) == keywords.CLIP


def test_training_draws_hard_unknown_words_more_often():
    """Whole `unknown` training words: each of HARD_UNKNOWN about HARD_TIMES as
    often as any other word; the held-out splits draw every word alike."""
    from collections import Counter

    speakers = [keywords.Speaker("en-us", "m1")]
    whole = Counter(j[1] for j in keywords._train_jobs(400, speakers, 1, 3, 0) if j[0] == "unknown")
    hard = np.mean([whole[w] for w in keywords.HARD_UNKNOWN])
    rest = np.mean([whole[w] for w in keywords.UNKNOWN_WORDS if w not in keywords.HARD_UNKNOWN])
    assert set(whole) == set(keywords.UNKNOWN_WORDS) and sum(whole.values()) == 1200
    assert 0.75 * keywords.HARD_TIMES <= hard / rest <= 1.3 * keywords.HARD_TIMES
    held_out = Counter(j[1] for j in keywords._jobs(400, keywords.TEST_VARIANTS, 1) if j[0] == "unknown")
    hard = np.mean([held_out[w] for w in keywords.HARD_UNKNOWN])
    rest = np.mean([held_out[w] for w in keywords.UNKNOWN_WORDS if w not in keywords.HARD_UNKNOWN])
    assert 0.6 <= hard / rest <= 1.5


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
    assert data.train.x.shape == (51, 49, 32) and data.test.x.shape == (12, 49, 32)
    assert data.val.x.shape == (12, 49, 32)  # validation_list.txt: never trained on
    assert data.class_names == sorted(keywords.CLASSES) and data.frontend is fe
    # a bad clip is skipped and named, the rest loads
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF....WAVEjunk")
    recording.write_wav(copy / "no" / "fast_nohash_0.wav", np.zeros(100, np.int16), 22050)
    data = dataset.load(copy, frontend=fe)
    assert len(data.skipped) == 2 and len(data.train.y) + len(data.test.y) + len(data.val.y) == 75
    # config.yaml overrides the default front-end
    settings.frontend.kind = "linear"
    settings.frontend.bands = 16
    assert dataset.frontend_for(settings, True).kind == "linear"
    settings.frontend.kind = "none"
    with pytest.raises(Exception, match="front-end"):
        dataset.load(out, frontend=dataset.frontend_for(settings, True))


def test_feature_cache_follows_the_clips(corpus, tmp_path):
    """cache=True keeps the features beside the clips and reads them back while
    nothing changed; a changed clip, a changed front-end or a damaged cache file
    means reading the clips again."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out := corpus[0], copy)
    fe = dataset.frontend_for(config.Settings(), True)
    first = dataset.load(copy, frontend=fe, cache=True)
    files = list((copy / dataset.CACHE_DIR).iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # written atomically: no temp file left
    stamp = files[0].stat().st_mtime_ns
    again = dataset.load(copy, frontend=fe, cache=True)
    assert files[0].stat().st_mtime_ns == stamp and again.frontend is fe  # read, not rewritten
    for name in ("train", "test", "val"):
        a, b = getattr(first, name), getattr(again, name)
        assert np.array_equal(a.x, b.x) and a.x.dtype == b.x.dtype == np.float32 and np.array_equal(a.y, b.y)
    assert np.array_equal(first.train.x, dataset.load(out, frontend=fe).train.x)  # as without a cache
    # a clip changes: its features change, and the one cache file is the new one
    clip = sorted((copy / "yes").glob("*.wav"))[0]
    recording.write_wav(clip, np.zeros(16000, np.int16), 16000)
    changed = dataset.load(copy, frontend=fe, cache=True)
    assert not np.array_equal(changed.train.x, first.train.x) or not np.array_equal(changed.test.x, first.test.x) \
        or not np.array_equal(changed.val.x, first.val.x)
    files = list((copy / dataset.CACHE_DIR).iterdir())
    assert len(files) == 1 and files[0].stat().st_mtime_ns != stamp
    # another front-end: other features
    linear = dataset.frontend_for(config.Settings(), True)
    linear.kind = "linear"
    linear = linear.build()
    assert not np.array_equal(dataset.load(copy, frontend=linear, cache=True).train.x, changed.train.x)
    # a damaged cache: the clips are read again
    for f in (copy / dataset.CACHE_DIR).iterdir():
        f.write_bytes(b"PK\x03\x04 not a zip")
    assert np.array_equal(dataset.load(copy, frontend=linear, cache=True).train.x,
                          dataset.load(copy, frontend=linear).train.x)


def test_audio_training_recipe():
    """Label smoothing's gradient is its loss's (finite differences); SpecAugment
    masks stay inside the window and fill with the channel means; the tilt is a
    line across the channels."""
    from edge_agent.learn import train as T

    rng = np.random.default_rng(1)
    model = T.init_model(4, 5, 1, 3, rng)
    x = rng.normal(size=(6, 7, 4))
    y = np.array([0, 1, 2, 2, 1, 0])
    mask = fmodel.valid_steps(6, 7, None).astype(float)
    params = T.params_of(model)
    loss, _, grads = T.loss_and_grads(model, params, x, y, mask, np.ones(3), smoothing=0.2)
    plain, _, _ = T.loss_and_grads(model, params, x, y, mask, np.ones(3))
    assert loss != plain
    for k in ("head.bias", "lstm.bias_ih_l0"):
        for i in (0, 2):
            bumped = {n: v.copy() for n, v in params.items()}
            bumped[k][i] += 1e-6
            up, _, _ = T.loss_and_grads(model, bumped, x, y, mask, np.ones(3), smoothing=0.2)
            assert (up - loss) / 1e-6 == pytest.approx(grads[k][i], rel=1e-3, abs=1e-7)
    cfg = T.TrainConfig(time_mask=3, channel_mask=2)
    fill = np.arange(4.0) + 100
    out = T.spec_augment(x, fill, cfg, np.random.default_rng(0))
    changed = out != x
    assert changed.any() and np.all(out[changed] == np.broadcast_to(fill, x.shape)[changed])
    for i in range(len(x)):
        steps = np.flatnonzero(changed[i].all(axis=1))
        assert len(steps) <= 3 and (len(steps) == 0 or np.ptp(steps) == len(steps) - 1)
    tilted = T.spec_augment(x, fill, T.TrainConfig(tilt=50.0), np.random.default_rng(0)) - x
    for i in range(len(x)):
        line = tilted[i, 0]
        assert np.allclose(tilted[i], line) and np.allclose(np.diff(line), np.diff(line)[0])
        assert abs(line[0]) <= 50 + 1e-9 and line[0] == pytest.approx(-line[-1])


def test_cli_as_written(corpus, tmp_path):
    """dataset keywords, train --data D, quantize --calib D, evaluate --data OTHER (a few
    epochs and a small model only to keep the test short)."""
    out, _ = corpus
    other = tmp_path / "other"
    res = run_cli("dataset", "keywords", "--out", other, "--per-class", "1", "--test-per-class", "1", "--seed", "9")
    assert res.returncode == 0, res.stderr
    assert "12 from held-out voices in testing_list.txt, 12 from other held-out voices" in res.stdout
    m, b = tmp_path / "m.npz", tmp_path / "m.bin"
    res = run_cli("train", "--data", out, "--out", m, "--epochs", "2", "--hidden", "8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # no --hidden: WAV clips take the audio recipe's (a single epoch keeps the test short)
    res = run_cli("train", "--data", out, "--out", tmp_path / "r.npz", "--epochs", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert fmodel.load_model(tmp_path / "r.npz").hidden == AUDIO_RECIPE["hidden"]
    recipe_line = next(line for line in res.stdout.splitlines() if "audio recipe" in line)
    assert f"--hidden {AUDIO_RECIPE['hidden']}" in recipe_line and "--epochs" not in recipe_line  # given
    assert f"--weight-decay {AUDIO_RECIPE['weight_decay']:g}" in recipe_line and "--no-class-weights" in recipe_line
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
        for cut in (0, 1, n - 1, 37):  # causal: a stream's first decisions decide alike on their own
            assert smooth_detections(classes[:cut], scores[:cut], thresholds, n, refractory) == \
                [d for d in want if d[0] < cut]
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
