"""The training recipe: the compiled BPTT loop equals the numpy one, the
schedule and its flags, the refit on all windows, weight decay, and bad flags."""
import numpy as np
import pytest

from edge_agent import synthetic
from edge_agent.learn import model as fmodel
from edge_agent.learn import train as T

from helpers import run_cli


def problem(dtype, seed=3, H=8, layers=2):
    rng = np.random.default_rng(seed)
    model = T.init_model(3, H, layers, 3, rng)
    model.mean, model.std = rng.normal(size=3).astype(dtype), rng.uniform(0.5, 2, 3).astype(dtype)
    T.set_params(model, {k: v.astype(dtype) for k, v in T.params_of(model).items()})
    x = rng.normal(size=(7, 9, 3)).astype(dtype)
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    mask = fmodel.valid_steps(7, 9, np.array([9, 3, 9, 1, 5, 9, 8])).astype(dtype)  # ragged windows
    return model, x, y, mask, np.array([1.0, 2.0, 0.5], dtype)


@pytest.mark.skipif(T._bptt is None, reason="the C loop is built by pip install")
@pytest.mark.parametrize("H", [8, 5])  # 8: the float32 vector path; 5: the scalar one
def test_compiled_loop_equals_the_numpy_loop(monkeypatch, H):
    model, x, y, mask, w = problem(np.float64, H=H)
    params = T.params_of(model)
    loss, logits, grads = T.loss_and_grads(model, params, x, y, mask, w)
    monkeypatch.setattr(T, "_bptt", None)
    loss_np, logits_np, grads_np = T.loss_and_grads(model, params, x, y, mask, w)
    assert loss == pytest.approx(loss_np, abs=1e-13)
    np.testing.assert_allclose(logits, logits_np, atol=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_np[k], atol=1e-13, err_msg=k)
    monkeypatch.undo()
    # float32 (the training type) tracks float64 to float32's precision
    model32, x32, _, mask32, w32 = problem(np.float32, H=H)
    loss32, _, grads32 = T.loss_and_grads(model32, T.params_of(model32), x32, y, mask32, w32)
    assert grads32["lstm.weight_hh_l0"].dtype == np.float32
    assert loss32 == pytest.approx(loss, rel=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads32[k], grads[k], atol=2e-5 * max(1.0, np.abs(grads[k]).max()), err_msg=k)


def test_default_epochs_follow_a_step_budget():
    cfg = T.TrainConfig()
    assert T.resolve_epochs(cfg, 40) == 600  # 2 batches of 32 per epoch: capped at 600
    assert T.resolve_epochs(cfg, 1000) == 38  # 32 batches per epoch
    assert T.resolve_epochs(T.TrainConfig(epochs=7), 40) == 7
    assert T.learning_rate(1e-2, 0, 600) == 1e-2
    assert T.learning_rate(1e-2, 600, 600) == pytest.approx(1e-2 / 64)


def test_weight_decay_is_decoupled():
    params = {"w": np.full(3, 2.0)}
    opt = T.Adam(params, lr=0.1, weight_decay=0.5)
    opt.step(params, {"w": np.zeros(3)})  # no gradient: only the decay moves the weights
    np.testing.assert_allclose(params["w"], 2.0 * (1 - 0.1 * 0.5))


@pytest.fixture(scope="module")
def windows():
    return synthetic.make_windows(48, 20, seed=11)


def test_refit_retrains_on_every_window_for_the_chosen_epochs(windows):
    x, y = windows
    cfg = T.TrainConfig(hidden=6, epochs=12, patience=12, val_fraction=0.25, refit=True, seed=2)
    refit, report = T.train(x, y, cfg=cfg)
    chosen = report["float"]["selection"]
    assert 1 <= chosen["best_epoch"] <= 12 and len(chosen["history"]) == 12
    assert report["float"]["refit_epochs"] == chosen["best_epoch"]
    assert len(report["float"]["history"]) == chosen["best_epoch"]
    assert "val_loss" not in report["float"]["history"][0]  # the refit holds nothing out
    cfg.refit = False
    held_out, report2 = T.train(x, y, cfg=cfg)
    assert "selection" not in report2["float"] and report2["float"]["best_epoch"] == chosen["best_epoch"]
    assert not np.array_equal(refit.head_w, held_out.head_w)  # more data, other weights


