"""The training example: whole-network gradients, learning, reproducibility, save/load, the CLI."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from helpers import idx_bytes

from cnnbp_ref import data, get_num_threads, nn
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.optim import Adam
from cnnbp_ref.train import (
    build_model,
    build_resnet,
    evaluate,
    fit,
    load_params,
    main,
    npz_path,
    save_params,
)


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
    assert save_params(path, model) == path
    fresh = build_model(seed=1)
    load_params(path, fresh)
    for a, b in zip(model.params, fresh.params, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        ValueError,
        match=r"params\.npz: does not fit the model: state\['0\.weight'\] has shape \(16, 1, 3, 3\), "
        r"the model expects \(16, 3, 3, 3\)",
    ):
        load_params(path, build_model(in_channels=3))
    np.savez(tmp_path / "short.npz", np.zeros(1))
    with pytest.raises(ValueError, match=r"does not fit the model: missing 0\.weight"):
        load_params(tmp_path / "short.npz", fresh)


def test_save_appends_npz_as_numpy_does_and_load_finds_it(tmp_path):
    model = build_model(seed=0)
    written = save_params(tmp_path / "m", model)
    assert written == tmp_path / "m.npz" == npz_path(tmp_path / "m") and written.is_file()
    assert not (tmp_path / "m").exists()
    fresh = build_model(seed=1)
    load_params(tmp_path / "m", fresh)  # the name given to save_params
    np.testing.assert_array_equal(fresh.params[0], model.params[0])
    assert npz_path("a.npz") == npz_path("a") and npz_path("a.npz.bak").name == "a.npz.bak.npz"


def test_resnet_buffers_are_saved_and_loaded(tmp_path, digits):
    x_train, y_train, x_test, y_test = digits
    model = build_resnet(seed=0, width=4)
    fit(
        model,
        Adam(model.params),
        (x_train[:64], y_train[:64]),
        (x_test, y_test),
        1,
        32,
        show_progress=False,
        log=None,
    )
    stem_norm = model[1]
    assert stem_norm.num_batches_tracked == 2 and not np.allclose(stem_norm.running_var, 1)
    written = save_params(tmp_path / "resnet", model)
    with np.load(written) as saved:
        assert list(saved.files) == list(model.state_dict())
        assert "1.running_mean" in saved.files and saved["1.num_batches_tracked"] == 2
    fresh = build_resnet(seed=1, width=4)
    load_params(written, fresh)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    assert evaluate(fresh, x_test, y_test) == evaluate(model, x_test, y_test)


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04 cut short"], ids=["garbage", "truncated-zip"])
def test_load_rejects_files_that_are_not_parameter_archives(tmp_path, content):
    (tmp_path / "bad.npz").write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.npz: not a parameter file written by save_params"):
        load_params(tmp_path / "bad.npz", build_model())
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"array\.npy: not a parameter file written by save_params"):
        load_params(tmp_path / "array.npy", build_model())
    with pytest.raises(FileNotFoundError, match=r"absent: no such file"):
        load_params(tmp_path / "absent", build_model())


def test_build_model_rejects_sizes_the_pooling_cannot_halve_twice():
    with pytest.raises(ValueError, match="image_size must be divisible by 4, got 10"):
        build_model(image_size=10)


@pytest.mark.parametrize("model", ["cnn", "resnet"])
def test_cli_trains_saves_and_loads(tmp_path, capsys, model):
    """``--save m`` writes and prints ``m.npz``; ``--load m`` reads it; ``--epochs 0`` evaluates it."""
    history = main(["--model", model, "--epochs", "1", "--no-progress", "--save", str(tmp_path / "m")])
    assert len(history) == 1 and (tmp_path / "m.npz").is_file() and not (tmp_path / "m").exists()
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and f"saved parameters to {tmp_path / 'm.npz'}\n" in out
    assert ("Conv2d(1, 16" in out) and (("BatchNorm2d(16" in out) == (model == "resnet"))
    for name in ("m", "m.npz"):
        reloaded = main(["--model", model, "--epochs", "0", "--no-progress", "--load", str(tmp_path / name)])
        assert reloaded == []
        assert f"held-out accuracy {history[-1].test_accuracy:.2%} (loss {history[-1].test_loss:.4f})" in (
            capsys.readouterr().out
        )


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


def test_cli_uses_the_test_files_when_there_are_some(tmp_path, capsys):
    write_split(tmp_path, images_of(40, 8), labels_of(40), compress=True)
    write_split(tmp_path, images_of(12, 8, seed=1), labels_of(12, seed=1), prefix="t10k")
    main(["--data", str(tmp_path), "--epochs", "1", "--no-progress", "--batch-size", "8"])
    assert "40 training and 12 held-out images of shape (1, 8, 8)" in capsys.readouterr().out


def test_cli_threads_split_mnist_sized_layers_to_the_same_result(tmp_path):
    """--threads 2 runs the 28x28 model's second conv and first pool on workers: same training, to rounding."""
    write_random_idx(tmp_path, 48, 28)
    argv = ["--data", str(tmp_path), "--epochs", "1", "--no-progress", "--test-fraction", "0.25"]
    one = main(argv)
    two = main([*argv, "--threads", "2"])
    assert get_num_threads() == 1  # restored after the run
    assert two[0].train_loss == pytest.approx(one[0].train_loss, rel=1e-4)
    assert two[0].test_loss == pytest.approx(one[0].test_loss, rel=1e-4)


