"""Flash throughput to the virtual board beside `mpremote cp` of the same files,
in the same run, and the time of a no-change re-flash.

    python bench/flash_speed.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import blob, config  # noqa: E402
from edge_agent.board import flash  # noqa: E402
from edge_agent.board.virtual import VirtualBoard  # noqa: E402
from edge_agent.learn import model as fmodel  # noqa: E402
from edge_agent.quant import quantize  # noqa: E402
from edge_agent.board.transport import CHUNK, RawRepl  # noqa: E402


def big_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    H, C = 96, 6
    layers = [fmodel.LSTMLayer(rng.normal(0, 0.2, (4 * H, C if k == 0 else H)), rng.normal(0, 0.2, (4 * H, H)),
                               np.zeros(4 * H), np.zeros(4 * H)) for k in range(2)]
    fm = fmodel.FloatModel(layers, rng.normal(0, 0.3, (4, H)), np.zeros(4), np.zeros(C), np.ones(C))
    blob.write(quantize(fm, rng.normal(size=(8, 20, C))), path)


def main() -> None:
    settings = config.load(ROOT / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = flash.compile_runner("x64", print)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        big_model(tmp / "model.bin")
        names = sorted(files) + ["model.bin"]
        total = sum((tmp / n).stat().st_size for n in names)
        rows = []
        for _ in range(3):
            with VirtualBoard() as board:
                repl = RawRepl(board.port)
                repl.enter()
                start = time.perf_counter()  # transfer only: both sides already in the raw REPL
                for name in names:
                    repl.write_file(name, (tmp / name).read_bytes())
                ours = time.perf_counter() - start
                start = time.perf_counter()
                for name in names:  # what `mpremote cp` calls for each file
                    repl.t.fs_writefile(name + ".mp", (tmp / name).read_bytes())
                theirs = time.perf_counter() - start
                repl.close()
            with VirtualBoard() as board:
                time.sleep(0.3)
                start = time.perf_counter()
                copies = []  # one cp per file: `cp a b :` fails on the unix port's root
                for n in names:
                    copies += ["cp", str(tmp / n), f":{n}", "+"]
                subprocess.run([shutil.which("mpremote"), "connect", board.port, "resume", *copies[:-1]],
                               check=True, capture_output=True, cwd=tmp)
                command = time.perf_counter() - start
            rows.append((ours, theirs, command))
        ours, theirs, command = (min(r[i] for r in rows) for i in range(3))
        print(f"{len(names)} files, {total} bytes (runner .mpy + a 2-layer H=96 model), best of 3")
        print(f"  edge-agent write_file (base64, {CHUNK // 1024} KiB chunks, sha256 check): {total / ours:10,.0f} B/s")
        print(f"  mpremote fs_writefile (what `cp` runs: repr, 256 B chunks): {total / theirs:10,.0f} B/s")
        print(f"  ratio: {theirs / ours:.2f} (goal >= 1.5)")
        print(f"  whole `mpremote connect .. cp ..` command: {command:.2f} s")
        with VirtualBoard() as board:
            flash.flash(settings, tmp / "model.bin", board.port, progress=False)
            start = time.perf_counter()
            result = flash.flash(settings, tmp / "model.bin", board.port, progress=False)
            took = time.perf_counter() - start
        print(f"no-change re-flash: {took:.2f} s ({len(result.skipped)} files skipped, "
              f"{len(result.written)} written, runner restarted and ready)")


if __name__ == "__main__":
    main()
