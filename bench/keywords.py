"""Voice commands end to end, on voices training never heard.

The espeak-ng corpus (edge_agent/keywords.py; its test split is voice variants
never used for training) through the mel front-end, a numpy-trained LSTM, PTQ:
- accuracy on the 12 classes, float and int8 (the integer reference);
- streaming through the deployment's decision (replay semantics: windows of
  `--window` frames every `--hop`, or one continuous state, posterior smoothing
  and a refractory period; silence and unknown never published):
  false detections per hour on a long stretch of background noise and unknown
  speech from held-out voices, and keywords missed (or named wrongly) in a long
  recording of keywords between noise and other words;
- the model's size: blob bytes, arena + state RAM.

    python bench/keywords.py [--corpus DIR] [--per-class 400] [--hidden 64] [--epochs 40]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import blob, config, dataset, keywords  # noqa: E402
from edge_agent.learn.train import TrainConfig, train  # noqa: E402
from edge_agent.quant.frontend import quantize_with_frontend  # noqa: E402
from edge_agent.recording import Recording  # noqa: E402
from edge_agent.reference.inputs import quantize_raw  # noqa: E402
from edge_agent.reference.lstm import IntegerLSTM  # noqa: E402
from edge_agent.reference.frontend import int8_features  # noqa: E402
from edge_agent.reference.stream import decide, smooth_detections, stream_decisions  # noqa: E402
from edge_agent.replay import numpy_detections  # noqa: E402

QUIET = ("silence", "unknown")  # classes that are never published


def stream_settings(labels, args, continuous: bool) -> config.Settings:
    s = config.Settings(window=args.window, hop=args.hop if not continuous else args.hop,
                        continuous=continuous, smooth=args.smooth, refractory=args.refractory)
    s.thresholds = {"default": args.threshold, **{q: 1.0 for q in QUIET}}
    return s.check()


def as_recording(samples: np.ndarray) -> Recording:
    return Recording(samples.astype(np.float64)[:, None], np.arange(len(samples)) / keywords.RATE_HZ, None,
                     ["audio"], float(keywords.RATE_HZ))


def score_stream(dets, truth, tolerance=(-0.3, 1.3)):
    """Match each spoken keyword to the first detection of any label within
    [middle + tolerance]: hit (same label), wrong label, or missed; the rest are false."""
    used = set()
    hits = wrong = 0
    for t, word in truth:
        near = [i for i, d in enumerate(dets) if i not in used and t + tolerance[0] <= d["t"] <= t + tolerance[1]]
        if not near:
            continue
        used.add(near[0])
        if dets[near[0]]["label"] == word:
            hits += 1
        else:
            wrong += 1
    return hits, wrong, len(truth) - hits - wrong, len(dets) - len(used)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", help="an existing corpus folder (default: generate one)")
    ap.add_argument("--per-class", type=int, default=400)
    ap.add_argument("--test-per-class", type=int, default=80)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--window", type=int, default=49, help="frames per decision window (1 s)")
    ap.add_argument("--hop", type=int, default=10, help="frames between decisions (10: 5 staggered "
                    "windows, under half an RP2040 core with H=64: bench/frontend.py)")
    ap.add_argument("--smooth", type=int, default=3)
    ap.add_argument("--refractory", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--noise-minutes", type=float, default=30.0)
    ap.add_argument("--keyword-minutes", type=float, default=10.0)
    ap.add_argument("--model", help="save the float model here (.npz)")
    ap.add_argument("--blob", help="save the blob here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "kw"
        if not args.corpus:
            t0 = time.time()
            keywords.make_corpus(corpus, args.per_class, args.test_per_class, seed=0)
            print(f"corpus_seconds: {time.time() - t0:.0f}")
        settings = config.Settings()
        data = dataset.load(corpus, frontend=dataset.frontend_for(settings, True))
    print(f"train_clips: {len(data.train.y)}")
    print(f"test_clips_held_out_voices: {len(data.test.y)}")
    t0 = time.time()
    fm, _ = train(data.train.x, data.train.y, None,
                  TrainConfig(hidden=args.hidden, layers=args.layers, epochs=args.epochs), data.class_names)
    print(f"train_seconds: {time.time() - t0:.0f}")
    rng = np.random.default_rng(0)
    calib = data.train.x[rng.permutation(len(data.train.x))[:1000]]
    qm = quantize_with_frontend(fm, calib, data.frontend)
    if args.model:
        fm.save_npz(args.model)
    if args.blob:
        blob.write(qm, args.blob)
    float_pred = fm.forward(data.test.x).argmax(1)
    x_q = quantize_raw(data.test.x.astype(np.int64), qm.inputs)
    int_pred, _ = decide(IntegerLSTM(qm).run(x_q), qm)
    fa, ia = float(np.mean(float_pred == data.test.y)), float(np.mean(int_pred == data.test.y))
    print(f"float_accuracy_12_classes: {fa:.4f}")
    print(f"int8_accuracy_12_classes: {ia:.4f}")
    print(f"int8_minus_float_pp: {100 * (ia - fa):+.2f}")
    print(f"float_int8_agreement: {float(np.mean(float_pred == int_pred)):.4f}")
    packed = blob.pack(qm)
    print(f"blob_bytes: {len(packed)}")

    t0 = time.time()
    noise, _ = keywords.make_recording(args.noise_minutes * 60, seed=101, keyword_share=0.0, keyword_every=2.5)
    speech, truth = keywords.make_recording(args.keyword_minutes * 60, seed=202, keyword_share=0.7)
    print(f"recordings_seconds: {time.time() - t0:.0f}")
    for mode, continuous in (("windows", False), ("continuous", True)):
        s = stream_settings(data.class_names, args, continuous)
        false = list(numpy_detections(as_recording(noise), qm, s))
        dets = list(numpy_detections(as_recording(speech), qm, s))
        hits, wrong, missed, extra = score_stream(dets, truth)
        tag = f"{mode}_w{args.window}_h{args.hop}" if not continuous else f"{mode}_h{args.hop}"
        print(f"{tag}_false_detections_per_hour_noise_and_unknown_speech: "
              f"{len(false) / (args.noise_minutes / 60):.2f}")
        print(f"{tag}_keywords_spoken: {len(truth)}")
        print(f"{tag}_keywords_detected: {hits}")
        print(f"{tag}_keywords_missed: {missed}")
        print(f"{tag}_keywords_wrong_label: {wrong}")
        print(f"{tag}_extra_detections_in_keyword_recording: {extra}")
    # the trade-off: the same decisions (windows mode) through other thresholds and smoothing
    names = data.class_names
    for hop in sorted({7, args.hop}):
        kn, sn, _ = decisions(qm, noise, args.window, hop)
        ks, ss, ts = decisions(qm, speech, args.window, hop)
        for thr in (0.8, 0.9, 0.95, 0.98):
            limits = [32768 if n in QUIET else int(round(thr * 32768)) for n in names]
            for n in (2, 3, 5):
                false = smooth_detections(kn, sn, limits, n, args.refractory)
                found = smooth_detections(ks, ss, limits, n, args.refractory)
                dets = [{"t": ts[i], "label": names[ks[i]]} for i, _ in found]
                hits, wrong, missed, _ = score_stream(dets, truth)
                tag = f"sweep_h{hop}_thr{thr}_smooth{n}"
                print(f"{tag}_false_per_hour: {len(false) / (args.noise_minutes / 60):.1f}")
                print(f"{tag}_missed_of_{len(truth)}: {missed}")
                print(f"{tag}_wrong_label: {wrong}")


def decisions(qm, samples, window: int, hop: int):
    """Class, Q0.15 score and time (s) of every windowed decision over a stream."""
    x_q, at = int8_features(qm, samples)
    points = stream_decisions(IntegerLSTM(qm), x_q, window, hop, False)
    classes, scores = decide(np.stack([logits for _, logits in points]), qm)
    return classes, scores, [at[t] / keywords.RATE_HZ for t, _ in points]


if __name__ == "__main__":
    main()
