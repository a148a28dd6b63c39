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


def _blob_path(args, settings) -> Path:
    """--blob, else the config's model, else the bundled demo."""
    if args.blob:
        return Path(args.blob)
    return settings.model_file() if settings.source else DEMO_BLOB


def _detection_line(det: dict) -> str:
    if "event" in det:  # an anomaly model's onset / end
        return (f"{det['seq']:>4}  t={det['t']:8.2f}s  anomaly {det['event']:<5} score {det['score']:.3f} "
                f"x threshold ({det['level']} / {det['threshold']})")
    return f"{det['seq']:>4}  t={det['t']:8.2f}s  {det['label']:<10} score {det['score']:.3f}"


def _progress(total: int, desc: str, quiet: bool, unit: str = "it"):
    """A tqdm bar on stderr, or nothing when output is machine-read."""
    if quiet or total <= 0:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None)


def cmd_quantize(args) -> int:
    from . import blob, config, dataset
    from .fileio import write_text_atomic
    from .learn import model
    from .learn.anomaly import read_meta
    from .quant.report import error_report

    if read_meta(args.model) is not None:
        return _quantize_anomaly(args)
    fm = model.load_model(args.model)
    with np.errstate(over="ignore"):  # item 13: a weight float32 cannot hold makes a NaN model
        if not all(np.all(np.isfinite(np.asarray(a, np.float32))) for a in fm.arrays().values()):
            raise UserError(f"{args.model}: the model holds values float32 cannot represent (NaN, inf, ~1e39+)")
    settings = config.load(args.config)
    if args.frontend:
        settings.frontend.kind = args.frontend
    data = dataset.load(args.calib, settings.window, settings.hop, settings.sensor.rate_hz,
                        dataset.frontend_of_data(settings, args.calib))
    if data.train.x.shape[2] != fm.n_inputs:
        raise UserError(f"{args.calib}: X_train has {data.train.x.shape[2]} channels, the model takes {fm.n_inputs}")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(data.train.x))[: args.calib_windows])
    x = data.train.x[pick]
    lengths = None if data.train.lengths is None else data.train.lengths[pick]
    if data.class_names and not fm.class_names and len(data.class_names) == fm.n_classes:
        fm.class_names = data.class_names
    chosen = None  # the front-end path calibrates its own way (min/max)
    if data.frontend is not None:
        from .quant.frontend import quantize_with_frontend

        qm = quantize_with_frontend(fm, x, data.frontend, lengths, h_bits=_fixed_bits("--state-bits", args.state_bits),
                                    x_bits=_fixed_bits("--input-bits", args.input_bits))
    else:
        from .quant.calibrate import quantize_calibrated

        qm, chosen = quantize_calibrated(fm, x, lengths, args.calibration, state_bits=args.state_bits,
                                         input_bits=args.input_bits)
    blob.write(qm, args.out)
    print(f"wrote {args.out}: {len(blob.pack(qm))} bytes, {len(qm.layers)} layer(s), "
          f"hidden {qm.hidden}, {qm.n_classes} classes, calibrated on {len(x)} windows"
          + ("" if chosen is None else
             f" ({chosen['chosen']} calibration, {chosen['h_bits']}-bit state, {chosen['x_bits']}-bit inputs, "
             f"float/integer agreement "
             f"{chosen['agreement']:.3f} on held-out calibration windows)"))
    if chosen is not None and chosen["agreement"] < 0.99:
        # measured on long windows (bench/long_windows.py): rounding noise adds up over many steps
        print(f"note: the quantized model's decisions differ from the float model's on "
              f"{1 - chosen['agreement']:.1%} of the held-out calibration windows; training with more "
              f"--input-noise, or fine-tuning with --qat, makes the float model hold them", file=sys.stderr)
    if args.report:
        report = error_report(fm, qm, x, lengths)
        write_text_atomic(args.report, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.report}: logits rms error {report['logits']['rms']:.4g}, "
              f"float/integer agreement {report['agreement']:.3f}")
    return 0


