"""numpy training beside PyTorch trained the same way, and PTQ beside QAT.

For three synthetic tasks (wrist-IMU activity, motor vibration anomaly, keyword
features), the same data, split, model size, epochs and recipe (Adam 1e-2
decaying exponentially to 1/64 of it, clip 1.0, batch 32, class weights, a 10%
validation split with the best validation weights restored) in
edge_agent.learn.train (float32, its C time loop) and in PyTorch; then the numpy model quantized by
PTQ, and fine-tuned by QAT then quantized. PyTorch starts from the numpy run's
initial weights and sees the same batches in the same order. In float64 the two
stay in lockstep (printed first); in float32 rounding differences grow over the
epochs (training is chaotic), so several seeds show the spread. Also prints training time for the
1-layer H=32 model on 1,000 windows of 100 x 6 for 20 epochs, numpy vs PyTorch, one
thread each (BLAS included), run one after the other in one process.

    python bench/train_parity.py [--epochs 60] [--qat-epochs 5] [--seeds 3] [--tasks activity vibration keywords]
    python bench/train_parity.py --tasks      # the training time alone
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread on both sides (BLAS included)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import synthetic  # noqa: E402
from edge_agent.learn.torchnet import from_model  # noqa: E402
from edge_agent.learn import train as T  # noqa: E402
from edge_agent.learn.model import valid_steps  # noqa: E402
from edge_agent.evaluate import int_logits  # noqa: E402
from edge_agent.quant import quantize  # noqa: E402


def torch_fit(x, y, init: T.FloatModel, train_idx, val_idx, orders, cfg: T.TrainConfig, n_cls, mean, std):
    net = from_model(init)  # the same initial weights and the same batches as edge_agent.train
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y)
    counts = np.bincount(y[train_idx], minlength=n_cls)
    w = torch.tensor(len(train_idx) / (n_cls * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    best = (math.inf, None)
    for epoch in range(cfg.epochs):
        for g in opt.param_groups:
            g["lr"] = T.learning_rate(cfg.lr, epoch, cfg.epochs)
        for b in torch.tensor(orders[epoch]).split(cfg.batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b], weight=w)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
        with torch.no_grad():
            v = float(torch.nn.functional.cross_entropy(net(xt[val_idx]), yt[val_idx], weight=w))
        if v < best[0]:
            best = (v, copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[1])
    return net


def run_task(name, x, y, xt, yt, labels, cfg, qat_epochs):
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    model, _ = T.train(x, y, cfg=cfg, class_names=labels)
    ours_s = time.perf_counter() - start
    # PyTorch from the same start: replay train()'s random draws (init, split, batch orders)
    rng = np.random.default_rng(cfg.seed)
    init = T.init_model(x.shape[2], cfg.hidden, cfg.layers, len(labels), rng, cfg.forget_bias)
    train_idx, val_idx = T._split(y, cfg.val_fraction, rng)
    orders = [train_idx[rng.permutation(len(train_idx))] for _ in range(cfg.epochs)]
    start = time.perf_counter()
    net = torch_fit(x, y, init, train_idx, val_idx, orders, cfg, len(labels), model.mean, model.std)
    torch_s = time.perf_counter() - start
    with torch.no_grad():
        torch_acc = float((net(torch.tensor((xt - model.mean) / model.std, dtype=torch.float32))
                           .argmax(1).numpy() == yt).mean())
    float_acc = float((model.forward(xt).argmax(1) == yt).mean())
    calib = x[:512]
    ptq_acc = float((int_logits(quantize(model, calib), xt).argmax(1) == yt).mean())
    qat_model = copy.deepcopy(model)
    qcfg = copy.copy(cfg)
    qcfg.patience = qat_epochs
    qcfg.qat_epochs = qat_epochs
    T.qat_fit(qat_model, x.astype(np.float64), y, None, qcfg, np.random.default_rng(cfg.seed + 1), calib)
    qat_float = float((qat_model.forward(xt).argmax(1) == yt).mean())
    qat_acc = float((int_logits(quantize(qat_model, calib), xt).argmax(1) == yt).mean())
    print(f"{name:<10} seed {cfg.seed}: float {float_acc:.4f} | PyTorch {torch_acc:.4f} | int8 PTQ {ptq_acc:.4f} | "
          f"int8 QAT {qat_acc:.4f} (QAT's float {qat_float:.4f}) | train {ours_s:.1f} s vs {torch_s:.1f} s",
          flush=True)
    return {"float": float_acc, "torch": torch_acc, "ptq": ptq_acc, "qat": qat_acc, "qat_float": qat_float,
            "ours_s": ours_s, "torch_s": torch_s}


def lockstep(x, y, epochs: int = 3) -> None:
    """The same start, batches and recipe in float64 PyTorch: the weights agree."""
    cfg = T.TrainConfig(hidden=32, layers=1, epochs=epochs, seed=0, val_fraction=0.1)
    x = x.astype(np.float64)
    rng = np.random.default_rng(0)
    model = T.init_model(x.shape[2], 32, 1, int(y.max()) + 1, rng)
    train_idx, _ = T._split(y, cfg.val_fraction, rng)
    flat = x.reshape(-1, x.shape[2])
    model.mean, model.std = flat.mean(0), flat.std(0)
    net = from_model(model).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in T.params_of(model).items()})  # float64, not via float32
    params, opt = T.params_of(model), T.Adam(T.params_of(model), cfg.lr)
    topt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    mask, w = valid_steps(len(x), x.shape[1], None).astype(np.float64), np.ones(int(y.max()) + 1)
    xt, yt = torch.tensor((x - model.mean) / model.std), torch.tensor(y)
    diffs = []
    for epoch in range(epochs):
        order = train_idx[rng.permutation(len(train_idx))]
        for start in range(0, len(order), cfg.batch):
            b = order[start:start + cfg.batch]
            _, _, g = T.loss_and_grads(model, params, x[b], y[b], mask[b], w)
            T.clip_global(g, cfg.clip)
            opt.step(params, g)
            topt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            topt.step()
        state = net.state_dict()
        diffs.append(max(float(np.abs(params[k] - state[k].numpy()).max()) for k in params))
    print("lockstep, float64 PyTorch from the same start and batches: max |weight difference| after "
          + ", ".join(f"epoch {i + 1}: {d:.1e}" for i, d in enumerate(diffs)), flush=True)


TASKS = {
    "activity": (lambda seed: synthetic.make_windows(1000, 100, seed=seed), synthetic.CLASSES),
    "vibration": (lambda seed: synthetic.make_vibration(1000, 128, seed=seed), synthetic.VIBRATION_CLASSES),
    "keywords": (lambda seed: synthetic.make_keywords(1000, 49, seed=seed), synthetic.KEYWORD_CLASSES),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--qat-epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--timing-batch", type=int, default=32, help="batch size of the timing run")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), help="none: the timing alone")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.tasks:
        lockstep(*TASKS["activity"][0](100))
    print(f"1-layer H=32, {args.epochs} epochs, same recipe in both, {args.seeds} seeds; "
          f"test accuracy on 1,000 held-out windows; torch threads 1")
    for name in args.tasks:
        make, labels = TASKS[name]
        (x, y), (xt, yt) = make(100), make(200)
        runs = [run_task(name, x, y, xt, yt, labels, T.TrainConfig(hidden=32, layers=1, epochs=args.epochs,
                                                                   patience=args.epochs, seed=seed,
                                                                   val_fraction=0.1, refit=False),
                         args.qat_epochs) for seed in range(args.seeds)]
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(f"{name:<10} mean:   float {mean['float']:.4f} | PyTorch {mean['torch']:.4f} | "
              f"int8 PTQ {mean['ptq']:.4f} | int8 QAT {mean['qat']:.4f} | "
              f"QAT - PTQ {100 * (mean['qat'] - mean['ptq']):+.2f} pp, float - QAT {100 * (mean['float'] - mean['qat']):+.2f} pp",
              flush=True)
    (x, y), (xt, yt) = TASKS["activity"][0](100), TASKS["activity"][0](200)
    cfg = T.TrainConfig(hidden=32, layers=1, epochs=20, patience=20, seed=0, val_fraction=0.1, refit=False,
                        batch=args.timing_batch)
    timing = run_task("timing", x, y, xt, yt, synthetic.CLASSES, cfg, 1)
    print(f"timing model: 1-layer H=32, 1,000 windows x 100 steps x 6 channels, 20 epochs, batch {cfg.batch}")
    print(f"training seconds numpy: {timing['ours_s']:.2f}")
    print(f"training seconds PyTorch: {timing['torch_s']:.2f}")
    print(f"training time ratio numpy / PyTorch: {timing['ours_s'] / timing['torch_s']:.2f}")


if __name__ == "__main__":
    main()