def test_layers_are_the_documented_architecture():
    kinds = [type(layer).__name__ for layer in build_model()]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    mnist_head = build_model(image_size=28)[-1]
    assert isinstance(mnist_head, nn.Linear) and mnist_head.weight.shape == (10, 32 * 7 * 7)


def test_resnet_is_the_documented_architecture():
    kinds = [type(layer).__name__ for layer in build_resnet()]
    assert kinds == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "BasicBlock",
        "BasicBlock",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
    ]
    resnet = build_resnet(width=8)
    assert resnet[3][0].shortcut is None  # identity shortcut
    projection = resnet[4][0].shortcut  # the strided 1x1 conv + batch norm
    assert projection[0].kernel_size == (1, 1) and projection[0].stride == (2, 2)
    assert isinstance(projection[1], nn.BatchNorm2d) and resnet[-1].weight.shape == (10, 16)
    assert build_resnet(image_size=28)(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_resnet_gradient_matches_finite_differences():
    """The whole ResNet in training mode (batch statistics), input and every parameter, float64."""
    rng = np.random.default_rng(2)
    model = build_resnet(image_size=6, seed=2, dtype=np.float64, width=2)
    x = rng.standard_normal((3, 1, 6, 6))
    target = np.array([1, 4, 9])

    def loss_at(probe=None):
        return float(cross_entropy(model(x if probe is None else probe), target, label_smoothing=0.1))

    logits = model(x)
    check_gradient(loss_at, x, model.backward(cross_entropy_backward(logits, target, label_smoothing=0.1)))
    for param, grad in zip(model.params, [g.copy() for g in model.grads], strict=True):
        original = param.copy()

        def loss_of_param(value, param=param):
            param[...] = value
            return loss_at()

        check_gradient(loss_of_param, original, grad)
        param[...] = original


def test_evaluate_runs_in_eval_mode_and_restores_the_mode(digits):
    x_train, _, x_test, y_test = digits
    model = build_resnet(seed=0, width=4)
    model(x_train[:64])  # one training-mode batch: running statistics now differ from any test batch's
    state = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    loss, accuracy = evaluate(model, x_test, y_test, batch_size=50)
    assert model.training and all(layer.training for _, layer in model.children())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=f"evaluate changed {key}")
    model.eval()
    logits = model(x_test)  # eval mode, one batch: the same numbers as evaluate's batches of 50
    assert loss == pytest.approx(float(cross_entropy(logits, y_test)), rel=1e-5)
    assert accuracy == np.mean(np.argmax(logits, axis=1) == y_test)
    model.eval()
    evaluate(model, x_test[:10], y_test[:10])
    assert not model.training  # restored to eval, not forced to train


# ---------------------------------------------------------------------------------------------
# the command line fails as a command-line tool should: exit != 0, one line on stderr, no traceback


def write_split(folder, images, labels, prefix="train", compress=False):
    """IDX image and label files for one split (``train`` or ``t10k``), written independently of the loader."""
    suffix = ".gz" if compress else ""
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        raw = idx_bytes(array)
        (folder / f"{prefix}-{kind}-ubyte{suffix}").write_bytes(gzip.compress(raw) if compress else raw)


def images_of(count, size, dtype=np.uint8, seed=0):
    side = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).integers(0, 256, size=(count, *side)).astype(dtype)


def labels_of(count, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, 10, size=count).astype(dtype)