def cmd_evaluate(args) -> int:
    from . import blob, config, dataset
    from .evaluate import evaluate
    from .learn import model
    from .fileio import atomic_open

    from .learn.anomaly import read_meta

    qm = blob.read(args.blob)
    if read_meta(args.model) is not None:
        return _evaluate_anomaly(args, blob.expect_task(qm, "anomaly", args.blob))
    fm = model.load_model(args.model)
    blob.expect_task(qm, "classify", args.blob)
    settings = config.load(args.config)
    data = dataset.load(args.data, settings.window, settings.hop, settings.sensor.rate_hz,
                        qm.frontend)  # WAV clips and sensor windows go through the blob's own front-end
    summary, dump = evaluate(fm, qm, data.test, args.backend)
    if args.dump:
        with atomic_open(args.dump, "wb") as fh:
            np.savez(fh, **dump)
    if args.plot:
        from .plot import report_png
        from .quant.report import error_report

        errors: dict = {}
        error_report(fm, qm, data.test.x[:200], None if data.test.lengths is None else data.test.lengths[:200],
                     errors)
        report_png(args.plot, dump["y"], dump["float_pred"], dump["pred"], qm.class_names, errors)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"windows {summary['n']}  float accuracy {summary['float_accuracy']:.4f}  "
              f"integer accuracy {summary['int8_accuracy']:.4f}  agreement {summary['agreement']:.4f}  "
              f"({summary['backend']}, {_widths(qm)})")
    return 0


def _widths(qm) -> str:
    """The quantized model's widths in words (the JSON key stays int8_accuracy, as documented)."""
    return {(8, 8): "int8", (16, 8): "int16 state", (16, 16): "int16 state and inputs"}[qm.h_bits, qm.x_bits]


def cmd_train(args) -> int:
    from . import config, dataset
    from .learn.train import AUDIO_RECIPE, TrainConfig, check_config, planned_epochs, train

    if args.task == "anomaly" or (args.task is None and config.load(args.config).task == "anomaly"):
        return _train_anomaly(args)
    # WAV clips: the audio recipe for every flag not given (learn/train.py AUDIO_RECIPE)
    recipe = AUDIO_RECIPE if dataset.is_wav_folder(Path(args.data)) else {}
    given = lambda name, default: getattr(args, name) if getattr(args, name) is not None \
        else recipe.get(name, default)
    cfg = TrainConfig(hidden=given("hidden", 32), layers=args.layers, epochs=given("epochs", None), seed=args.seed,
                      batch=args.batch_size, lr=args.lr, val_fraction=args.val_fraction, patience=args.patience,
                      weight_decay=given("weight_decay", 0.0), refit=args.refit, qat_epochs=args.qat_epochs,
                      qat_lr=args.qat_lr, label_smoothing=given("label_smoothing", 0.0),
                      time_mask=given("time_mask", 0), channel_mask=given("channel_mask", 0),
                      tilt=given("tilt", 0.0), class_weights=given("class_weights", True),
                      input_noise=given("input_noise", TrainConfig.input_noise))
    check_config(cfg)  # before loading the data: a bad flag is one line, at once
    taken = [_flag(name, value) for name, value in recipe.items() if getattr(args, name) is None]
    if taken:
        print(f"WAV clips: the audio recipe for the flags not given: {' '.join(taken)}")
    settings = config.load(args.config)
    data = dataset.load(args.data, settings.window, settings.hop, settings.sensor.rate_hz,
                        dataset.frontend_of_data(settings, args.data))
    bar = _progress(planned_epochs(cfg, data.train.y, args.qat), "train", False, unit="epoch")

    def progress(phase, record):
        if bar:
            bar.set_postfix_str(f"{phase} loss {record['loss']:.3f} acc {record['acc']:.3f}"
                                + (f" val {record['val_acc']:.3f}" if "val_acc" in record else ""))
            bar.update(1)

    try:
        fm, report = train(data.train.x, data.train.y, data.train.lengths, cfg, data.class_names,
                           qat=args.qat, progress=progress)
    finally:
        if bar:
            bar.close()
    if str(args.out).endswith((".pt", ".pth")):
        from .learn.torchnet import save_checkpoint

        save_checkpoint(fm, args.out)
    else:
        fm.save_npz(args.out)
    acc = float(np.mean(fm.forward(data.test.x, data.test.lengths).argmax(1) == data.test.y))
    phases = ", ".join(f"{name}: {len(r['history'])} epochs"
                       + (f" (refit on all windows after validation chose {r['refit_epochs']})"
                          if "refit_epochs" in r else "") for name, r in report.items())
    print(f"wrote {args.out}: {len(fm.layers)} layer(s), hidden {fm.hidden}, {fm.n_classes} classes; "
          f"{phases}; float test accuracy {acc:.4f}")
    if data.frontend is not None:  # what replay and the board must be told (config.yaml window, in frames)
        print(f"inputs: the {data.frontend.kind} front-end at {data.frontend.rate_hz} Hz, "
              f"{data.train.x.shape[1]} frames per training window")
    return 0


