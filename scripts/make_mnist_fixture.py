"""Cut the small MNIST fixture that the tests use from the full data set.

    python scripts/make_mnist_fixture.py ../shared/datasets/mnist tests/fixtures/mnist

Writes the four IDX files, gzipped, with 1,200 training and 500 test images drawn at
random (fixed seed) from the official sets, about 280 KB in all. Tests read only
this fixture, never the full data set, which a user's clone does not have.
"""

import gzip
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_mnist import IDX_FILES, load_mnist_idx  # noqa: E402

train_count, test_count, seed = 1200, 500, 20261126


def write_idx(path, array):
    magic = 0x800 | array.ndim  # unsigned bytes, ndim dimensions
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime=0: same bytes on every run
        f.write(header + array.astype(np.uint8).tobytes())


def main(source, target):
    (x_train, y_train), (x_test, y_test) = load_mnist_idx(source)
    rng = np.random.default_rng(seed)
    train_idx = np.sort(rng.choice(len(x_train), train_count, replace=False))
    test_idx = np.sort(rng.choice(len(x_test), test_count, replace=False))
    Path(target).mkdir(parents=True, exist_ok=True)
    for key, array in {
        "x_train": x_train[train_idx], "y_train": y_train[train_idx],
        "x_test": x_test[test_idx], "y_test": y_test[test_idx],
    }.items():
        write_idx(Path(target) / f"{IDX_FILES[key]}.gz", array)
    np.savetxt(Path(target) / "test_indices.txt", test_idx, fmt="%d",
               header="positions of the fixture's test images in the official t10k set")


if __name__ == "__main__":
    main(*sys.argv[1:3])
