"""Train PyTorch LSTMs on the synthetic wrist-IMU task, quantize, evaluate.

Prints float vs int8 accuracy and agreement for a 1-layer and a 2-layer model,
through the same commands a user runs (edge-agent quantize / evaluate --json).
With --write-demo it also refreshes the bundled demo in edge_agent/data/.

    python bench/torch_ptq.py [--epochs 30] [--write-demo]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import recording, synthetic  # noqa: E402
from edge_agent.learn.torchnet import make as make_net  # noqa: E402


def train(data: dict, hidden: int, layers: int, epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    x = data["X_train"].astype(np.float32)
    mean, std = x.reshape(-1, x.shape[2]).mean(0), x.reshape(-1, x.shape[2]).std(0)
    xt = torch.tensor((x - mean) / std)
    yt = torch.tensor(data["y_train"])
    net = make_net(x.shape[2], hidden, layers, len(data["class_names"]))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        sched.step()
    return net, mean, std


def edge_agent(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edge_agent", *args], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--write-demo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = synthetic.make_dataset(2000, 1000, steps=100, seed=7)
    work = Path(tempfile.mkdtemp())
    np.savez(work / "data.npz", **data)
    results = {}
    for layers in (1, 2):
        net, mean, std = train(data, args.hidden, layers, args.epochs)
        pt = work / f"lstm{layers}.pt"
        torch.save({"state_dict": net.state_dict(), "mean": torch.tensor(mean),
                    "std": torch.tensor(std), "class_names": list(synthetic.CLASSES)}, pt)
        blob = work / f"lstm{layers}.bin"
        edge_agent("quantize", "--model", str(pt), "--calib", str(work / "data.npz"), "--out", str(blob))
        summary = json.loads(edge_agent("evaluate", "--model", str(pt), "--blob", str(blob),
                                        "--data", str(work / "data.npz"), "--json"))
        results[layers] = (pt, blob, summary)
        gap = 100 * (summary["float_accuracy"] - summary["int8_accuracy"])
        print(f"{layers}-layer H={args.hidden}: float {summary['float_accuracy']:.4f}  "
              f"int8 {summary['int8_accuracy']:.4f}  gap {gap:+.2f} pp  "
              f"agreement {summary['agreement']:.4f}  (n={summary['n']})")
    if args.write_demo:
        write_demo(results[2][0], data)


def write_demo(pt: Path, data: dict) -> None:
    """The bundled demo: a 2-layer model, a small dataset and a recording."""
    from edge_agent import blob
    from edge_agent.learn import model
    from edge_agent.quant import quantize

    out = ROOT / "edge_agent" / "data"
    fm = model.load_model(pt)
    fm.save_npz(out / "demo_model.npz")
    small = {"X_train": data["X_train"][:400], "y_train": data["y_train"][:400],
             "X_test": data["X_test"][:200], "y_test": data["y_test"][:200],
             "class_names": data["class_names"]}
    np.savez_compressed(out / "demo_data.npz", **small)
    blob.write(quantize(fm, data["X_train"][:1000]), out / "demo.bin")
    x, labels = synthetic.make_recording(segments=12, seconds=4.0, seed=11)
    recording.save_csv(out / "demo_recording.csv", x, synthetic.RATE_HZ, synthetic.CHANNELS,
                       [synthetic.CLASSES[k] for k in labels])
    print(f"wrote the demo to {out}")


if __name__ == "__main__":
    main()
