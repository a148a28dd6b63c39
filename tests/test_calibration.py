"""Calibration choices: percentile and MSE ranges, the cell format they pick,
quantize's automatic choice, and its flag."""
import numpy as np
import pytest

from edge_agent import synthetic
from edge_agent.blob import pack
from edge_agent.errors import UserError
from edge_agent.learn import train as T
from edge_agent.quant.calibrate import quantize_calibrated
from edge_agent.quant.ptq import CALIBRATIONS, cell_frac, cell_peak, input_range, quantize

from helpers import run_cli


def test_ranges_clip_outliers_only_when_asked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100_000, 2))
    x[0] = 40.0  # one outlier per channel
    lo, hi = input_range(x, "minmax")
    assert np.all(hi == 40.0)
    lo, hi = input_range(x, "percentile")
    assert np.all(hi < 6) and np.all(lo > -6)  # the outlier no longer sets the step
    heavy = rng.standard_t(2, size=(100_000, 1))  # heavy tails: mse weighs clipping against a finer step

    def mse(lo, hi):
        step = (hi - lo) / 255
        return float(((np.clip(np.round((heavy - lo) / step), 0, 255) * step + lo - heavy) ** 2).mean())

    lo, hi = input_range(heavy, "mse")
    full = input_range(heavy, "minmax")
    assert mse(lo, hi) <= mse(*full)
    for clip in (0.01, 1.0):  # no candidate it tried does better
        assert mse(lo, hi) <= mse(*np.percentile(heavy, [clip, 100 - clip], axis=0))
    cells = np.concatenate([rng.normal(size=100_000), [30.0]])
    assert cell_frac(cell_peak(cells, "minmax")) == 10  # 30 * 2**10 < 32767
    assert cell_frac(cell_peak(cells, "percentile")) > 10
    assert cell_frac(cell_peak(cells, "mse")) >= 10


@pytest.fixture(scope="module")
def small_model():
    x, y = synthetic.make_windows(64, 30, seed=3)
    model, _ = T.train(x, y, cfg=T.TrainConfig(hidden=8, epochs=3, seed=1))
    return model, x


def test_auto_keeps_the_candidate_that_agrees_most_on_held_out_windows(small_model):
    model, x = small_model
    qm, report = quantize_calibrated(model, x)
    scores = report["candidates"]
    assert set(scores) == set(CALIBRATIONS) | {f"{c}+bias" for c in CALIBRATIONS}
    best = max(s["agreement"] for s in scores.values())
    assert scores[report["chosen"]]["agreement"] == best == report["agreement"]
    name = report["chosen"]
    again = quantize(model, x, calibration=name.removesuffix("+bias"), bias_correction=name.endswith("+bias"))
    assert pack(qm) == pack(again)  # the chosen one, quantized again on every window
    forced, report = quantize_calibrated(model, x, calibration="percentile")
    assert report["chosen"] == "percentile" and list(report["candidates"]) == ["percentile"]
    with pytest.raises(UserError, match="calibration"):
        quantize(model, x, calibration="nope")
    with pytest.raises(UserError, match="--state-bits"):
        quantize_calibrated(model, x, state_bits="12")


def test_candidates_are_judged_on_windows_they_were_not_calibrated_on(small_model):
    """Each fold's blob is calibrated on one half and judged on the other (a
    candidate judged on its own windows is flattered by its ranges); the chosen
    one is then calibrated on every window."""
    from edge_agent.quant import calibrate

    model, x = small_model
    folds = calibrate._folds(len(x))
    assert len(folds) == 2
    for fit, judge in folds:
        assert len(np.intersect1d(fit, judge)) == 0 and len(fit) + len(judge) == len(x)
    seen = []
    real = calibrate.quantize

    def spy(model_, calib, *args, **kwargs):
        seen.append(len(calib))
        return real(model_, calib, *args, **kwargs)

    calibrate.quantize = spy
    try:
        _, report = quantize_calibrated(model, x, calibration="minmax")
    finally:
        calibrate.quantize = real
    assert seen == [len(folds[0][0]), len(folds[1][0]), len(x)]  # two folds, then all windows
    (fit, judge), = calibrate._folds(3)  # too few to split: judged on themselves
    assert np.array_equal(fit, judge)


def test_cli_quantize_calibration_flag(tmp_path, demo_paths):
    out = tmp_path / "m.bin"
    proc = run_cli("quantize", "--model", demo_paths["model"], "--calib", demo_paths["data"], "--out", out,
                   "--calibration", "mse", "--calib-windows", 50)
    assert proc.returncode == 0, proc.stderr
    assert "mse calibration" in proc.stdout and out.exists()
    proc = run_cli("quantize", "--model", demo_paths["model"], "--calib", demo_paths["data"], "--out", out,
                   "--calibration", "widest")
    assert proc.returncode != 0 and "--calibration" in proc.stderr and "Traceback" not in proc.stderr


def test_bias_correction_moves_only_the_biases(small_model):
    model, x = small_model
    plain = quantize(model, x)
    corrected = quantize(model, x, bias_correction=True)
    for a, b in zip(plain.layers, corrected.layers):
        assert np.array_equal(a.wx, b.wx) and np.array_equal(a.wh, b.wh) and a.c_frac == b.c_frac
        assert not np.array_equal(a.bx, b.bx)
        # a correction of the weights' rounding, not a new bias: at most a few input steps per row
        assert np.abs(a.bx.astype(np.int64) - b.bx).max() <= 4 * 127 * a.wx.shape[1]


def test_auto_state_width_takes_16_bits_only_where_8_lose_decisions(small_model):
    from test_state16 import exact_model

    model, _ = small_model  # 8 bits keep the float decisions on 128 windows: 16 is not even tried
    x = synthetic.make_windows(128, 30, seed=5)[0]
    qm, report = quantize_calibrated(model, x, state_bits="auto", input_bits="auto")
    assert report["agreement"] >= 0.99 and report["h_bits"] == qm.h_bits == 8
    assert not any("/h16" in name for name in report["candidates"])
    # 64 windows cannot show a 1 % loss: the finest format that keeps as many decisions
    qm, report = quantize_calibrated(model, x[:64], state_bits="auto", input_bits="auto")
    rank = lambda tag: max((s["agreement"], -s["at_risk"]) for n, s in report["candidates"].items()
                           if n.endswith(tag) and (tag or "/" not in n))
    assert (qm.h_bits, qm.x_bits) == (report["h_bits"], report["x_bits"]) == (16, 16)
    assert rank("/h16x16") >= rank("/h16") >= rank("")
    fm, windows = exact_model(2)  # long memory, exact weights and inputs: the state's resolution decides
    qm, report = quantize_calibrated(fm, windows, state_bits="auto")
    best8 = max(s["agreement"] for n, s in report["candidates"].items() if not n.endswith("/h16"))
    assert best8 < 0.99
    assert report["h_bits"] == qm.h_bits == 16 and report["agreement"] > best8
