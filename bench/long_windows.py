"""PTQ against float on long windows: agreement and accuracy drop by window
length, calibration and hidden-state width.

For each task and window length a float model (1 layer, H=32) is trained by
edge_agent.learn.train on windows of that length, then quantized with each
calibration (quant.calibrate.CANDIDATES: min/max, percentile, MSE, each alone
or with bias correction) and run by the integer reference (int8 h, what the
board runs); `auto` is what `edge-agent quantize` picks with no flags (chosen on
the training windows, scored here on the test windows). The 16-bit hidden
state is not in the reference or on the board: its rows are a float simulation
of the integer grids (train.FakeQuant: int8 inputs and weights, Q3.12 gates, the
tables, the int16 cell; h on 2**-15 instead of 2**-7), beside the same
simulation with int8 h so the two can be compared like for like (min/max).

Tasks: synthetic wrist-IMU activity (6 channels) and motor vibration (3
channels) at 100 to 2,000 steps, and from UCR (when sktime is installed: pip
install -e '.[bench]') ACSF1 (appliance power, 1 channel, 1,460 steps, 100
training windows; its first L steps) and ArrowHead (1 channel, 251 steps, 36
training windows, near chance for an LSTM: many near-ties). Prints one `name: value` line per figure.

    python bench/long_windows.py [--tasks activity vibration ACSF1] [--lengths 100 500 1000 2000]
                                 [--train-windows 500] [--test-windows 1000] [--epochs N]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import synthetic  # noqa: E402
from edge_agent.evaluate import int_logits  # noqa: E402
from edge_agent.learn import train as T  # noqa: E402
from edge_agent.quant.calibrate import CANDIDATES, quantize_calibrated  # noqa: E402
from edge_agent.quant.ptq import quantize  # noqa: E402


STEP_CAP = 2e7  # window-steps of training per model by default: 20 epochs of 500 windows x 2,000 steps


class WideState(T.FakeQuant):
    """The integer model's grids in float with h on 2**-(bits-1) (bits 8: as the board)."""

    def __init__(self, model, calib, bits: int, calibration: str = "minmax"):
        super().__init__(model, calib)
        self.qm = quantize(model, calib, calibration=calibration)  # this calibration's grids
        self.scale = self.qm.inputs.scale.astype(np.float64)
        self.zero = self.qm.inputs.zero.astype(np.float64)
        self.c_frac = [layer.c_frac for layer in self.qm.layers]
        self.top = 2.0 ** (bits - 1)

    def hidden(self, h):
        return np.clip(np.round(h * self.top), -self.top, self.top - 1) / self.top


def simulated_pred(model, hooks, x) -> np.ndarray:
    n, steps, _ = x.shape
    mask = np.ones((n, steps))
    _, logits, _ = T.loss_and_grads(model, T.params_of(model), x, np.zeros(n, int), mask,
                                    np.ones(model.n_classes), hooks, need_grads=False)
    return logits.argmax(1)


def synthetic_task(make):
    def load(L, n_train, n_test):
        return make(n_train, L, seed=1), make(n_test, L, seed=2)
    return load


def ucr(name):
    def load(L, n_train, n_test):
        sys.path.insert(0, str(ROOT / "bench"))
        from small_data import load_ucr

        ((x, y), (xt, yt)), _ = load_ucr(name)
        return (x[:n_train, :L], y[:n_train]), (xt[:n_test, :L], yt[:n_test])
    return load


TASKS = {"activity": synthetic_task(synthetic.make_windows), "vibration": synthetic_task(synthetic.make_vibration),
         "ACSF1": ucr("ACSF1"), "ArrowHead": ucr("ArrowHead")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--lengths", nargs="+", type=int, default=[100, 500, 1000, 2000])
    ap.add_argument("--train-windows", type=int, default=500)
    ap.add_argument("--test-windows", type=int, default=1000)
    ap.add_argument("--epochs", type=int, help="cap on the trainer's default epochs (default: as many as "
                    "STEP_CAP window-steps of training allow)")
    ap.add_argument("--no-sim", action="store_true", help="skip the simulated 8/16-bit rows")
    args = ap.parse_args()
    names = ("auto",) + CANDIDATES
    worst = {c: (1.0, 0.0) for c in names}
    for task in args.tasks:
        done = set()
        for L in args.lengths:
            try:
                (x, y), (xt, yt) = TASKS[task](L, args.train_windows, args.test_windows)
            except SystemExit as exc:  # sktime missing: say so and go on with the rest
                print(f"{task} skipped: {exc}")
                break
            L = x.shape[1]  # a real task's windows may be shorter: its full length then
            if L in done:
                continue
            done.add(L)
            start = time.perf_counter()
            cfg = T.TrainConfig(seed=1)
            cap = args.epochs or max(1, int(STEP_CAP // (len(x) * L)))
            cfg.epochs = min(T.resolve_epochs(cfg, len(x)), cap)
            model, _ = T.train(x, y, cfg=cfg)
            name = f"{task} L={L}"
            fpred = model.forward(xt).argmax(1)
            facc = float((fpred == yt).mean())
            print(f"{name} float accuracy: {facc:.4f} (train {time.perf_counter() - start:.0f} s, "
                  f"{len(x)} windows, {cfg.epochs} epochs, test {len(xt)})", flush=True)
            _, report = quantize_calibrated(model, x)
            for calibration in names:
                chosen = report["chosen"] if calibration == "auto" else calibration
                qm, _ = quantize_calibrated(model, x, calibration=chosen)
                ipred = int_logits(qm, xt).argmax(1)
                agree = float((ipred == fpred).mean())
                drop = 100 * (facc - float((ipred == yt).mean()))
                label = f"auto ({chosen})" if calibration == "auto" else calibration
                print(f"{name} {label} h8 agreement: {agree:.4f}")
                print(f"{name} {label} h8 accuracy drop pp: {drop:+.2f}")
                a, d = worst[calibration]
                worst[calibration] = (min(a, agree), max(d, drop))
            if args.no_sim:
                continue
            for bits in (8, 16):
                spred = simulated_pred(model, WideState(model, x, bits), xt)
                print(f"{name} minmax h{bits} simulated agreement: {(spred == fpred).mean():.4f}")
                print(f"{name} minmax h{bits} simulated accuracy drop pp: "
                      f"{100 * (facc - float((spred == yt).mean())):+.2f}", flush=True)
    for calibration, (agree, drop) in worst.items():
        print(f"worst {calibration} h8 agreement: {agree:.4f}")
        print(f"worst {calibration} h8 accuracy drop pp: {drop:+.2f}")
        print(f"goal met by {calibration} h8: {'yes' if agree >= 0.99 and drop <= 0.5 else 'no'}")


if __name__ == "__main__":
    main()
