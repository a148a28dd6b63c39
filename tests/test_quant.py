"""PTQ: the int32 proof, and what the quantized model gets right."""
import numpy as np
import pytest

from edge_agent import blob, dataset
from edge_agent.learn import model as fmodel
from edge_agent.evaluate import evaluate
from edge_agent.reference.inputs import model_inputs
from edge_agent.quant import quantize
from edge_agent.quant.fixedpoint import INT32_MAX, OverflowProofError
from edge_agent.reference.lstm import IntegerLSTM

from helpers import random_model


def _scaled(fm: fmodel.FloatModel, alpha: float) -> fmodel.FloatModel:
    layers = [fmodel.LSTMLayer(l.w_ih * alpha, l.w_hh, l.b_ih, l.b_hh) for l in fm.layers]
    return fmodel.FloatModel(layers, fm.head_w, fm.head_b, fm.mean, fm.std)


def _worst_case_inputs(layer: blob.QuantLayer) -> np.ndarray:
    """Per row, the int8 input that drives that row's accumulator furthest from 0."""
    sign = np.sign(layer.wx.astype(np.int64)) * np.sign(layer.bx.astype(np.int64))[:, None]
    return np.where(sign >= 0, 127, -128)


def test_proof_refuses_overflowing_model(rng):
    fm = _scaled(random_model(rng, hidden=4, layers=1), 1e6)
    x = rng.normal(size=(8, 10, 6))
    with pytest.raises(OverflowProofError, match=r"layer 0 gate \w+ unit \d+ input accumulator"):
        quantize(fm, x)


def test_proof_accepts_tight_model_and_it_cannot_overflow(rng):
    base = random_model(rng, hidden=4, layers=1)
    x = rng.normal(size=(8, 10, 6))
    lo, hi = 1.0, 1e6  # bisect the weight scale to the edge of what int32 allows
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        try:
            quantize(_scaled(base, mid), x)
            lo = mid
        except OverflowProofError:
            hi = mid
    assert hi / lo < 1.0001
    qm = quantize(_scaled(base, lo), x)
    layer = qm.layers[0]
    bound = np.abs(layer.bx.astype(np.int64)) + 128 * np.abs(layer.wx.astype(np.int64)).sum(1)
    headroom = INT32_MAX - (bound * layer.mx + (1 << (layer.sx.astype(np.int64) - 1)))
    assert headroom.min() >= 0
    # tight: the worst row uses more than half of int32 (one more shift bit would not fit)
    assert (bound * layer.mx).max() > INT32_MAX // 4
    # and the reference, which checks int32 as it runs, survives the worst inputs
    engine = IntegerLSTM(qm)
    worst = _worst_case_inputs(layer)
    engine.run(worst[:, None, :])  # each row's worst input, as a one-step window


@pytest.mark.parametrize("field,what", [("mh", "recurrent"), ("mx", "input")])
def test_reference_catches_overflow_in_a_tampered_blob(rng, imu_windows, field, what):
    fm = random_model(rng, hidden=8, layers=1)
    x, _ = imu_windows
    qm = quantize(fm, x)
    getattr(qm.layers[0], field)[:] = 2**30  # a multiplier the proof would never choose
    with pytest.raises(OverflowProofError, match=f"layer 0 {what} requantization"):
        IntegerLSTM(qm).run(model_inputs(qm, x))


def test_streaming_equals_batch_and_lengths_freeze(rng, imu_windows):
    fm = random_model(rng, hidden=8, layers=2)
    x, _ = imu_windows
    qm = quantize(fm, x)
    x_q = model_inputs(qm, x[:6])
    engine = IntegerLSTM(qm)
    whole = engine.run(x_q)
    engine.reset(6)
    for t in range(x_q.shape[1]):
        engine.step(x_q[:, t])
    assert np.array_equal(engine.logits(), whole)
    lengths = np.array([50, 20, 1, 33, 49, 50])
    ragged = engine.run(x_q, lengths)
    for i, n in enumerate(lengths):
        assert np.array_equal(ragged[i], engine.run(x_q[i:i + 1, :n])[0])


def test_input_quantization_tracks_float(rng, imu_windows):
    fm = random_model(rng, hidden=8, layers=1)
    x, _ = imu_windows
    qm = quantize(fm, x)
    x_q = model_inputs(qm, x)
    assert x_q.min() >= -128 and x_q.max() <= 127
    back = (x_q - qm.inputs.zero) * qm.inputs.scale
    assert np.all(np.abs(back - x) <= qm.inputs.scale * 0.51 + np.abs(x) * 2e-4)


def test_demo_model_int8_matches_float(demo_paths):
    fm = fmodel.load_model(demo_paths["model"])
    qm = blob.read(demo_paths["blob"])
    data = dataset.load(demo_paths["data"])
    summary, _ = evaluate(fm, qm, data.test)
    assert summary["agreement"] >= 0.98
    assert summary["int8_accuracy"] >= summary["float_accuracy"] - 0.01
