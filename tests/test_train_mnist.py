"""train_mnist.py: IDX parsing, the CLI, the save/load round trip, the shipped models."""

import gzip
import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

import train_mnist
from helpers import FIXTURES, ROOT
from train_mnist import DataError, load_mnist_idx, read_idx

MNIST = FIXTURES / "mnist"


def write_idx(path, magic, shape, payload, compress=False):
    data = struct.pack(f">I{len(shape)}I", magic, *shape) + payload
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)
    return path


def copy_fixture(tmp_path, compress=True):
    """The fixture's four files in tmp_path, gzipped or not, for tests to break."""
    for name in train_mnist.IDX_FILES.values():
        with gzip.open(MNIST / f"{name}.gz") as f:
            raw = f.read()
        target = tmp_path / (f"{name}.gz" if compress else name)
        with (gzip.open if compress else open)(target, "wb") as f:
            f.write(raw)
    return tmp_path


# IDX parsing ----------------------------------------------------------------

def test_fixture_reads_as_real_mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist_idx(MNIST)
    assert x_train.shape == (1200, 28, 28) and y_train.shape == (1200,)
    assert x_test.shape == (500, 28, 28) and y_test.shape == (500,)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert set(np.unique(y_test)) == set(range(10))


def test_uncompressed_files_read_the_same(tmp_path):
    plain = load_mnist_idx(copy_fixture(tmp_path, compress=False))
    gzipped = load_mnist_idx(MNIST)
    for a, b in zip(np.concatenate([*plain[0], *plain[1]], axis=None),
                    np.concatenate([*gzipped[0], *gzipped[1]], axis=None)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("magic", "shape", "payload", "message"), [
    (0x803, (2, 28, 28), bytes(2 * 784), None),
    (0x801, (2, 28, 28), bytes(2 * 784), "magic number 0x00000801"),
    (0x803, (3, 28, 28), bytes(2 * 784), "holds 1568 bytes of data, its header promises 2352"),
    (0x803, (2, 28, 28), bytes(2 * 784 + 5), "holds 1573 bytes"),
])
def test_read_idx_checks_magic_and_size(tmp_path, magic, shape, payload, message):
    path = write_idx(tmp_path / "images-idx3-ubyte", magic, shape, payload)
    if message is None:
        assert read_idx(path, 0x803).shape == (2, 28, 28)
    else:
        with pytest.raises(DataError, match=message):
            read_idx(path, 0x803)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "too short"),
    (b"\x00\x00\x08\x03\x00\x00", "cut off inside its header"),
])
def test_read_idx_rejects_short_files(tmp_path, content, message):
    path = tmp_path / "x"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(path, 0x803)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path, 0x803)


def test_missing_file_is_named(tmp_path):
    copy_fixture(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file: .*t10k-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path)


def test_mismatched_counts_are_refused(tmp_path):
    copy_fixture(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (7,), bytes(7), compress=True)
    with pytest.raises(DataError, match="test set has 500 images but 7 labels"):
        load_mnist_idx(tmp_path)


def test_download_failure_says_how_to_use_data(monkeypatch, capsys):
    import keras

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    assert train_mnist.main(["--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert "could not download MNIST" in err and "--data DIR" in err
    assert len(err.splitlines()) == 1


# The command line -----------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "train_mnist.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "does-not-exist"], "error: --data does-not-exist is not a directory"),
    (["--data", str(FIXTURES)], "error: missing file: "),
    (["--epochs", "0", "--data", str(MNIST)], "--epochs and --batch-size must be at least 1"),
    (["--arch", "rnn"], "invalid choice: 'rnn'"),
    (["--augment", "--predict", "0", "--data", str(MNIST)],
     "error: --augment is a way to train, and --predict trains nothing"),
])
def test_cli_bad_input_exits_2_without_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_augment_with_predict_is_refused_in_one_line():
    result = run_cli("--arch", "cnn", "--augment", "--predict", "0", "--data", str(MNIST))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --augment is a way to train, and --predict trains nothing"]


@pytest.mark.parametrize(("argv", "epochs", "augment"), [
    ([], 10, False),                      # the lesson's recipe, unchanged
    (["--augment"], 20, True),
    (["--arch", "cnn"], 15, True),        # the CNN is always trained on varied digits
    (["--arch", "cnn", "--augment"], 15, True),
    (["--augment", "--epochs", "3"], 3, True),
])
def test_augment_and_its_defaults(argv, epochs, augment):
    args = train_mnist.parse_args(argv)
    assert (args.epochs, args.augment) == (epochs, augment)


