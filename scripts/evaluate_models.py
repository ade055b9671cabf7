"""Score saved digit models on the official MNIST test set, independently of
train_mnist.py's own report.

    python scripts/evaluate_models.py --data ../shared/datasets/mnist [models/mnist_dense.keras ...]

Reads the IDX files itself (through train_mnist's parser, which checks them),
loads each model with Keras and counts correct argmaxes.
"""

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_mnist import DataError, load_mnist_idx  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, metavar="DIR")
    parser.add_argument("models", nargs="*", default=["models/mnist_dense.keras", "models/mnist_cnn.keras"])
    args = parser.parse_args(argv)
    try:
        _, (images, labels) = load_mnist_idx(args.data)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import keras

    for path in args.models:
        model = keras.saving.load_model(path, compile=False)
        x = images.reshape((len(images), *model.input_shape[1:])).astype("float32") / 255
        predicted = model.predict(x, batch_size=1000, verbose=0).argmax(axis=1)
        correct = int((predicted == labels).sum())
        print(f"{path}: {correct}/{len(labels)} correct, accuracy {correct / len(labels):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
