"""device/ under the real MicroPython unix port equals the integer reference, bit for bit.

Golden vectors come from edge_agent/reference/; device/ (cell.py, kernels.py) must reproduce
every layer's h and c after every step, and the logits, for random models whose
weights, inputs and cell states are pushed to their bounds, with an 8-bit state
and with a 16-bit one (docs/arithmetic.md, "16-bit hidden state").
"""

import numpy as np
import pytest

from edge_agent import blob
from edge_agent.board import unixport
from edge_agent.learn import model as fmodel
from edge_agent.quant import quantize
from edge_agent.quant.fixedpoint import OverflowProofError
from edge_agent.reference.inputs import quantize_raw
from edge_agent.reference.lstm import IntegerLSTM, Trace
from edge_agent.reference.stream import decide, stream_decisions

N_MODELS = 200


def random_quant_model(seed: int, layers: int | None = None, h_bits: int = 8, x_bits: int = 8):
    """A random model, calibrated on quiet data so real inputs overdrive it
    (1 or 2 layers, or `layers`: the draw is the same either way), with an
    h_bits hidden state and x_bits inputs."""
    rng = np.random.default_rng(seed)
    layers = layers or int(rng.integers(1, 3))
    n_in, hidden, classes = int(rng.integers(1, 9)), int(rng.integers(1, 25)), int(rng.integers(2, 7))
    scale = float(rng.choice([0.1, 0.5, 2.0, 8.0]))  # 8.0 saturates gates and cells

    def layer(width):
        return fmodel.LSTMLayer(rng.normal(0, scale, (4 * hidden, width)),
                                rng.normal(0, scale, (4 * hidden, hidden)),
                                rng.normal(0, scale, 4 * hidden), rng.normal(0, 1, 4 * hidden))
    fm = fmodel.FloatModel([layer(n_in if k == 0 else hidden) for k in range(layers)],
                           rng.normal(0, scale, (classes, hidden)), rng.normal(0, 1, classes),
                           rng.normal(0, 1, n_in), rng.uniform(0.5, 2, n_in))
    calib = rng.normal(fm.mean, float(rng.choice([0.3, 1.0, 3.0])), (4, 10, n_in))
    return quantize(fm, calib, h_bits=h_bits, x_bits=x_bits), rng


def extreme_inputs(rng, shape, bits: int = 8):
    """int8 (or int16: bits) inputs, a third of them at either end of the range."""
    top = 1 << (bits - 1)
    x = rng.integers(-top, top, shape)
    edge = rng.random(shape) < 0.33
    return np.where(edge, rng.choice([-top, top - 1], shape), x)


@pytest.fixture(scope="module")
def micropython():
    return unixport.binary()


def run_traced(qm, x_q: np.ndarray, lengths: np.ndarray) -> tuple:
    """device/evalfile.py windows with trace under the unix port, for either state width."""
    return unixport.run_windows(blob.pack(qm), x_q, lengths, True, len(qm.layers), qm.hidden, qm.n_classes,
                                timeout=600, h_bits=qm.h_bits)


def assert_traces_equal(qm, x_q, lengths, got, h, c, what: str) -> Trace:
    """The device's (logits, h, c) equal the reference's, every layer after every step."""
    trace = Trace()
    try:
        want = IntegerLSTM(qm).run(x_q, lengths, trace)
    except OverflowProofError:  # pragma: no cover - the proof makes this unreachable
        pytest.fail(f"{what}: reference overflowed a proven model")
    for w, n in enumerate(lengths):
        for k in range(len(qm.layers)):
            assert np.array_equal(h[w, :n, k], trace.hidden[k][w, :n]), f"{what} layer {k} h"
            assert np.array_equal(c[w, :n, k], trace.cell[k][w, :n]), f"{what} layer {k} c"
    assert np.array_equal(got, want), f"{what} logits"
    return trace


