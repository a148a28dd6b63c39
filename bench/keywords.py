"""Voice commands end to end, on voices training never heard.

The espeak-ng corpus (edge_agent/keywords.py: training voices, a validation
split of other voices, a test split of yet other voices; neither held-out split
is trained on) through the mel front-end, a numpy-trained LSTM, PTQ:
- accuracy on the 12 classes, float and int8 (the integer reference), on the
  test voices (and on the validation voices);
- the decision rule (threshold, posterior smoothing, refractory period) chosen
  on the validation voices only: long recordings of noise and unknown speech,
  and of keywords between noise and other words, spoken by VAL_VARIANTS and
  (half the words) by --val-made-voices voices made from them; the rule with
  the fewest keywords missed among those with at most --val-false false
  detections per hour there; and the words the validation noise's highest
  keyword scores heard (what keywords.HARD_UNKNOWN is drawn from);
- streaming through the deployment's decision with that rule (replay
  semantics: windows of `--window` frames every `--hop`, each from a zero
  state; silence and unknown never published): false detections per hour on
  a long stretch of background noise and unknown speech from the test voices,
  and keywords missed (or named wrongly) in a long recording of keywords
  between noise and other words from the test voices; with each false-detection
  rate, its exact 95% Poisson interval (a few events say little about a rate),
  and the words each false detection heard;
- the model's size: blob bytes.

    python bench/keywords.py [--corpus DIR] [--hidden 64] [--epochs 60] [--weight-decay 0.05]

With --corpus, the clips' features (and the recordings) are cached in
DIR/.edge-agent-cache, so a second run starts training at once.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent import blob, config, dataset, keywords  # noqa: E402
from edge_agent.learn.train import AUDIO_RECIPE, TrainConfig, train  # noqa: E402
from edge_agent.quant.frontend import quantize_with_frontend  # noqa: E402
from edge_agent.recording import Recording  # noqa: E402
from edge_agent.reference.inputs import quantize_raw  # noqa: E402
from edge_agent.reference.lstm import IntegerLSTM  # noqa: E402
from edge_agent.reference.frontend import int8_features  # noqa: E402
from edge_agent.reference.stream import decide, smooth_detections, stream_decisions  # noqa: E402
from edge_agent.replay import numpy_detections  # noqa: E402

QUIET = ("silence", "unknown")  # classes that are never published
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.5, 0.995, 0.01))  # label smoothing keeps scores under ~0.91
SMOOTHS = (1, 2, 3, 4)
REFRACTORY = (3, 5, 8)
RECORDING_CACHE = 2  # the cached recordings' layout: 2 holds every word spoken
NEAR_MISSES = 20  # the validation noise's highest keyword scores whose words are printed
VAL_MADE_VOICES = 200  # voices made from VAL_VARIANTS for the validation recordings (--val-made-voices)


def stream_settings(args, continuous: bool, rule: dict) -> config.Settings:
    s = config.Settings(window=args.window, hop=args.hop, continuous=continuous, smooth=rule["smooth"],
                        refractory=rule["refractory"])
    s.thresholds = {"default": rule["threshold"], **{q: 1.0 for q in QUIET}}
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


def poisson_interval(k: int, hours: float, level: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood) interval of a rate per hour from k events in `hours`:
    a handful of false detections pins the rate down only loosely."""
    tail = (1 - level) / 2

    def at_most(n: int, lam: float) -> float:  # P(X <= n) for X ~ Poisson(lam)
        term = total = math.exp(-lam)
        for i in range(1, n + 1):
            term *= lam / i
            total += term
        return total

    def root(f, hi: float) -> float:  # f falls through 0 on [0, hi]
        lo = 0.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    top = 10.0 * (k + 10)
    low = 0.0 if k == 0 else root(lambda lam: at_most(k - 1, lam) - (1 - tail), top)
    return low / hours, root(lambda lam: at_most(k, lam) - tail, top) / hours


