"""The numpy trainer with its defaults beside PyTorch on small real data sets.

Public UCR/UEA data sets shipped inside sktime's wheel (pip install -e '.[bench]';
nothing is downloaded), each with at most 100 training windows, their own test
split:

- BasicMotions: wrist IMU (accelerometer + gyroscope), 40 training windows, 4
  classes, 6 channels x 100 steps;
- ItalyPowerDemand: daily power demand, 67 windows, 2 classes, 1 x 24;
- GunPoint: hand position (video), 50 windows, 2 classes, 1 x 150.

numpy: `edge_agent.learn.train.train` with its defaults, as `edge-agent train`
runs it with no flags (H=32, 1 layer). PyTorch: nn.LSTM(H=32) + Linear on the
last step, its usual recipe for such data: Adam lr 1e-2 decaying
exponentially with a 100-epoch half-life, 600 epochs, batch 32, gradient clip
1.0, inputs standardised per channel, every training window, no early stopping.
Same seeds (1, 2, 3) on both sides, one thread each. Prints one `name: value`
line per figure; test accuracy as mean ± sd over the seeds, and the worst seed
against PyTorch's mean (goal: within 2 pp on the mean, no seed 5 pp below).

    python bench/small_data.py [--seeds 3] [--sets BasicMotions ItalyPowerDemand GunPoint]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread on both sides (BLAS included)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.learn import train as T  # noqa: E402

SETS = ("BasicMotions", "ItalyPowerDemand", "GunPoint")


def load_ucr(name: str):
    """(x [n, T, C] float32, y int) for the train and test splits, labels sorted."""
    try:
        from sktime.datasets import load_UCR_UEA_dataset
    except ImportError:
        sys.exit("bench/small_data.py needs sktime's bundled data sets: pip install -e '.[bench]'")
    splits = []
    for split in ("train", "test"):
        x, y = load_UCR_UEA_dataset(name, split=split, return_type="numpy3D")
        splits.append((np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32), np.asarray(y)))
    classes = sorted(set(splits[0][1]))
    code = {c: i for i, c in enumerate(classes)}
    return [(x, np.array([code[v] for v in y])) for x, y in splits], classes


def torch_recipe(x, y, xt, yt, seed: int, epochs: int = 600, lr: float = 1e-2, half_life: float = 100,
                 batch: int = 32, hidden: int = 32) -> float:
    import torch

    torch.manual_seed(seed)
    flat = x.reshape(-1, x.shape[2])
    mean, std = flat.mean(0), np.maximum(flat.std(0), 1e-6)
    lstm = torch.nn.LSTM(x.shape[2], hidden, batch_first=True)
    head = torch.nn.Linear(hidden, int(y.max()) + 1)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5 ** (1 / half_life))
    X, Y = torch.tensor((x - mean) / std, dtype=torch.float32), torch.tensor(y)
    for _ in range(epochs):
        for b in torch.randperm(len(X)).split(batch):
            opt.zero_grad()
            out, _ = lstm(X[b])
            torch.nn.functional.cross_entropy(head(out[:, -1]), Y[b]).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        sched.step()
    with torch.no_grad():
        out, _ = lstm(torch.tensor((xt - mean) / std, dtype=torch.float32))
        return float((head(out[:, -1]).argmax(1).numpy() == yt).mean())


def numpy_defaults(x, y, xt, yt, seed: int) -> float:
    model, _ = T.train(x, y, cfg=T.TrainConfig(seed=seed))
    return float((model.forward(xt).argmax(1) == yt).mean())


def spread(accs) -> str:
    return f"{np.mean(accs):.4f} ± {np.std(accs):.4f} [{' '.join(f'{a:.3f}' for a in accs)}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = range(1, args.seeds + 1)
    met = True
    for name in args.sets:
        ((x, y), (xt, yt)), classes = load_ucr(name)
        print(f"{name} shape: train {len(x)} x {x.shape[1]} steps x {x.shape[2]} ch, test {len(xt)}, "
              f"{len(classes)} classes", flush=True)
        times = {}
        start = time.perf_counter()
        ours = [numpy_defaults(x, y, xt, yt, s) for s in seeds]
        times["numpy"] = time.perf_counter() - start
        start = time.perf_counter()
        theirs = [torch_recipe(x, y, xt, yt, s) for s in seeds]
        times["torch"] = time.perf_counter() - start
        gap = 100 * (np.mean(ours) - np.mean(theirs))
        worst = 100 * (min(ours) - np.mean(theirs))
        ok = gap >= -2 and worst >= -5
        met &= ok
        print(f"{name} numpy defaults accuracy: {spread(ours)}")
        print(f"{name} PyTorch recipe accuracy: {spread(theirs)}")
        print(f"{name} numpy - PyTorch mean pp: {gap:+.1f}")
        print(f"{name} worst numpy seed - PyTorch mean pp: {worst:+.1f}")
        print(f"{name} goal met: {'yes' if ok else 'no'}")
        print(f"{name} train seconds numpy / PyTorch: {times['numpy']:.1f} / {times['torch']:.1f}", flush=True)
    print(f"all goals met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