def _flag(name: str, value) -> str:
    """A TrainConfig field and value as the train flag that sets it."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def _train_anomaly(args) -> int:
    from . import config
    from .learn.anomaly import save, train_from_data

    if args.qat:
        raise UserError("--qat is for classifiers; an anomaly model is quantized after training (PTQ)")
    settings = config.load(args.config)
    bar = _progress(args.epochs or 1, "train (anomaly)", False, unit="epoch")

    def progress(record):
        if bar:
            if bar.total != record.get("epochs", bar.total):
                bar.total = record["epochs"]
            bar.set_postfix_str(f"loss {record['loss']:.4f}")
            bar.update(1)

    try:
        fm, meta, frontend, report = train_from_data(args.data, settings, args.hidden or 32, args.layers, args.epochs,
                                                     args.seed, progress)
    finally:
        if bar:
            bar.close()
    save(fm, meta, args.out, frontend)
    where = "raw samples" if frontend is None else f"{frontend.bands} {frontend.kind} bands every {frontend.hop} samples"
    print(f"wrote {args.out}: anomaly model ({where}), {len(fm.layers)} layer(s), hidden {fm.hidden}; "
          f"window {meta.window}, warm-up {meta.warmup}, smoothing {meta.smoothing} steps; trained on "
          f"{report['steps']} normal steps ({report['epochs']} epochs, loss {report['history'][-1]['loss']:.4f}), "
          f"{report['held_back']} held back for the threshold")
    return 0


def _fixed_bits(flag: str, value: str) -> int:
    """--state-bits or --input-bits as a fixed width: the front-end and anomaly paths do
    not choose one, so auto is 8 there."""
    if value not in ("auto", "8", "16"):
        raise UserError(f"{flag} {value!r}: choose from auto, 8, 16")
    return 8 if value == "auto" else int(value)


def _quantize_anomaly(args) -> int:
    from . import blob, config
    from .learn.anomaly import load
    from .quant.anomaly import quantize_from_data

    for flag, value in (("--state-bits", args.state_bits), ("--input-bits", args.input_bits)):
        if _fixed_bits(flag, value) == 16:
            raise UserError(f"{flag} 16: an anomaly model keeps 8-bit inputs and state")
    fm, meta, frontend = load(args.model)
    settings = config.load(args.config)
    qm = quantize_from_data(fm, meta, frontend, args.calib, settings, min(args.calib_windows, 500))
    blob.write(qm, args.out)
    a = qm.anomaly
    print(f"wrote {args.out}: {len(blob.pack(qm))} bytes, anomaly model, {len(qm.layers)} layer(s), "
          f"hidden {qm.hidden}; threshold {a.threshold} (quantile {meta.quantile} x margin {meta.margin} "
          f"of held-back normal scores), smoothing 2^-{a.smooth_shift}")
    return 0


def _evaluate_anomaly(args, qm) -> int:
    from . import config
    from .evaluate import anomaly_recordings, evaluate_anomaly
    from .fileio import atomic_open
    from .learn.anomaly import load

    fm, _, _ = load(args.model)
    settings = config.load(args.config)
    summary, dump = evaluate_anomaly(fm, qm, anomaly_recordings(args.data, settings.sensor.rate_hz), args.backend)
    if args.dump:
        with atomic_open(args.dump, "wb") as fh:
            np.savez(fh, **dump)
    if args.plot:
        from .plot import anomaly_png

        anomaly_png(args.plot, dump)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}))
    else:
        print(f"steps {summary['n']}  ROC-AUC float {summary['float_roc_auc']:.4f} int8 {summary['int8_roc_auc']:.4f}  "
              f"precision {summary['precision']:.3f}  recall {summary['recall']:.3f} "
              f"({summary['detected']}/{summary['episodes']} episodes)  median delay {summary['median_delay_s']:.2f} s  "
              f"false alarms/hour {summary['false_alarms_per_hour']:.3f} ({summary['normal_hours']:.2f} h normal)  "
              f"({summary['backend']})")
    return 0


def cmd_replay(args) -> int:
    from . import blob, config, recording
    from .replay import detections

    settings = config.load(args.config)
    blob_path = _blob_path(args, settings)
    qm = blob.read(blob_path)
    rec_path = args.recording or DEMO_RECORDING
    rec = recording.load(rec_path, settings.sensor.rate_hz)
    if blob_path.resolve() == DEMO_BLOB.resolve() and qm.frontend is None and rec.x.shape[1] != qm.n_inputs:
        raise UserError(f"{rec_path}: {rec.x.shape[1]} channel(s), and the model is the bundled demo, which takes "
                        f"{qm.n_inputs} (name yours with --blob, or model: in --config)")
    settings.window = args.window or settings.window
    settings.hop = args.hop or settings.hop
    if args.window and not args.hop and settings.hop > settings.window:
        settings.hop = settings.window
    settings.check()
    if args.mqtt:
        return _publish_replay(args, settings, qm, detections(rec, qm, settings, args.backend, blob_path,
                                                              args.port, args.realtime))
    bar = _progress(len(rec.x), f"replay ({args.backend})", args.json, unit="sample")
    found = 0
    try:
        for det in detections(rec, qm, settings, args.backend, blob_path, args.port, args.realtime,
                              progress=bar.update if bar else None):
            found += 1
            if args.json:
                print(json.dumps(det, allow_nan=False), flush=True)
            else:
                line = _detection_line(det)
                (bar.write(line) if bar else print(line, flush=True))
    finally:
        if bar:
            bar.close()
    if not args.json:
        print(f"{found} detections from {rec_path} ({args.backend})", file=sys.stderr)
    return 0


def cmd_dataset(args) -> int:
    if args.task == "keywords":
        from .keywords import corpus_size, make_corpus

        per_class = args.per_class or 800
        test = args.test_per_class or max(1, round(per_class * 0.1))
        bar = _progress(corpus_size(per_class, test), "synthesize", False, unit="clip")
        try:
            counts = make_corpus(args.out, per_class, test, args.seed, progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        print(f"wrote {args.out}: {counts['clips']} clips of {counts['classes']} classes, "
              f"{counts['test']} from held-out voices in testing_list.txt, "
              f"{counts['validation']} from other held-out voices in validation_list.txt")
        return 0
    from .dataset import write_synthetic

    per_class = args.per_class or 500
    print(write_synthetic(args.task, args.out, 4 * per_class, args.test_per_class or per_class, args.seed))
    return 0


def cmd_board(args) -> int:
    import signal
    import threading

    if not args.emulate:
        raise UserError("only a virtual board can be started here: edge-agent board --emulate [unix|rp2040]")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.emulate == "rp2040":
        from .board.rp2040 import RP2040Board

        board = RP2040Board(args.dir, args.firmware, log=log)
    else:
        from .board.virtual import VirtualBoard

        board = VirtualBoard(args.dir, log=log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with board as vboard:
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
    from .board.flash import flash

    settings = config.load(args.config)
    blob_path = _blob_path(args, settings)
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


def _mqtt_target(args):
    from .mqtt import client as mqtt

    return mqtt.target(args.mqtt, args.username, args.password_file, args.tls_ca, args.insecure)


def _publish_replay(args, settings, qm, dets) -> int:
    from .replay import publish_mqtt

    for det in publish_mqtt(dets, _mqtt_target(args), settings, qm, args.device_id):
        print(json.dumps(det, allow_nan=False) if args.json else _detection_line(det), flush=True)
    return 0


def cmd_monitor(args) -> int:
    from .mqtt import monitor

    if args.port:
        source = monitor.serial_source(args.port)
    elif args.mqtt:
        source = monitor.mqtt_source(_mqtt_target(args), args.topic_prefix, args.group, args.client_id)
    else:
        raise UserError("monitor needs --mqtt URL or --port P")
    monitor.run(source, as_json=args.json, count=args.count)
    return 0


def cmd_bridge(args) -> int:
    import signal
    import threading

    from . import config
    from .mqtt import bridge

    settings = config.load(args.config)
    limits = bridge.QueueLimits(args.queue_max, args.queue_bytes, args.ttl, args.drop)
    queue = bridge.DiskQueue(args.queue, limits)
    device_id = args.device_id or settings.device_id
    b = bridge.Bridge(_mqtt_target(args), queue, device_id, settings.publisher.topic_prefix,
                      args.client_id, log=lambda m: print(f"edge-agent bridge: {m}", file=sys.stderr))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    waiting = queue.counters()["queued"]
    try:
        bridge.run(args.port, b, stop, lambda: print(f"bridging {args.port} -> {args.mqtt} as {device_id} "
                                                     f"(queue {args.queue}: {waiting} waiting)",
                                                     file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        b.close()
    return 0


# ---- the command table: each verb's arguments beside its handler -------------------

def arg(*names, **kwargs):
    return names, kwargs


CONFIG = arg("--config", help="config.yaml (default: ./config.yaml where one is needed)")
BLOB = arg("--blob", help="model blob (default: config's model, else the bundled demo)")
JSON = arg("--json", action="store_true", help="machine-readable output (JSON)")
MQTT_AUTH = [
    arg("--username", help="MQTT user (or user@ in the URL)"),
    arg("--password-file", help="a file holding the MQTT password (else $EDGE_AGENT_MQTT_PASSWORD)"),
    arg("--tls-ca", help="CA certificate for mqtts:// (default: the system's)"),
    arg("--insecure", action="store_true", help="TLS without certificate checks (testing only)"),
    arg("--client-id", help="a fixed client id: a persistent session across reconnects"),
]

COMMANDS = {
    "quantize": (cmd_quantize, "float model + calibration data -> model.bin", [
        arg("--model", required=True, help="float model: .npz or PyTorch .pt"),
        arg("--calib", required=True, help="DATA .npz; its X_train calibrates"),
        arg("--out", required=True, help="blob to write"),
        arg("--report", help="write per-layer, per-gate quantization error (JSON)"),
        arg("--calib-windows", type=int, default=1000, help="windows used (default 1000)"),
        arg("--calibration", default="auto",
            choices=["auto", "minmax", "percentile", "mse", "minmax+bias", "percentile+bias", "mse+bias"],
            help="input and cell ranges (+bias: with bias correction); auto (default): the one that best "
                 "keeps the float decisions on the calibration windows"),
        arg("--frontend", choices=["none", "mel", "linear", "log"],
            help="the spectral front-end for WAV data (default: config's frontend.kind; auto: mel)"),
        arg("--state-bits", default="auto", metavar="BITS",
            help="hidden state width: 8 (int8, the least RAM and cycles), 16 (int16: closer to the float "
                 "model over long windows; at most 128 hidden units) or auto (default: 8 where, on at least 100 "
                 "held-out calibration windows, it keeps 99%% of the float decisions and leaves at most 2%% near "
                 "the edge; else 16 if it keeps as many; 8 for front-end and anomaly models)"),
        arg("--input-bits", default="auto", metavar="BITS",
            help="width of the first layer's inputs: 8 (int8) or 16 (int16, with a 16-bit state: 257 times finer "
                 "steps, for inputs whose small differences decide; at most 128 channels) or auto (default: 16 "
                 "where a 16-bit state with int8 inputs does not hold the decisions as above and 16 keeps as "
                 "many; 8 for front-end and anomaly models)"),
        CONFIG,
    ]),
    "evaluate": (cmd_evaluate, "float vs int8 accuracy on DATA's test split", [
        arg("--model", required=True),
        arg("--blob", required=True),
        arg("--data", required=True),
        arg("--backend", default="numpy", choices=["numpy", "micropython"],
            help="numpy: the integer reference; micropython: device/ under the unix port"),
        JSON,
        arg("--dump", help="write int8 logits and predictions (.npz)"),
        arg("--plot", help="write confusion matrices and gate error histograms (PNG)"),
        CONFIG,
    ]),
    "train": (cmd_train, "train a float LSTM in numpy (optionally quantization-aware)", [
        arg("--data", required=True, help="DATA .npz, or a folder of labelled CSV recordings; "
                                          "--task anomaly: normal recordings (CSV / .npz, or a folder)"),
        arg("--task", choices=["classify", "anomaly"],
            help="anomaly: predict the next step from normal data only (default: config's task)"),
        arg("--out", required=True, help="model.npz (PyTorch state_dict names) or model.pt (torch.save)"),
        arg("--hidden", type=int, help="default 32; WAV clips: 64"),
        arg("--layers", type=int, default=1),
        arg("--epochs", type=int, help="default: enough for about 1,200 optimizer steps (20 to 600 epochs); "
                                       "WAV clips: 60"),
        arg("--lr", type=float, default=1e-2, help="Adam's learning rate, decaying exponentially to 1/64 of it"),
        arg("--batch-size", type=int, default=32),
        arg("--val-fraction", type=float, default=0.0,
            help="hold out this stratified fraction to stop early (default 0: train on every window)"),
        arg("--patience", type=int, help="epochs without a better validation loss (default: epochs / 5)"),
        arg("--weight-decay", type=float, help="decoupled, as AdamW (default 0; WAV clips: the audio recipe's)"),
        arg("--refit", action=argparse.BooleanOptionalAction, default=False,
            help="with --val-fraction: then retrain on every window for the epochs validation chose"),
        arg("--seed", type=int, default=0),
        arg("--qat", action="store_true", help="then fine-tune through the int8 model's grids (same flags)"),
        arg("--qat-epochs", type=int, default=5),
        arg("--qat-lr", type=float, default=1e-3),
        arg("--label-smoothing", type=float, help="target 1 - e on the label, e spread over the classes "
                                                   "(default 0; WAV clips: the audio recipe's)"),
        arg("--time-mask", type=int, help="SpecAugment: mask up to this many steps per window "
                                          "(default 0; WAV clips: the audio recipe's)"),
        arg("--channel-mask", type=int, help="... and up to this many adjacent channels (bands)"),
        arg("--tilt", type=float, help="a random spectral tilt per window, up to this much across the channels"),
        arg("--class-weights", action=argparse.BooleanOptionalAction,
            help="weight each class by the inverse of its share (default on; WAV clips: the audio recipe's)"),
        arg("--input-noise", type=float, metavar="STEPS",
            help="train through Gaussian input noise of this sd, in int8 input steps (a channel's range / 255), "
                 "so int8 inputs keep the float model's decisions on long windows (default 4; "
                 "WAV clips: the audio recipe's, 0)"),
        CONFIG,
    ]),
    "replay": (cmd_replay, "run a recording through a backend; print its detections", [
        arg("recording", nargs="?", help="CSV or .npz (default: the bundled demo)"),
        BLOB,
        CONFIG,
        arg("--backend", default="numpy", choices=["numpy", "micropython", "board"],
            help="numpy: the reference; micropython: a virtual board made for this run; "
                 "board: a flashed board on --port"),
        arg("--port", help="the board's serial port (backend board; default: config's)"),
        arg("--window", type=int, help="samples per window (overrides the config)"),
        arg("--hop", type=int, help="samples between decisions (overrides the config)"),
        arg("--realtime", action="store_true", help="pace samples at the sensor rate"),
        arg("--json", action="store_true", help="JSON lines, no progress bar"),
        arg("--mqtt", help="also publish the detections as a board would: mqtt://host[:port]"),
        arg("--device-id", help="the device id to publish as (default: config's)"),
        *MQTT_AUTH,
    ]),
    "monitor": (cmd_monitor, "watch detections: a live table of devices, or JSON lines", [
        arg("--mqtt", help="broker URL: mqtt://host[:port] or mqtts://"),
        arg("--port", help="a board on serial instead of MQTT"),
        arg("--json", action="store_true", help="one JSON line per detection"),
        arg("--count", type=int, help="exit after N detections"),
        arg("--group", help="MQTT v5 shared subscription group: monitors in a group split the stream"),
        arg("--topic-prefix", default="edge"),
        *MQTT_AUTH,
    ]),
    "bridge": (cmd_bridge, "a serial board's messages to MQTT, with an on-disk queue", [
        arg("--port", required=True, help="the board's serial port"),
        arg("--mqtt", required=True, help="broker URL: mqtt://host[:port] or mqtts://"),
        CONFIG,
        arg("--device-id", help="publish as this device (default: config's)"),
        arg("--queue", default="edge-agent-bridge.sqlite", help="the on-disk queue file"),
        arg("--queue-max", type=int, default=10000, help="messages kept at most"),
        arg("--queue-bytes", type=int, default=10_000_000, help="payload bytes kept at most"),
        arg("--ttl", type=float, default=7 * 24 * 3600, help="seconds a message may wait"),
        arg("--drop", choices=["oldest", "newest"], default="oldest", help="what goes when full"),
        *MQTT_AUTH,
    ]),
    "dataset": (cmd_dataset, "make a data set: synthetic tasks, or spoken keywords (espeak-ng)", [
        arg("task", choices=["activity", "vibration", "keywords"]),
        arg("--out", required=True, help="keywords: a folder (Speech Commands layout); vibration: a folder "
                                         "(train/, test/ recordings, faults.npz); activity: a DATA .npz"),
        arg("--per-class", type=int, help="training examples per class (keywords 800, else 500)"),
        arg("--test-per-class", type=int, help="test examples per class (from held-out voices for keywords)"),
        arg("--seed", type=int, default=0),
    ]),
    "board": (cmd_board, "start a virtual board on a pseudo-terminal; prints its port", [
        arg("--emulate", nargs="?", const="unix", choices=["unix", "rp2040"],
            help="unix (default): the MicroPython unix port; rp2040: the official Pico firmware "
                 "on an emulated RP2040 (Node.js, rp2040js)"),
        arg("--firmware", help="rp2040: the MicroPython RPI_PICO .uf2, or a folder holding it and the "
                               "B1 bootrom (default: $EDGE_AGENT_FIRMWARE_DIR)"),
        arg("--dir", help="the board's flash directory (default: a new temp dir)"),
    ]),
    "flash": (cmd_flash, "runner + model + config onto a board", [
        arg("--port", help="serial port, or auto (USB VID:PID); default: config's"),
        arg("--board", choices=["rp2040", "esp32", "auto"], help="default: config's"),
        BLOB,
        CONFIG,
        arg("--quiet", action="store_true", help="no progress bar"),
    ]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, help_text, args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        for names, kwargs in args:
            p.add_argument(*names, **kwargs)
        p.set_defaults(run=handler)
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