@pytest.mark.parametrize(("arch", "augment", "name", "words"), [
    ("dense", False, "lesson", "as they are"),
    ("dense", True, "augmented", "rotated (±10°)"),
    ("cnn", True, "augmented", "rotated (±12°)"),
])
def test_recipe_names_and_describes_the_training(arch, augment, name, words):
    recipe, description = train_mnist.recipe(arch, augment)
    assert recipe == name and words in description


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["dense", "cnn"])
def test_augmented_batches_vary_each_digit_but_keep_its_shape_and_label(arch, mnist_sample):
    images, _ = mnist_sample
    x = train_mnist.to_model_input(images[:256], arch)
    # Each digit's index rides along as its "label", to compare it with its original.
    batches = train_mnist.augmented_batches(x, np.arange(256), 64, seed=1,
                                            **train_mnist.augmentations[arch])
    varied, index = (np.concatenate(parts) for parts in zip(*((a.numpy(), b.numpy()) for a, b in batches)))
    assert varied.shape == x.shape and sorted(index) == list(range(256))
    assert 0 <= varied.min() and varied.max() <= 1.0 + 1e-6
    original = x[index].reshape(256, -1)
    varied = varied.reshape(256, -1)
    changed = np.abs(varied - original).max(axis=1) > 0.1
    assert changed.mean() > 0.9
    # Still the same digit: each varied copy correlates with its own original.
    correlation = [np.corrcoef(a, b)[0, 1] for a, b in zip(varied, original)]
    assert np.median(correlation) > 0.5


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    result = run_cli("--data", str(MNIST), "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.mark.slow
def test_one_epoch_on_the_fixture_writes_model_report_and_plots(one_epoch_run, mnist_sample):
    import keras

    out, stdout = one_epoch_run
    for name in ("mnist_dense.keras", "mnist_dense.json", "mnist_dense_curves.png",
                 "mnist_dense_confusion.png", "mnist_dense_errors.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "mnist_dense.json").read_text())
    assert report["epochs"] == 1 and report["train_images"] == 1200
    assert f"Test accuracy (dense): {report['test_accuracy']:.4f}" in stdout
    # An independent evaluation, not the report's own number: well above chance.
    images, labels = mnist_sample
    model = keras.saving.load_model(out / "mnist_dense.keras")
    predicted = model(images.reshape(-1, 784).astype("float32") / 255).numpy().argmax(1)
    assert (predicted == labels).mean() > 0.6
    assert abs((predicted == labels).mean() - report["test_accuracy"]) < 1e-6
    assert sum(map(sum, report["confusion_matrix"])) == 500


@pytest.mark.slow
def test_without_augment_the_report_says_the_lessons_recipe(one_epoch_run):
    out, _ = one_epoch_run
    report = json.loads((out / "mnist_dense.json").read_text())
    assert report["recipe"] == "lesson" and report["augmentation"] is None
    assert "as they are" in report["recipe_description"]


@pytest.mark.slow
def test_augment_trains_the_lessons_net_and_records_the_recipe(tmp_path, mnist_sample):
    import keras

    result = run_cli("--data", str(MNIST), "--augment", "--epochs", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "mnist_dense.json").read_text())
    assert report["recipe"] == "augmented" and report["epochs"] == 2
    assert report["augmentation"] == train_mnist.augmentations["dense"]
    assert "rotated" in report["recipe_description"]
    model = keras.saving.load_model(tmp_path / "mnist_dense.keras")
    assert [layer.units for layer in model.layers] == [100, 100, 10]  # the lesson's architecture
    assert report["parameters"] == 89_610
    images, labels = mnist_sample
    predicted = model(images.reshape(-1, 784).astype("float32") / 255).numpy().argmax(1)
    assert abs((predicted == labels).mean() - report["test_accuracy"]) < 1e-6
    assert (predicted == labels).mean() > 0.5  # learnt something from 1,080 varied digits


@pytest.mark.slow
def test_predict_one_test_digit(one_epoch_run, mnist_sample):
    out, _ = one_epoch_run
    result = run_cli("--data", str(MNIST), "--out", str(out), "--predict", "3")
    assert result.returncode == 0, result.stderr
    assert "probabilities: [" in result.stdout
    assert "test image #3: predicted " in result.stdout
    assert f"true label {mnist_sample[1][3]}" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["dense", "cnn"])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, arch, mnist_sample):
    import keras

    images, labels = mnist_sample
    x = train_mnist.to_model_input(images[:128], arch)
    model = train_mnist.make_model(arch)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.fit(x, keras.utils.to_categorical(labels[:128], 10), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))


# The shipped models ---------------------------------------------------------

@pytest.mark.parametrize(("arch", "input_shape", "floor"), [
    ("dense", (None, 784), 0.975),
    ("cnn", (None, 28, 28, 1), 0.993),
])
def test_shipped_model_keeps_its_contract(arch, input_shape, floor, registry, mnist_sample):
    path = ROOT / "models" / f"mnist_{arch}.keras"
    assert path.stat().st_size < 5_000_000
    model = registry.digit(arch).keras_model
    assert model.input_shape == input_shape and model.output_shape == (None, 10)
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["test_accuracy"] >= floor and report["test_images"] == 10_000
    assert report["parameters"] == model.count_params()
    # Re-evaluate on the 500 fixture digits: the report's accuracy must agree,
    # within three standard errors of a 500-image sample.
    images, labels = mnist_sample
    probabilities = registry.digit(arch)(train_mnist.to_model_input(images, arch))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (probabilities.argmax(axis=1) == labels).mean()
    p = report["test_accuracy"]
    assert abs(accuracy - p) <= 3 * math.sqrt(p * (1 - p) / len(labels)) + 0.002


@pytest.mark.parametrize("arch", ["dense", "cnn"])
def test_shipped_models_were_trained_on_varied_digits(arch):
    # Both ship augmented, for photos; the dense net keeps the lesson's architecture.
    report = json.loads((ROOT / "models" / f"mnist_{arch}.json").read_text())
    assert report["recipe"] == "augmented"
    assert report["augmentation"] == train_mnist.augmentations[arch]
    assert report["recipe_description"] == train_mnist.recipe(arch, True)[1]