def test_input_noise_is_int8_steps_on_training_batches_only(monkeypatch, windows):
    """Every training batch carries Gaussian noise of input_noise int8 steps per
    channel (the channel's range over valid steps / 255); validation is clean."""
    x, y = windows
    x = x * np.array([1.0, 10.0, 0.1, 1.0, 1.0, 3.0])  # channels of very different ranges
    lengths = np.full(len(y), x.shape[1])
    lengths[:5] = 4
    x[:5, 4:] = 1e3  # padding past a window's length: outside the range the noise is drawn from
    valid = x[fmodel.valid_steps(len(x), x.shape[1], lengths)]
    step = (valid.max(0) - valid.min(0)) / 255
    np.testing.assert_allclose(T.input_noise_sd(x, fmodel.valid_steps(len(x), x.shape[1], lengths), 3.0), 3 * step)
    seen = {"train": [], "val": []}
    real = T.loss_and_grads

    def spy(model, params, xb, *args, need_grads=True, **kw):
        seen["train" if need_grads else "val"].append(np.array(xb, np.float64))
        return real(model, params, xb, *args, need_grads=need_grads, **kw)

    monkeypatch.setattr(T, "loss_and_grads", spy)
    cfg = T.TrainConfig(hidden=4, epochs=2, batch=len(y), val_fraction=0.25, patience=5, seed=5, input_noise=3.0,
                        dtype="float64")
    T.train(x, y, lengths, cfg=cfg)
    clean = set(map(bytes, x.reshape(len(x), -1)))
    assert seen["val"] and all(bytes(v.reshape(len(v), -1)[i]) in clean for v in seen["val"] for i in range(len(v)))
    noise = []
    for xb in seen["train"]:  # which windows they were: the nearest clean window, counted in steps
        for w in xb:
            k = np.argmin(np.abs((x - w) / step)[:, :4].sum((1, 2)))
            noise.append((w - x[k])[:lengths[k]])
    sd = np.concatenate(noise).std(0)
    np.testing.assert_allclose(sd, 3 * step, rtol=0.15)
    cfg.input_noise = 0.0
    seen["train"].clear()
    T.train(x, y, lengths, cfg=cfg)
    assert all(bytes(w) in clean for xb in seen["train"] for w in xb.reshape(len(xb), -1))


def test_qat_takes_the_same_recipe(windows):
    x, y = windows
    cfg = T.TrainConfig(hidden=6, epochs=3, val_fraction=0.25, refit=True, qat_epochs=2, seed=4)
    _, report = T.train(x, y, cfg=cfg, qat=True)
    assert "refit_epochs" in report["qat"]  # validation chose QAT's epochs, then a refit (or the start)
    assert T.planned_epochs(cfg, y, qat=True) == 2 * (3 + 2)


def test_cli_train_with_every_recipe_flag(tmp_path, demo_paths):
    out = tmp_path / "m.npz"
    proc = run_cli("train", "--data", demo_paths["data"], "--out", out, "--hidden", 6, "--epochs", 2,
                   "--lr", "0.02", "--batch-size", 64, "--val-fraction", "0.2", "--patience", 1,
                   "--weight-decay", "0.01", "--refit", "--qat", "--qat-epochs", 1, "--qat-lr", "0.001",
                   "--input-noise", "2.5")
    assert proc.returncode == 0, proc.stderr
    assert "refit on all windows" in proc.stdout and "float test accuracy" in proc.stdout
    assert fmodel.load_model(out).hidden == 6
    proc = run_cli("train", "--data", demo_paths["data"], "--out", out, "--hidden", 6, "--epochs", 1,
                   "--val-fraction", "0.2", "--no-refit")
    assert proc.returncode == 0, proc.stderr
    assert "refit" not in proc.stdout


@pytest.mark.parametrize("flag, value", [("--val-fraction", "1.5"), ("--lr", "0"), ("--batch-size", "0"),
                                         ("--patience", "0"), ("--weight-decay", "-1"), ("--lr", "nan"),
                                         ("--input-noise", "-1"), ("--input-noise", "nan")])
def test_cli_train_bad_recipe_flag_is_one_line(tmp_path, demo_paths, flag, value):
    out = tmp_path / "m.npz"
    proc = run_cli("train", "--data", demo_paths["data"], "--out", out, flag, value)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and flag in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
