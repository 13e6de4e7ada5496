"""The training example: whole-network gradients, learning, reproducibility, save/load, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import idx_bytes

from cnnbp_ref import data, get_num_threads, nn
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.optim import Adam
from cnnbp_ref.train import build_model, evaluate, fit, load_params, main, save_params


@pytest.fixture(scope="module")
def digits():
    images, labels = data.load_digits()
    return data.train_test_split(images, labels, 0.2, seed=0)


def test_whole_network_gradient_matches_finite_differences():
    """The chained backward of the training model equals central differences (float64)."""
    rng = np.random.default_rng(1)
    model = build_model(image_size=8, seed=1, dtype=np.float64)
    x = rng.standard_normal((3, 1, 8, 8))
    target = np.array([0, 3, 7])

    def loss_of_input(x_probe):
        return float(cross_entropy(model.forward(x_probe), target, label_smoothing=0.1))

    logits = model.forward(x)
    grad_x = model.backward(cross_entropy_backward(logits, target, label_smoothing=0.1))
    check_gradient(loss_of_input, x, grad_x, tol=1e-7)

    for param, grad in zip(model.params, [g.copy() for g in model.grads], strict=True):
        original = param.copy()

        def loss_of_param(value, param=param):
            param[...] = value
            return float(cross_entropy(model.forward(x), target, label_smoothing=0.1))

        check_gradient(loss_of_param, original, grad, tol=1e-7)
        param[...] = original


def test_short_training_reduces_the_loss_clearly(digits):
    x_train, y_train, x_test, y_test = digits
    model = build_model(seed=0)
    before, _ = evaluate(model, x_test, y_test)
    history = fit(
        model,
        Adam(model.params, lr=3e-3),
        (x_train, y_train),
        (x_test, y_test),
        2,
        32,
        show_progress=False,
        log=None,
    )
    assert before > 2.0  # about log(10) at initialisation
    assert history[-1].test_loss < 0.5 * before
    assert history[-1].test_accuracy > 0.8


def test_same_seed_gives_the_same_run(digits):
    x_train, y_train, x_test, y_test = digits
    runs = []
    for _ in range(2):
        model = build_model(seed=5)
        fit(
            model,
            Adam(model.params),
            (x_train[:256], y_train[:256]),
            (x_test, y_test),
            1,
            32,
            seed=5,
            show_progress=False,
            log=None,
        )
        runs.append([p.copy() for p in model.params])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    other = build_model(seed=6)
    assert not np.array_equal(other.params[0], runs[0][0])


def test_save_and_load_round_trip(tmp_path):
    model = build_model(seed=0)
    path = tmp_path / "params.npz"
    save_params(path, model)
    fresh = build_model(seed=1)
    load_params(path, fresh)
    for a, b in zip(model.params, fresh.params, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        ValueError, match=r"parameter 0 has shape \(16, 1, 3, 3\), the model expects \(16, 3, 3, 3\)"
    ):
        load_params(path, build_model(in_channels=3))
    np.savez(tmp_path / "short.npz", np.zeros(1))
    with pytest.raises(ValueError, match="holds 1 arrays but the model has 6 parameters"):
        load_params(tmp_path / "short.npz", fresh)


def test_build_model_rejects_sizes_the_pooling_cannot_halve_twice():
    with pytest.raises(ValueError, match="image_size must be divisible by 4, got 10"):
        build_model(image_size=10)


def test_cli_trains_saves_and_loads(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    history = main(["--epochs", "1", "--no-progress", "--save", str(path)])
    assert len(history) == 1 and path.exists()
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "Conv2d(1, 16" in out
    reloaded = main(["--epochs", "0", "--no-progress", "--load", str(path)])
    assert reloaded == []
    assert f"{history[-1].test_accuracy:.2%}" in capsys.readouterr().out


def write_random_idx(folder, count, size):
    """MNIST-format training files of ``count`` random ``size x size`` images and labels in ``folder``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def test_cli_reads_idx_files(tmp_path):
    """--data DIR trains on MNIST-format files (here tiny 8x8 ones the test writes)."""
    write_random_idx(tmp_path, 40, 8)
    history = main(["--data", str(tmp_path), "--epochs", "1", "--no-progress", "--batch-size", "8"])
    assert len(history) == 1 and np.isfinite(history[0].train_loss)


def test_cli_threads_split_mnist_sized_layers_to_the_same_result(tmp_path):
    """--threads 2 runs the 28x28 model's second conv and first pool on workers: same training, to rounding."""
    write_random_idx(tmp_path, 48, 28)
    argv = ["--data", str(tmp_path), "--epochs", "1", "--no-progress", "--test-fraction", "0.25"]
    one = main(argv)
    two = main([*argv, "--threads", "2"])
    assert get_num_threads() == 1  # restored after the run
    assert two[0].train_loss == pytest.approx(one[0].train_loss, rel=1e-4)
    assert two[0].test_loss == pytest.approx(one[0].test_loss, rel=1e-4)


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "-1"],
        ["--lr", "0"],
        ["--batch-size", "0"],
        ["--label-smoothing", "2"],
        ["--threads", "0"],
    ],
)
def test_cli_rejects_bad_options(argv):
    with pytest.raises(SystemExit):
        main(argv)


def test_layers_are_the_documented_architecture():
    kinds = [type(layer).__name__ for layer in build_model()]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    mnist_head = build_model(image_size=28)[-1]
    assert isinstance(mnist_head, nn.Linear) and mnist_head.weight.shape == (10, 32 * 7 * 7)