def recording(cache: Path | None, minutes: float, seed: int, variants, made=(), **kw):
    """keywords.make_recording: (samples, keywords' truth, every word spoken),
    kept in the cache folder (keyed by its arguments, the made voices' variant
    files and the source of the functions that make it) when there is one."""
    import inspect

    path = None
    if cache is not None:
        source = "".join(inspect.getsource(f) for f in (keywords.make_recording, keywords.synthesize,
                                                        keywords.noise, keywords._babble, keywords.resample,
                                                        keywords.Speaker))
        voices = [(Path(v.data) / "espeak-ng-data" / "voices" / "!v" / v.variant).read_text() for v in made]
        key = hashlib.sha256(repr((RECORDING_CACHE, minutes, seed, tuple(variants), sorted(kw.items()), source,
                                   voices)).encode()).hexdigest()[:20]
        path = cache / f"recording-{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                return z["samples"], [(float(t), str(w)) for t, w in zip(z["t"], z["word"])], \
                    [(float(a), float(b), str(w), str(v)) for a, b, w, v in
                     zip(z["start"], z["end"], z["spoken"], z["speaker"])]
    spoken: list = []
    samples, truth = keywords.make_recording(minutes * 60, seed=seed, variants=variants, made=made,
                                             spoken=spoken, **kw)
    if path is not None:
        from edge_agent.fileio import atomic_open

        cache.mkdir(exist_ok=True)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, samples=samples, t=np.array([t for t, _ in truth]), word=np.array([w for _, w in truth]),
                     **{name: np.array([w[i] for w in spoken]) for i, name in
                        enumerate(("start", "end", "spoken", "speaker"))})
    return samples, truth, spoken


def hours_of(samples: np.ndarray) -> float:
    return len(samples) / keywords.RATE_HZ / 3600


def heard_in(times, labels, spoken) -> str:
    """What each detection on a stream of other words heard: the last word
    spoken into its 1-s window, as 'word->label', counted, most often first."""
    from collections import Counter

    starts = np.array([w[0] for w in spoken])
    counts: Counter = Counter()
    for t, label in zip(times, labels):
        j = int(np.searchsorted(starts, t, "right")) - 1
        word = spoken[j][2] if j >= 0 and spoken[j][1] > t - 1.0 else "(noise)"
        counts[f"{word}->{label}"] += 1
    return ", ".join(f"{k} {n}" for k, n in counts.most_common()) or "none"


def decisions(qm, samples, window: int, hop: int):
    """Class, Q0.15 score and time (s) of every windowed decision over a stream."""
    x_q, at = int8_features(qm, samples)
    points = stream_decisions(IntegerLSTM(qm), x_q, window, hop, False)
    classes, scores = decide(np.stack([logits for _, logits in points]), qm)
    return classes, scores, [at[t] / keywords.RATE_HZ for t, _ in points]


def sweep(qm, names, noise_decisions, hours, speech, truth, args):
    """Every rule of the grid on a noise stream (its decisions and length in
    hours) and a keyword stream: [(rule, false per hour, missed, wrong, extra)]."""
    kn, sn, _ = noise_decisions
    ks, ss, ts = decisions(qm, speech, args.window, args.hop)
    out = []
    for thr in THRESHOLDS:
        limits = [32768 if n in QUIET else int(round(thr * 32768)) for n in names]
        for n in SMOOTHS:
            for refractory in REFRACTORY:
                false = smooth_detections(kn, sn, limits, n, refractory)
                found = smooth_detections(ks, ss, limits, n, refractory)
                dets = [{"t": ts[i], "label": names[ks[i]]} for i, _ in found]
                hits, wrong, missed, extra = score_stream(dets, truth)
                out.append(({"threshold": thr, "smooth": n, "refractory": refractory},
                            len(false) / hours, missed, wrong, extra))
    return out