@pytest.mark.parametrize("first", range(0, N_MODELS, 20))
def test_state_and_logits_bit_exact(micropython, first):
    for seed in range(first, first + 20):
        qm, rng = random_quant_model(seed)
        x_q = extreme_inputs(rng, (3, 12, qm.n_inputs))
        lengths = np.array([12, int(rng.integers(1, 12)), 12])
        trace = Trace()
        try:
            want = IntegerLSTM(qm).run(x_q, lengths, trace)
        except OverflowProofError:  # pragma: no cover - the proof makes this unreachable
            pytest.fail(f"seed {seed}: reference overflowed a proven model")
        got, h, c = unixport.run_windows(blob.pack(qm), x_q, lengths, trace=True,
                                         n_layers=len(qm.layers), hidden=qm.hidden,
                                         n_classes=qm.n_classes)
        for w, n in enumerate(lengths):
            for k in range(len(qm.layers)):
                assert np.array_equal(h[w, :n, k], trace.hidden[k][w, :n]), f"seed {seed} layer {k} h"
                assert np.array_equal(c[w, :n, k], trace.cell[k][w, :n]), f"seed {seed} layer {k} c"
        assert np.array_equal(got, want), f"seed {seed} logits"


N_WIDE_MODELS = 120


@pytest.mark.parametrize("first", range(0, N_WIDE_MODELS, 20))
def test_state16_and_logits_bit_exact(micropython, first):
    """The same with a 16-bit state: 1 to 3 layers, weights, inputs and cells at their bounds."""
    for seed in range(first, first + 20):
        qm, rng = random_quant_model(3000 + seed, 1 + seed % 3, h_bits=16)
        x_q = extreme_inputs(rng, (3, 12, qm.n_inputs))
        lengths = np.array([12, int(rng.integers(1, 12)), 12])
        got, h, c = run_traced(qm, x_q, lengths)
        assert_traces_equal(qm, x_q, lengths, got, h, c, f"seed {3000 + seed}")


def test_state16_saturation_is_exercised():
    """The 16-bit models above reach the cell's clamp, and h near its extremes
    (|h| <= 32766: o * tanh(c) is at most 32767^2, rounded by 2^15)."""
    hit_c = hit_h = 0
    for seed in range(0, N_WIDE_MODELS, 3):
        qm, rng = random_quant_model(3000 + seed, 1 + seed % 3, h_bits=16)
        trace = Trace()
        IntegerLSTM(qm).run(extreme_inputs(rng, (3, 12, qm.n_inputs)), None, trace)
        hit_c += any(np.abs(c).max() >= 32767 for c in trace.cell)
        hit_h += any(np.abs(h).max() >= 32000 for h in trace.hidden)
    assert hit_c >= 2 and hit_h >= 5


def test_saturation_is_exercised():
    """The random models above do reach the clamps: the conformance is not vacuous."""
    hit_c = hit_h = 0
    for seed in range(0, N_MODELS, 5):
        qm, rng = random_quant_model(seed)
        trace = Trace()
        IntegerLSTM(qm).run(extreme_inputs(rng, (3, 12, qm.n_inputs)), None, trace)
        hit_c += any(np.abs(c).max() >= 32767 for c in trace.cell)
        hit_h += any(h.max() == 127 or h.min() == -128 for h in trace.hidden)
    assert hit_c >= 3 and hit_h >= 10


@pytest.mark.parametrize("seed", range(28))
def test_window_modes_match(micropython, seed):
    qm, rng = random_quant_model(1000 + seed, h_bits=16 if seed >= 24 else 8)  # the last 4: a 16-bit state
    window = int(rng.integers(1, 15))
    hop = int(rng.integers(1, window + 1))
    continuous = bool(seed % 3 == 2)
    raw = bool(seed % 2)
    total = int(rng.integers(window, 60))
    if raw:  # int16 readings, quantized by the device's own kernel
        samples = rng.integers(-32768, 32768, (total, qm.n_inputs))
        x_q = quantize_raw(samples, qm.inputs)
    else:
        samples = x_q = extreme_inputs(rng, (total, qm.n_inputs))
    assert_stream_equal(qm, samples, x_q, window, hop, continuous, raw)


def assert_stream_equal(qm, samples, x_q, window: int, hop: int, continuous: bool, raw: bool) -> None:
    """device/stream.py under the unix port, fed `samples` (raw readings, or the model's
    inputs), decides when, what and with which logits the reference does on x_q."""
    want = stream_decisions(IntegerLSTM(qm), x_q, window, hop, continuous)
    got = unixport.run_stream(blob.pack(qm), samples, window, hop, continuous, raw, qm.n_classes)
    assert [t for t, *_ in got] == [t for t, _ in want]
    for (t, cls, score, logits), (_, ref_logits) in zip(got, want):
        assert np.array_equal(logits, ref_logits)
        ref_cls, ref_score = decide(ref_logits, qm)
        assert (cls, score) == (int(ref_cls[0]), int(ref_score[0]))
