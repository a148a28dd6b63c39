"""The float model: PyTorch parity and the loaders."""
import numpy as np
import pytest

from edge_agent.learn import model as fmodel
from edge_agent.errors import UserError

try:  # only the tests marked needs_torch need it: the numpy ones run without
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch: pip install 'edge-agent[torch]'")


from edge_agent.learn.torchnet import make as Net  # noqa: E402


@needs_torch
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_forward_equals_torch(tmp_path, layers):
    torch.manual_seed(layers)
    net = Net(5, 12, layers, 3)
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    path = tmp_path / "m.pt"
    torch.save({"state_dict": net.state_dict(), "mean": mean, "std": std}, path)
    fm = fmodel.load_model(path)
    x = np.random.default_rng(layers).normal(0, 2, (7, 30, 5)).astype(np.float32)
    with torch.no_grad():
        want = net((torch.tensor(x) - mean) / std).numpy()
    np.testing.assert_allclose(fm.forward(x), want, atol=1e-5, rtol=0)


@needs_torch
def test_bare_state_dict_and_npz_round_trip(tmp_path):
    torch.manual_seed(0)
    net = Net(4, 8, 2, 2)
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    fm = fmodel.load_model(tmp_path / "bare.pt")
    assert np.all(fm.mean == 0) and np.all(fm.std == 1) and len(fm.layers) == 2
    fm.class_names = ["no", "yes"]
    fm.save_npz(tmp_path / "m.npz")
    again = fmodel.load_model(tmp_path / "m.npz")
    x = np.random.default_rng(0).normal(size=(3, 10, 4))
    np.testing.assert_allclose(again.forward(x), fm.forward(x), atol=1e-5)
    assert again.class_names == ["no", "yes"]
    assert again.fingerprint() == fm.fingerprint()
    # the npz keys are the state_dict's: torch loads them straight back
    with np.load(tmp_path / "m.npz") as z:
        state = {k: torch.tensor(z[k]) for k in z.files if k.startswith(("lstm.", "head."))}
    Net(4, 8, 2, 2).load_state_dict(state)


@needs_torch
def test_head_found_after_lstm_with_other_names(tmp_path):
    state = {"encoder.rnn.weight_ih_l0": torch.randn(8, 3), "encoder.rnn.weight_hh_l0": torch.randn(8, 2),
             "encoder.rnn.bias_ih_l0": torch.randn(8), "encoder.rnn.bias_hh_l0": torch.randn(8),
             "classifier.weight": torch.randn(4, 2), "classifier.bias": torch.randn(4)}
    torch.save(state, tmp_path / "x.pt")
    fm = fmodel.load_model(tmp_path / "x.pt")
    assert fm.n_classes == 4 and fm.hidden == 2 and fm.n_inputs == 3


@needs_torch
def test_refuses_unsafe_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a loadable PyTorch checkpoint"):
        fmodel.load_model(tmp_path / "evil.pt")


@needs_torch
def test_refuses_bidirectional(tmp_path):
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    state = dict(lstm.state_dict(), **{"fc.weight": torch.randn(2, 4), "fc.bias": torch.randn(2)})
    torch.save(state, tmp_path / "bi.pt")
    with pytest.raises(UserError, match="bidirectional"):
        fmodel.load_model(tmp_path / "bi.pt")


@needs_torch
def test_wrong_mean_shape_named(tmp_path):
    net = Net(4, 8, 1, 2)
    torch.save({"state_dict": net.state_dict(), "mean": torch.zeros(3)}, tmp_path / "m.pt")
    with pytest.raises(UserError, match="mean has shape"):
        fmodel.load_model(tmp_path / "m.pt")


def test_lengths_read_last_valid_step():
    rng = np.random.default_rng(2)
    from helpers import random_model
    fm = random_model(rng, n_in=3, hidden=5, layers=2, classes=2)
    x = rng.normal(size=(4, 9, 3))
    lengths = np.array([9, 5, 1, 7])
    out = fm.forward(x, lengths)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(out[i], fm.forward(x[i:i + 1, :n])[0], atol=1e-12)
