"""edge-agent command line: parse, call, print. The work lives in the modules."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import UserError

DATA_DIR = Path(__file__).parent / "data"
DEMO_BLOB = DATA_DIR / "demo.bin"
DEMO_RECORDING = DATA_DIR / "demo_recording.csv"


def _progress(total: int, desc: str, quiet: bool, unit: str = "it"):
    """A tqdm bar on stderr, or nothing when output is machine-read."""
    if quiet or total <= 0:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None)


def cmd_quantize(args) -> int:
    from . import blob, dataset, model
    from .fileio import write_text_atomic
    from .quant import quantize
    from .quant.report import error_report

    fm = model.load_model(args.model)
    data = dataset.load(args.calib)
    if data.train.x.shape[2] != fm.n_inputs:
        raise UserError(f"{args.calib}: X_train has {data.train.x.shape[2]} channels, the model takes {fm.n_inputs}")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(data.train.x))[: args.calib_windows])
    x = data.train.x[pick]
    lengths = None if data.train.lengths is None else data.train.lengths[pick]
    if data.class_names and not fm.class_names and len(data.class_names) == fm.n_classes:
        fm.class_names = data.class_names
    qm = quantize(fm, x, lengths)
    blob.write(qm, args.out)
    print(f"wrote {args.out}: {len(blob.pack(qm))} bytes, {len(qm.layers)} layer(s), "
          f"hidden {qm.hidden}, {qm.n_classes} classes, calibrated on {len(x)} windows")
    if args.report:
        report = error_report(fm, qm, x, lengths)
        write_text_atomic(args.report, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.report}: logits rms error {report['logits']['rms']:.4g}, "
              f"float/int8 agreement {report['agreement']:.3f}")
    return 0


def cmd_evaluate(args) -> int:
    from . import blob, dataset, model
    from .evaluate import evaluate
    from .fileio import atomic_open

    fm = model.load_model(args.model)
    qm = blob.read(args.blob)
    data = dataset.load(args.data)
    summary, dump = evaluate(fm, qm, data.test, args.backend)
    if args.dump:
        with atomic_open(args.dump, "wb") as fh:
            np.savez(fh, **dump)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"windows {summary['n']}  float accuracy {summary['float_accuracy']:.4f}  "
              f"int8 accuracy {summary['int8_accuracy']:.4f}  agreement {summary['agreement']:.4f}  "
              f"({summary['backend']})")
    return 0


def cmd_replay(args) -> int:
    import time

    from . import blob, config, recording
    from .replay import detections

    settings = config.load(args.config)
    blob_path = Path(args.blob) if args.blob else (settings.model_file() if settings.source else DEMO_BLOB)
    qm = blob.read(blob_path)
    rec_path = args.recording or DEMO_RECORDING
    rec = recording.load(rec_path, settings.sensor.rate_hz)
    settings.window = args.window or settings.window
    settings.hop = args.hop or settings.hop
    if args.window and not args.hop and settings.hop > settings.window:
        settings.hop = settings.window
    settings.check()
    bar = _progress(len(rec.x), f"replay ({args.backend})", args.json, unit="sample")
    found = 0
    start = time.monotonic()
    try:
        for det in detections(rec, qm, settings, args.backend, blob_path, args.port, args.realtime,
                              progress=bar.update if bar else None):
            if args.realtime and args.backend == "numpy":  # the reference is instant: pace its output
                time.sleep(max(0.0, det["t"] - float(rec.t[0]) - (time.monotonic() - start)))
            found += 1
            if args.json:
                print(json.dumps(det), flush=True)
            else:
                line = f"{det['seq']:>4}  t={det['t']:8.2f}s  {det['label']:<10} score {det['score']:.3f}"
                (bar.write(line) if bar else print(line, flush=True))
    finally:
        if bar:
            bar.close()
    if not args.json:
        print(f"{found} detections from {rec_path} ({args.backend})", file=sys.stderr)
    return 0


def cmd_board(args) -> int:
    import signal
    import threading

    from .board import VirtualBoard

    if not args.emulate:
        raise UserError("only a virtual board can be started here: edge-agent board --emulate")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with VirtualBoard(args.dir, log=lambda m: print(m, file=sys.stderr, flush=True)) as vboard:
        print(f"port: {vboard.port}", flush=True)
        print(f"flash: {vboard.dir}", file=sys.stderr, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def cmd_flash(args) -> int:
    from . import config
    from .flash import flash

    settings = config.load(args.config)
    blob_path = Path(args.blob) if args.blob else (settings.model_file() if settings.source else DEMO_BLOB)
    result = flash(settings, blob_path, args.port or settings.port, args.board or settings.board,
                   progress=not args.quiet, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    print(f"flashed {result.port} ({result.arch}): wrote {len(result.written)} file(s)"
          f"{' (' + ', '.join(result.written) + ')' if result.written else ''}, "
          f"{len(result.skipped)} unchanged, {result.seconds:.2f} s; runner ready: "
          f"{result.ready['layers']} layer(s), hidden {result.ready['hidden']}, "
          f"model RAM {result.ready['model_ram']} bytes")
    for err in result.ready.get("errors", []):
        print(f"warning: the board said: {err.get('what')}: {err.get('reason')}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quantize", help="float model + calibration data -> model.bin")
    p.add_argument("--model", required=True, help="float model: .npz or PyTorch .pt")
    p.add_argument("--calib", required=True, help="DATA .npz; its X_train calibrates")
    p.add_argument("--out", required=True, help="blob to write")
    p.add_argument("--report", help="write per-layer, per-gate quantization error (JSON)")
    p.add_argument("--calib-windows", type=int, default=1000, help="windows used (default 1000)")
    p.set_defaults(run=cmd_quantize)

    p = sub.add_parser("evaluate", help="float vs int8 accuracy on DATA's test split")
    p.add_argument("--model", required=True)
    p.add_argument("--blob", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--backend", default="numpy", choices=["numpy", "micropython"],
                   help="numpy: the integer reference; micropython: device/ under the unix port")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--dump", help="write int8 logits and predictions (.npz)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("replay", help="run a recording through a backend; print its detections")
    p.add_argument("recording", nargs="?", help="CSV or .npz (default: the bundled demo)")
    p.add_argument("--blob", help="model blob (default: config's model, else the bundled demo)")
    p.add_argument("--config", help="config.yaml (window, hop, thresholds, labels, rate)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "micropython", "board"],
                   help="numpy: the reference; micropython: a virtual board made for this run; "
                        "board: a flashed board on --port")
    p.add_argument("--port", help="the board's serial port (backend board; default: config's)")
    p.add_argument("--window", type=int, help="samples per window (overrides the config)")
    p.add_argument("--hop", type=int, help="samples between decisions (overrides the config)")
    p.add_argument("--realtime", action="store_true", help="pace samples at the sensor rate")
    p.add_argument("--json", action="store_true", help="JSON lines, no progress bar")
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser("board", help="start a virtual board on a pseudo-terminal; prints its port")
    p.add_argument("--emulate", action="store_true", help="the MicroPython unix port as the board")
    p.add_argument("--dir", help="the board's flash directory (default: a new temp dir)")
    p.set_defaults(run=cmd_board)

    p = sub.add_parser("flash", help="runner + model + config onto a board")
    p.add_argument("--port", help="serial port, or auto (USB VID:PID); default: config's")
    p.add_argument("--board", choices=["rp2040", "esp32", "auto"], help="default: config's")
    p.add_argument("--blob", help="model blob (default: config's model)")
    p.add_argument("--config", help="config.yaml (default: ./config.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_flash)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `edge-agent replay | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"edge-agent: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("EDGE_AGENT_DEBUG"):
            raise
        print(f"edge-agent: internal error: {type(exc).__name__}: {exc} "
              f"(EDGE_AGENT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70
