"""Anomaly detection on the synthetic rotating machine, and the supervised fault
classifier, both behind the integer spectral front-end (3-axis accelerometer,
1600 Hz, 20 log bands every 128 samples).

Anomaly: an LSTM next-frame predictor trained on normal running only (faults
unseen in training, all four types), quantized, its threshold calibrated on
held-back normal data; then scored by the integer reference (= the board) on
test recordings with fault episodes, and on hours of normal running for the
false-alarm rate. The same library calls as `edge-agent train --task anomaly`,
`quantize` and `evaluate`.

    python bench/anomaly.py [--normal-hours 10] [--test-recordings 6] [--skip-classifier]

Prints one `name: value` per line.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_agent import config
from edge_agent.evaluate import anomaly_recordings, evaluate_anomaly, int_anomaly_scores
from edge_agent.learn import anomaly as la
from edge_agent.quant.anomaly import quantize_from_data
from edge_agent.reference import anomaly as ref
from edge_agent.synthetic import COUNTS_PER_G, MACHINE_FAULTS, machine_recording, write_machine_dataset


def say(name: str, value) -> None:
    print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}", flush=True)


def anomaly(folder: Path, settings, args) -> None:
    t0 = time.time()
    fm, meta, frontend, report = la.train_from_data(folder / "train", settings, args.hidden, 1, None, args.seed)
    per_step = 1 / 1600 if frontend is None else frontend.hop / frontend.rate_hz
    say("anomaly_train_normal_minutes", report["steps"] * per_step / 60)
    say("anomaly_steps_per_second", 1 / per_step)
    say("anomaly_train_seconds", time.time() - t0)
    qm = quantize_from_data(fm, meta, frontend, folder / "train", settings)
    say("anomaly_threshold", qm.anomaly.threshold)
    recs = anomaly_recordings(folder / "test", settings.sensor.rate_hz)
    summary, dump = evaluate_anomaly(fm, qm, recs)
    say("anomaly_float_roc_auc", summary["float_roc_auc"])
    say("anomaly_int8_roc_auc", summary["int8_roc_auc"])
    say("anomaly_roc_auc_int8_minus_float", summary["int8_roc_auc"] - summary["float_roc_auc"])
    say("anomaly_fault_episodes", summary["episodes"])
    say("anomaly_recall_at_threshold", summary["recall"])
    say("anomaly_precision_at_threshold", summary["precision"])
    say("anomaly_median_delay_s", summary["median_delay_s"])
    # per fault type: which episodes were caught
    for name in MACHINE_FAULTS:
        hit = total = 0
        for f, (x, _, _) in zip(sorted((folder / "test").glob("*.npz")), recs):  # anomaly_recordings sorts too
            with np.load(f) as z:
                fault, faults = z["fault"], [str(s) for s in z["faults"]]
            frames, at = la.sensor_frames(x, qm.frontend)
            score = int_anomaly_scores(qm, frames)
            active = np.zeros(len(score), bool)
            for ev in ref.events(score, qm.anomaly.threshold):
                active[ev.onset:len(score) if ev.end is None else ev.end] = True
            kind = fault[at]
            code = faults.index(name)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], (kind == code).astype(np.int8), [0]])))
            for a, b in zip(edges[::2], edges[1::2]):
                total += 1
                hit += bool(active[a:b].any())
        say(f"anomaly_recall_{name}", hit / total if total else float("nan"))
    # hours of normal running (new runs of the same machine): the false-alarm rate
    alarms, hours = 0, 0.0
    chunk_minutes = 30
    for k in tqdm(range(int(round(args.normal_hours * 60 / chunk_minutes))), desc="normal hours", leave=False):
        x, _ = machine_recording(chunk_minutes * 60, seed=1000 + k)
        frames, _ = la.sensor_frames(np.round(x * COUNTS_PER_G), qm.frontend)
        score = int_anomaly_scores(qm, frames)
        alarms += len(ref.events(score, qm.anomaly.threshold))
        hours += chunk_minutes / 60
    say("anomaly_normal_hours", hours)
    say("anomaly_false_alarms", alarms)
    say("anomaly_false_alarms_per_hour", alarms / hours)
    if args.plot:
        from edge_agent.plot import anomaly_png

        anomaly_png(args.plot, dump)


def classifier(folder: Path, args) -> None:
    """The supervised fault classifier (normal, imbalance, misalignment, bearing)
    on 1.5 s windows through the same front-end."""
    from edge_agent.dataset import load
    from edge_agent.learn.train import TrainConfig, train
    from edge_agent.quant.frontend import quantize_with_frontend
    from edge_agent.reference.inputs import model_inputs
    from edge_agent.reference.lstm import IntegerLSTM

    data = load(folder / "faults.npz", frontend=la.choose_frontend("auto", 1600))  # windows as frames
    xtr, xte = data.train.x, data.test.x
    say("classifier_train_windows", len(xtr))
    say("classifier_test_windows", len(xte))
    say("classifier_frames_per_window", xtr.shape[1])
    fm, _ = train(xtr, data.train.y, None, TrainConfig(hidden=args.hidden, seed=args.seed), data.class_names)
    say("classifier_float_accuracy", float(np.mean(fm.forward(xte).argmax(1) == data.test.y)))
    qm = quantize_with_frontend(fm, xtr[:500], data.frontend)
    logits = IntegerLSTM(qm).run(model_inputs(qm, xte))
    say("classifier_int8_accuracy", float(np.mean(logits.argmax(1) == data.test.y)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--normal-hours", type=float, default=10.0)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", type=int, default=500, help="classifier windows per class (train)")
    p.add_argument("--test-recordings", type=int, default=6, help="test recordings with fault episodes")
    p.add_argument("--test-minutes", type=float, default=20.0, help="minutes per test recording")
    p.add_argument("--skip-classifier", action="store_true")
    p.add_argument("--data", help="an `edge-agent dataset vibration` folder (default: made here)")
    p.add_argument("--frontend", default="auto", choices=["auto", "none"],
                   help="none: the anomaly model on raw samples, one LSTM step per sample (1600 a second)")
    p.add_argument("--smoothing", type=int, default=0, help="the score's moving-average span (0: one window)")
    p.add_argument("--plot", help="the score over the test recordings (PNG)")
    args = p.parse_args()
    settings = config.Settings()
    settings.frontend.kind = args.frontend
    settings.anomaly.smoothing = args.smoothing
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        if not args.data:
            write_machine_dataset(folder, 4 * args.per_class, args.per_class, args.seed,
                                  test_minutes=args.test_minutes, test_recordings=args.test_recordings)
        anomaly(folder, settings, args)
        if not args.skip_classifier:
            classifier(folder, args)


if __name__ == "__main__":
    main()