def corrupt_magic(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x01\x02" + idx_bytes(images_of(20, 8))[2:])


def truncated_images(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    raw = idx_bytes(images_of(20, 8))
    (folder / "train-images-idx3-ubyte").write_bytes(raw[: len(raw) - 5])


def oversized_header(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    huge = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(64)
    (folder / "train-images-idx3-ubyte").write_bytes(huge)


def trailing_bytes(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels_of(20)) + b"\x00")


def damaged_gzip(folder):
    write_split(folder, images_of(20, 8), labels_of(20), compress=True)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF  # the first deflate block header: an invalid block type
    path.write_bytes(bytes(raw))


def cut_gzip(folder):
    write_split(folder, images_of(20, 8), labels_of(20), compress=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-9])


def labels_too_large(folder):
    labels = labels_of(20)
    labels[3] = 12
    write_split(folder, images_of(20, 8), labels)


def labels_negative(folder):
    labels = labels_of(20, np.int8)
    labels[0] = -1
    write_split(folder, images_of(20, 8), labels)


def float_labels(folder):
    write_split(folder, images_of(20, 8), labels_of(20, np.float32))


def count_mismatch(folder):
    write_split(folder, images_of(20, 8), labels_of(19))


def not_divisible_by_4(folder):
    write_split(folder, images_of(20, 10), labels_of(20))


def too_small(folder):
    write_split(folder, images_of(20, 2), labels_of(20))


def not_square(folder):
    write_split(folder, images_of(20, (8, 12)), labels_of(20))


def held_out_size_differs(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    write_split(folder, images_of(5, 12), labels_of(5), prefix="t10k")


def nan_images(folder):
    images = images_of(20, 8, np.float32)
    images[2, 3, 4] = np.nan
    write_split(folder, images, labels_of(20))


def two_dimensional_images(folder):
    write_split(folder, images_of(20, 8)[:, 0], labels_of(20))


def missing_labels(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    (folder / "train-labels-idx1-ubyte").unlink()


def half_a_test_set(folder):
    write_split(folder, images_of(20, 8), labels_of(20))
    write_split(folder, images_of(5, 8), labels_of(5), prefix="t10k")
    (folder / "t10k-labels-idx1-ubyte").unlink()


def data_argv(folder):
    return ["--data", str(folder), "--epochs", "1"]


# (id, what to write into tmp_path, the arguments, exit status, a fragment of the one line)
CLI_FAILURES = [
    ("data-missing", None, lambda d: ["--data", str(d / "nope")], 2, r"--data .*nope: no such folder"),
    (
        "data-is-a-file",
        missing_labels,
        lambda d: ["--data", str(d / "train-images-idx3-ubyte")],
        2,
        "is not a folder",
    ),
    (
        "data-no-labels",
        missing_labels,
        data_argv,
        1,
        r"no train-labels-idx1-ubyte or train-labels-idx1-ubyte\.gz",
    ),
    (
        "data-half-a-test-set",
        half_a_test_set,
        data_argv,
        1,
        r"no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte\.gz",
    ),
    ("idx-bad-magic", corrupt_magic, data_argv, 1, r"train-images-idx3-ubyte: not an IDX file"),
    (
        "idx-truncated",
        truncated_images,
        data_argv,
        1,
        r"train-images-idx3-ubyte: truncated: shape \(20, 8, 8\)",
    ),
    (
        "idx-oversized",
        oversized_header,
        data_argv,
        1,
        rf"truncated: shape .* needs {(2**32 - 1) ** 3} data bytes",
    ),
    ("idx-trailing", trailing_bytes, data_argv, 1, r"train-labels-idx1-ubyte: has trailing bytes"),
    ("gzip-damaged", damaged_gzip, data_argv, 1, r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"),
    ("gzip-cut", cut_gzip, data_argv, 1, r"train-labels-idx1-ubyte\.gz: corrupt or truncated gzip"),
    (
        "labels-too-large",
        labels_too_large,
        data_argv,
        1,
        r"training labels must be in 0\.\.9, got 1 outside, e\.g\. 12",
    ),
    (
        "labels-negative",
        labels_negative,
        data_argv,
        1,
        r"labels must be in 0\.\.9, got 1 outside, e\.g\. -1",
    ),
    ("labels-float", float_labels, data_argv, 1, r"labels must be a 1-D array of integers"),
    ("labels-count", count_mismatch, data_argv, 1, r"20 images in train-images-idx3-ubyte but 19 labels"),
    ("images-2d", two_dimensional_images, data_argv, 1, r"images must be 3-D \(N, H, W\)"),
    (
        "images-10x10-cnn",
        not_divisible_by_4,
        data_argv,
        1,
        r"--model cnn needs images whose side is divisible by 4",
    ),
    (
        "images-2x2-resnet",
        too_small,
        lambda d: [*data_argv(d), "--model", "resnet"],
        1,
        r"at least 4x4, got 2x2",
    ),
    ("images-not-square", not_square, data_argv, 1, r"images must be square, got 8x12"),
    (
        "images-test-size",
        held_out_size_differs,
        data_argv,
        1,
        r"training images have shape \(1, 8, 8\) but held-out",
    ),
    ("images-nan", nan_images, data_argv, 1, r"training images hold NaN or infinite values"),
    (
        "load-missing",
        None,
        lambda d: ["--load", str(d / "absent.npz")],
        2,
        r"--load .*absent\.npz: no such file",
    ),
    (
        "save-folder-missing",
        None,
        lambda d: ["--save", str(d / "no" / "m")],
        2,
        r"no does not exist \(create it first\)",
    ),
    ("save-is-a-folder", None, lambda d: ["--save", str(d)], 2, r"is a folder"),
    (
        "save-folder-is-a-file",
        lambda d: (d / "afile").write_text(""),
        lambda d: ["--save", str(d / "afile" / "m")],
        2,
        r"afile is a file, not a folder",
    ),
    (
        "test-fraction-0",
        None,
        lambda d: ["--test-fraction", "0"],
        2,
        r"--test-fraction must be in \(0, 1\), got 0\.0",
    ),
    (
        "test-fraction-1",
        None,
        lambda d: ["--test-fraction", "1"],
        2,
        r"--test-fraction must be in \(0, 1\)",
    ),
    ("test-fraction-nan", None, lambda d: ["--test-fraction", "nan"], 2, r"--test-fraction .*got nan"),
    ("lr-nan", None, lambda d: ["--lr", "nan"], 2, r"--lr must be a finite number > 0, got nan"),
    ("lr-inf", None, lambda d: ["--lr", "inf"], 2, r"--lr must be a finite number > 0, got inf"),
    ("lr-zero", None, lambda d: ["--lr", "0"], 2, r"--lr must be a finite number > 0, got 0\.0"),
    ("lr-negative", None, lambda d: ["--lr=-1e-3"], 2, r"--lr must be a finite number > 0"),
    ("epochs-zero", None, lambda d: ["--epochs", "0"], 2, r"--epochs must be >= 1 \(0 only with --load"),
    ("epochs-negative", None, lambda d: ["--epochs", "-3"], 2, r"--epochs must be >= 1"),
    (
        "epochs-not-int",
        None,
        lambda d: ["--epochs", "2.5"],
        2,
        r"argument --epochs: invalid int value: '2\.5'",
    ),
    ("batch-size-zero", None, lambda d: ["--batch-size", "0"], 2, r"--batch-size must be >= 1, got 0"),
    (
        "smoothing-2",
        None,
        lambda d: ["--label-smoothing", "2"],
        2,
        r"--label-smoothing must be in \[0, 1\]",
    ),
    ("smoothing-nan", None, lambda d: ["--label-smoothing", "nan"], 2, r"--label-smoothing must be in"),
    ("seed-negative", None, lambda d: ["--seed", "-1"], 2, r"--seed must be >= 0, got -1"),
    ("threads-zero", None, lambda d: ["--threads", "0"], 2, r"--threads must be >= 1, got 0"),
    ("blas-threads-zero", None, lambda d: ["--blas-threads", "0"], 2, r"--blas-threads must be >= 1"),
    ("model-unknown", None, lambda d: ["--model", "vgg"], 2, r"argument --model: invalid choice: 'vgg'"),
    ("option-unknown", None, lambda d: ["--epcohs", "3"], 2, r"unrecognized arguments: --epcohs 3"),
]


def assert_one_line_failure(capsys, info, status, fragment):
    err = capsys.readouterr().err
    assert info.value.code == status, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("python -m cnnbp_ref.train: error: ") and "Traceback" not in err
    assert re.search(fragment, err), err


@pytest.mark.parametrize(
    ("write", "argv", "status", "fragment"),
    [row[1:] for row in CLI_FAILURES],
    ids=[row[0] for row in CLI_FAILURES],
)
def test_cli_failures_are_one_line_without_traceback(tmp_path, capsys, write, argv, status, fragment):
    if write is not None:
        write(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*argv(tmp_path), "--no-progress"])
    assert_one_line_failure(capsys, info, status, fragment)


@pytest.mark.parametrize(
    ("saved_model", "argv", "fragment"),
    [
        (
            "cnn",
            ["--model", "resnet"],
            r"does not fit the model: missing 1\.weight, .* \(\+\d+ more\)",
        ),
        ("resnet", [], r"does not fit the model: .*unexpected 1\.weight"),
        (
            "cnn",
            ["--data", "{mnist}"],
            r"does not fit the model: state\['7\.weight'\] has shape \(10, 128\), the model expects \(10, 1568\)",
        ),
    ],
    ids=["cnn-into-resnet", "resnet-into-cnn", "digits-into-mnist-size"],
)
def test_cli_load_that_does_not_fit_is_one_line(tmp_path, capsys, saved_model, argv, fragment):
    path = save_params(tmp_path / "saved", {"cnn": build_model, "resnet": build_resnet}[saved_model]())
    (tmp_path / "mnist").mkdir()
    write_random_idx(tmp_path / "mnist", 20, 28)
    argv = [a.format(mnist=tmp_path / "mnist") for a in argv]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--load", str(path), "--epochs", "1", "--no-progress"])
    assert_one_line_failure(capsys, info, 1, rf"--load .*saved\.npz: {fragment}")


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04"], ids=["not-a-zip", "cut-zip"])
def test_cli_load_of_a_broken_file_is_one_line(tmp_path, capsys, content):
    (tmp_path / "broken.npz").write_bytes(content)
    with pytest.raises(SystemExit) as info:
        main(["--load", str(tmp_path / "broken.npz"), "--epochs", "0", "--no-progress"])
    assert_one_line_failure(capsys, info, 1, r"broken\.npz: not a parameter file written by save_params")


def test_cli_checks_the_save_folder_before_training(tmp_path, capsys):
    """A missing --save folder is reported before any data is loaded or any epoch runs."""
    with pytest.raises(SystemExit) as info:
        main(["--epochs", "50", "--save", str(tmp_path / "missing" / "model.npz")])
    assert capsys.readouterr().out == ""  # nothing printed: no data summary, no epoch
    assert info.value.code == 2


def test_cli_failure_in_a_real_process_has_no_traceback(tmp_path):
    corrupt_magic(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "cnnbp_ref.train", "--data", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "train-images-idx3-ubyte: not an IDX file" in result.stderr


# ---------------------------------------------------------------------------------------------
# optional packages (issue 15): after a plain ``pip install .`` there is no scikit-learn and no tqdm


def test_cli_without_scikit_learn_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit) as info:
        main(["--epochs", "1", "--no-progress"])
    assert_one_line_failure(
        capsys,
        info,
        1,
        r'scikit-learn, which is not installed: pip install "cnnbp-ref\[train\]" \(or pass --data DIR',
    )


def test_cli_without_scikit_learn_trains_on_idx_files(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    write_random_idx(tmp_path, 24, 8)
    assert len(main(["--data", str(tmp_path), "--epochs", "1", "--no-progress"])) == 1


def test_cli_without_tqdm_trains_and_says_once_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    history = main(["--epochs", "1"])
    assert len(history) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert 'progress bars need tqdm, which is not installed: pip install "cnnbp-ref[train]"' in err
    main(["--epochs", "1", "--no-progress"])  # --no-progress: tqdm is never asked for
    assert capsys.readouterr().err == ""


def test_fit_with_progress_but_without_tqdm_says_what_to_install(monkeypatch, digits):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    x_train, y_train, x_test, y_test = digits
    model = build_model()
    with pytest.raises(
        ModuleNotFoundError, match=r'tqdm, which is not installed: pip install "cnnbp-ref\[train\]"'
    ):
        fit(model, Adam(model.params), (x_train, y_train), (x_test, y_test), 1, 32, log=None)
    fit(
        model,
        Adam(model.params),
        (x_train[:64], y_train[:64]),
        (x_test, y_test),
        1,
        32,
        show_progress=False,
        log=None,
    )


def test_train_module_imports_without_optional_packages():
    """``import cnnbp_ref.train`` (and --help) in a process where sklearn and tqdm cannot be imported."""
    code = (
        "import sys; sys.modules['sklearn'] = sys.modules['tqdm'] = None\n"
        "import cnnbp_ref.train\n"
        "cnnbp_ref.train.main(['--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "--model {cnn,resnet}" in result.stdout
