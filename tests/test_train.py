"""numpy training: exact gradients, PyTorch parity, determinism, and QAT's grids."""
import json

import numpy as np
import pytest

from edge_agent import recording, synthetic
from edge_agent.learn import model as fmodel
from edge_agent.learn import train as T
from edge_agent.reference.inputs import model_inputs
from edge_agent.quant import quantize
from edge_agent.reference.lstm import IntegerLSTM

from helpers import run_cli


def small_problem(seed=0):
    rng = np.random.default_rng(seed)
    model = T.init_model(3, 4, 2, 3, rng)
    model.mean, model.std = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    x = rng.normal(size=(5, 6, 3))
    y = np.array([0, 1, 2, 1, 0])
    mask = fmodel.valid_steps(5, 6, np.array([6, 3, 6, 1, 5])).astype(np.float64)  # ragged windows too
    return model, x, y, mask, np.array([1.0, 2.0, 0.5])


def test_gradients_match_finite_differences_for_every_parameter():
    model, x, y, mask, w = small_problem()
    params = T.params_of(model)
    _, _, grads = T.loss_and_grads(model, params, x, y, mask, w)
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + 1e-6
            up = T.loss_and_grads(model, params, x, y, mask, w, need_grads=False)[0]
            value[idx] = old - 1e-6
            down = T.loss_and_grads(model, params, x, y, mask, w, need_grads=False)[0]
            value[idx] = old
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-4, atol=1e-8, err_msg=name)


try:  # only the tests marked needs_torch need it: the numpy ones run without
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch: pip install 'edge-agent[torch]'")


from edge_agent.learn.torchnet import make as Net  # noqa: E402


@needs_torch
def test_gradients_equal_torch_autograd():
    model, x, y, _, _ = small_problem(1)
    params = T.params_of(model)
    loss, _, grads = T.loss_and_grads(model, params, x, y, fmodel.valid_steps(5, 6, None).astype(np.float64), np.ones(3))
    net = Net(3, 4, 2, 3).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    xn = torch.tensor((x - model.mean) / model.std)
    torch_loss = torch.nn.functional.cross_entropy(net(xn), torch.tensor(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), abs=1e-12)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), atol=1e-12, err_msg=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = synthetic.make_windows(120, 30, seed=5)
    cfg = T.TrainConfig(hidden=8, layers=2, epochs=3, seed=7)
    model, report = T.train(x, y, cfg=cfg, class_names=list(synthetic.CLASSES))
    path = tmp_path_factory.mktemp("m") / "model.npz"
    model.save_npz(path)
    return model, report, path, x, y, cfg


@needs_torch
def test_train_writes_a_torch_checkpoint_that_quantize_loads(trained, tmp_path):
    from edge_agent.learn.torchnet import save_checkpoint

    model, _, _, x, _, _ = trained
    save_checkpoint(model, tmp_path / "m.pt")
    again = fmodel.load_model(tmp_path / "m.pt")
    np.testing.assert_allclose(again.forward(x), model.forward(x), atol=1e-5)
    assert again.class_names == list(synthetic.CLASSES)


@needs_torch
def test_trained_model_in_torch_gives_the_same_logits(trained):
    model, _, path, x, _, _ = trained
    with np.load(path) as z:
        state = {k: torch.tensor(z[k]) for k in z.files if k.startswith(("lstm.", "head."))}
        mean, std = z["mean"], z["std"]
    net = Net(6, 8, 2, 4)
    net.load_state_dict(state)  # the .npz keys are the state_dict's
    with torch.no_grad():
        want = net(torch.tensor((x - mean) / std, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(fmodel.load_model(path).forward(x), want, atol=1e-5)


def test_training_is_deterministic_under_a_seed(trained):
    model, report, _, x, y, cfg = trained
    again, report2 = T.train(x, y, cfg=cfg, class_names=list(synthetic.CLASSES))
    for (k, a), b in zip(model.arrays().items(), again.arrays().values()):
        assert np.array_equal(a, b), k
    assert report == report2
    cfg.seed = 8
    other, _ = T.train(x, y, cfg=cfg, class_names=list(synthetic.CLASSES))
    assert not np.array_equal(other.head_w, model.head_w)


def test_fake_quant_forward_tracks_the_integer_model(trained):
    """QAT trains what the board runs: its forward, on PTQ's own grids, matches
    the integer reference's decisions."""
    model, _, _, x, y, _ = trained
    hooks = T.FakeQuant(model, x)
    _, fq_logits, _ = T.loss_and_grads(model, T.params_of(model), x, y, fmodel.valid_steps(len(x), x.shape[1], None).astype(np.float64),
                                       np.ones(4), hooks, need_grads=False)
    int_logits = IntegerLSTM(hooks.qm).run(model_inputs(hooks.qm, x)) / 4096
    assert np.mean(fq_logits.argmax(1) == int_logits.argmax(1)) >= 0.97
    assert np.abs(fq_logits - int_logits).mean() < 0.02 * np.abs(int_logits).mean() + 0.01


def test_qat_fine_tunes_and_exports_through_ptq(trained):
    model, _, _, x, y, cfg = trained
    cfg.seed = 7
    qat_model, report = T.train(x, y, cfg=cfg, class_names=list(synthetic.CLASSES), qat=True)
    assert len(report["qat"]["history"]) >= 1
    assert not np.array_equal(qat_model.head_w, model.head_w)  # fine-tuning moved the weights
    quantize(qat_model, x)  # and the result goes through the same quantizer


def test_cli_train_on_csv_folder_then_plot(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for k in range(2):
        x, labels = synthetic.make_recording(segments=6, seconds=2.0, seed=k)
        recording.save_csv(folder / f"r{k}.csv", x, 50, synthetic.CHANNELS,
                           [synthetic.CLASSES[i] for i in labels])
    config = tmp_path / "c.yaml"
    config.write_text("window: 50\nhop: 25\n")
    out = tmp_path / "m.npz"
    proc = run_cli("train", "--data", folder, "--out", out, "--epochs", 2, "--hidden", 8, "--config", config)
    assert proc.returncode == 0, proc.stderr
    assert "float test accuracy" in proc.stdout
    model = fmodel.load_model(out)
    assert model.class_names == sorted(synthetic.CLASSES) and model.n_inputs == 6
    blob_path = tmp_path / "m.bin"
    proc = run_cli("quantize", "--model", out, "--calib", folder, "--config", config, "--out", blob_path)
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "r.png"
    proc = run_cli("evaluate", "--model", out, "--blob", blob_path, "--data", folder, "--config", config,
                   "--plot", png, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_bad_input_is_one_line(tmp_path, demo_paths):
    proc = run_cli("train", "--data", demo_paths["data"], "--out", tmp_path / "m.npz", "--layers", 5)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "--layers" in proc.stderr
