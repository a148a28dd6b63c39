"""Integer reference throughput beside PyTorch's float nn.LSTM, same shapes, same run.

Prints timesteps per second for a batch of 256 windows and for a single stream
(one window at a time), and the ratio reference / torch (goal >= 1). The two
run alternately, best of 7 each, so machine load falls on both alike.

    python bench/reference_speed.py [--layers 1 2] [--hidden 32] [--steps 100] [--kernel K]

--kernel picks the reference's matmul kernel (edge_agent.reference.recurrence.KERNELS;
default: the fastest this build has).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.learn import model as fmodel  # noqa: E402
from edge_agent.reference.inputs import model_inputs  # noqa: E402
from edge_agent.quant import quantize  # noqa: E402
from edge_agent.reference.lstm import IntegerLSTM  # noqa: E402
from edge_agent.reference.recurrence import KERNELS  # noqa: E402


def best_of_interleaved(fn_a, fn_b, repeats: int = 7) -> tuple[float, float]:
    """Best time of each, runs alternating, so both see the same machine load."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((fn_a, 0), (fn_b, 1)):
            start = time.perf_counter()
            fn()
            took = time.perf_counter() - start
            if which == 0:
                best_a = min(best_a, took)
            else:
                best_b = min(best_b, took)
    return best_a, best_b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--inputs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the reference uses one)")
    ap.add_argument("--kernel", default=None, help="the reference's matmul kernel (default: fastest)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    H, C, T = args.hidden, args.inputs, args.steps
    print(f"H={H} inputs={C} steps={T}; torch threads={args.threads}; best of 7 runs, alternating; "
          f"reference kernel: {args.kernel or 'fastest'} (of {', '.join(KERNELS)})")
    print(f"{'layers':>6} {'case':>10} {'reference ts/s':>15} {'torch ts/s':>12} {'ratio':>7}")
    for layers in args.layers:
        net = torch.nn.LSTM(C, H, num_layers=layers, batch_first=True)
        state = {f"lstm.{k}": v.detach().numpy() for k, v in net.state_dict().items()}
        state["head.weight"] = rng.normal(0, 0.3, (4, H))
        state["head.bias"] = np.zeros(4)
        fm = fmodel.from_state_dict(state)
        x = rng.normal(0, 1, (256, T, C)).astype(np.float32)
        engine = IntegerLSTM(quantize(fm, x), kernel=args.kernel)
        x_q = model_inputs(engine.model, x)
        xt = torch.tensor(x)
        with torch.no_grad():
            for case, batch in (("batch 256", 256), ("single", 1)):
                n_single = 20
                if batch == 1:
                    ref, tor = best_of_interleaved(
                        lambda: [engine.run(x_q[i:i + 1]) for i in range(n_single)],
                        lambda: [net(xt[i:i + 1]) for i in range(n_single)])
                    ref, tor = ref / n_single, tor / n_single
                else:
                    ref, tor = best_of_interleaved(lambda: engine.run(x_q), lambda: net(xt))
                ref_rate, tor_rate = batch * T / ref, batch * T / tor
                print(f"{layers:>6} {case:>10} {ref_rate:>15,.0f} {tor_rate:>12,.0f} {ref_rate / tor_rate:>7.3f}")


if __name__ == "__main__":
    main()