def choose(results, most_false: float):
    """The rule with the fewest keywords missed or named wrongly among those at
    or under most_false false detections per hour (then fewer false, then fewer
    extra); with none there, the fewest false detections."""
    ok = [r for r in results if r[1] <= most_false]
    if ok:
        return min(ok, key=lambda r: (r[2] + r[3], r[1], r[4], -r[0]["threshold"]))
    return min(results, key=lambda r: (r[1], r[2] + r[3]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", help="an existing corpus folder (default: generate one)")
    ap.add_argument("--per-class", type=int, default=800)
    ap.add_argument("--test-per-class", type=int, default=80)
    ap.add_argument("--hidden", type=int, default=AUDIO_RECIPE["hidden"])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=AUDIO_RECIPE["epochs"])
    ap.add_argument("--label-smoothing", type=float, default=AUDIO_RECIPE["label_smoothing"])
    ap.add_argument("--time-mask", type=int, default=AUDIO_RECIPE["time_mask"])
    ap.add_argument("--channel-mask", type=int, default=AUDIO_RECIPE["channel_mask"])
    ap.add_argument("--tilt", type=float, default=AUDIO_RECIPE["tilt"])
    ap.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=AUDIO_RECIPE["class_weights"])
    ap.add_argument("--input-noise", type=float, default=AUDIO_RECIPE["input_noise"])
    ap.add_argument("--weight-decay", type=float, default=AUDIO_RECIPE["weight_decay"])
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--train-fraction", type=float, default=1.0, help="train on a random part (exploring)")
    ap.add_argument("--window", type=int, default=49, help="frames per decision window (1 s)")
    ap.add_argument("--hop", type=int, default=10, help="frames between decisions (10: 5 staggered "
                    "windows, under half an RP2040 core with H=64: bench/frontend.py)")
    ap.add_argument("--val-false", type=float, default=0.0,
                    help="most false detections per hour on the validation voices' noise for a rule")
    ap.add_argument("--noise-minutes", type=float, default=180.0)
    ap.add_argument("--keyword-minutes", type=float, default=10.0)
    ap.add_argument("--val-noise-minutes", type=float, default=180.0)
    ap.add_argument("--val-keyword-minutes", type=float, default=10.0)
    ap.add_argument("--val-made-voices", type=int, default=VAL_MADE_VOICES,
                    help="voices made from the validation variants (keywords.random_voices) that speak half "
                         "the validation recordings' words (0: the stock validation variants alone)")
    ap.add_argument("--continuous", action="store_true", help="also stream one never-reset state")
    ap.add_argument("--model", help="save the float model here (.npz)")
    ap.add_argument("--blob", help="save the blob here")
    ap.add_argument("--load-model", help="evaluate this float model (.npz) instead of training one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "kw"
        if not args.corpus:
            t0 = time.time()
            keywords.make_corpus(corpus, args.per_class, args.test_per_class, seed=0)
            print(f"corpus_seconds: {time.time() - t0:.0f}")
        data = dataset.load(corpus, frontend=dataset.frontend_for(config.Settings(), True), cache=bool(args.corpus))
    cache = corpus / dataset.CACHE_DIR if args.corpus else None
    x, y = data.train.x, data.train.y
    if args.train_fraction < 1:
        keep = np.sort(np.random.default_rng(1).permutation(len(y))[:int(len(y) * args.train_fraction)])
        x, y = x[keep], y[keep]
    print(f"train_clips: {len(y)}")
    print(f"validation_clips_other_voices: {0 if data.val is None else len(data.val.y)}")
    print(f"test_clips_held_out_voices: {len(data.test.y)}")
    t0 = time.time()
    if args.load_model:
        from edge_agent.learn.model import load_model

        fm = load_model(args.load_model)
    else:
        cfg = TrainConfig(hidden=args.hidden, layers=args.layers, epochs=args.epochs,
                          label_smoothing=args.label_smoothing, time_mask=args.time_mask,
                          channel_mask=args.channel_mask, tilt=args.tilt, class_weights=args.class_weights,
                          input_noise=args.input_noise, weight_decay=args.weight_decay, seed=args.seed)
        fm, _ = train(x, y, None, cfg, data.class_names)
        print(f"train_seconds: {time.time() - t0:.0f}")
    rng = np.random.default_rng(0)
    calib = x[rng.permutation(len(x))[:1000]]
    qm = quantize_with_frontend(fm, calib, data.frontend)
    if args.model:
        fm.save_npz(args.model)
    if args.blob:
        blob.write(qm, args.blob)
    for split, part in (("validation", data.val), ("test", data.test)):
        if part is None:
            continue
        float_pred = fm.forward(part.x).argmax(1)
        int_pred, _ = decide(IntegerLSTM(qm).run(quantize_raw(part.x.astype(np.int64), qm.inputs, qm.x_bits)), qm)
        fa, ia = float(np.mean(float_pred == part.y)), float(np.mean(int_pred == part.y))
        tag = "" if split == "test" else "validation_"
        print(f"{tag}float_accuracy_12_classes: {fa:.4f}")
        print(f"{tag}int8_accuracy_12_classes: {ia:.4f}")
        print(f"{tag}int8_minus_float_pp: {100 * (ia - fa):+.2f}")
        print(f"{tag}float_int8_agreement: {float(np.mean(float_pred == int_pred)):.4f}")
    print(f"blob_bytes: {len(blob.pack(qm))}")

    names = data.class_names
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-agent-val-voices-") as folder:
        made = keywords.random_voices(folder, args.val_made_voices, 505, bases=keywords.VAL_VARIANTS) \
            if args.val_made_voices else []
        val_noise, _, val_spoken = recording(cache, args.val_noise_minutes, 303, keywords.VAL_VARIANTS, made,
                                             keyword_share=0.0, keyword_every=2.5)
        val_speech, val_truth, _ = recording(cache, args.val_keyword_minutes, 404, keywords.VAL_VARIANTS, made,
                                             keyword_share=0.7)
    noise, _, spoken = recording(cache, args.noise_minutes, 101, keywords.TEST_VARIANTS,
                                 keyword_share=0.0, keyword_every=2.5)
    speech, truth, _ = recording(cache, args.keyword_minutes, 202, keywords.TEST_VARIANTS, keyword_share=0.7)
    print(f"recordings_seconds: {time.time() - t0:.0f}")
    # the decision rule, chosen on the validation voices' recordings only
    kv, sv, tv = decisions(qm, val_noise, args.window, args.hop)
    val = sweep(qm, names, (kv, sv, tv), hours_of(val_noise), val_speech, val_truth, args)
    rule, v_false, v_missed, v_wrong, _ = choose(val, args.val_false)
    print(f"rule_chosen_on_validation_voices: threshold {rule['threshold']} smooth {rule['smooth']} "
          f"refractory {rule['refractory']}")
    print(f"validation_false_detections_per_hour: {v_false:.2f}")
    low, high = poisson_interval(round(v_false * args.val_noise_minutes / 60), args.val_noise_minutes / 60)
    print(f"validation_false_detections_per_hour_95pct_interval: {low:.2f}-{high:.2f}")
    print(f"validation_keywords_missed_of_{len(val_truth)}: {v_missed}")
    print(f"validation_keywords_wrong_label: {v_wrong}")
    # the validation noise's near misses: its highest-scoring keyword decisions, whatever the threshold
    near = sorted(smooth_detections(kv, sv, [32768 if n in QUIET else 0 for n in names], rule["smooth"],
                                    rule["refractory"]), key=lambda d: -d[1])[:NEAR_MISSES]
    print(f"validation_top{NEAR_MISSES}_keyword_scores_on_noise_heard_in: "
          f"{heard_in([tv[i] for i, _ in near], [names[kv[i]] for i, _ in near], val_spoken)}")
    modes = (("windows", False), ("continuous", True)) if args.continuous else (("windows", False),)
    for mode, continuous in modes:
        s = stream_settings(args, continuous, rule)
        false = list(numpy_detections(as_recording(noise), qm, s))
        dets = list(numpy_detections(as_recording(speech), qm, s))
        hits, wrong, missed, extra = score_stream(dets, truth)
        tag = f"{mode}_w{args.window}_h{args.hop}" if not continuous else f"{mode}_h{args.hop}"
        print(f"{tag}_false_detections_per_hour_noise_and_unknown_speech: "
              f"{len(false) / (args.noise_minutes / 60):.2f}  ({len(false)} in {args.noise_minutes:g} min)")
        low, high = poisson_interval(len(false), args.noise_minutes / 60)
        print(f"{tag}_false_detections_per_hour_95pct_interval: {low:.2f}-{high:.2f}")
        heard = heard_in([d["t"] for d in false], [d["label"] for d in false], spoken)
        print(f"{tag}_false_detections_heard_in: {heard}")
        print(f"{tag}_keywords_spoken: {len(truth)}")
        print(f"{tag}_keywords_detected: {hits}")
        print(f"{tag}_keywords_missed: {missed}")
        print(f"{tag}_keywords_wrong_label: {wrong}")
        print(f"{tag}_extra_detections_in_keyword_recording: {extra}")
    # the trade-off on the test voices (for the record; the rule above was not chosen here)
    for r, f, m, w, _ in sweep(qm, names, decisions(qm, noise, args.window, args.hop), hours_of(noise),
                               speech, truth, args):
        if r["refractory"] == rule["refractory"] and (round(100 * r["threshold"]) % 5 == 0 or
                                                      abs(r["threshold"] - rule["threshold"]) < 0.035):
            print(f"test_sweep_thr{r['threshold']}_smooth{r['smooth']}: false_per_hour {f:.1f} "
                  f"missed_of_{len(truth)} {m} wrong {w}")


if __name__ == "__main__":
    main()
