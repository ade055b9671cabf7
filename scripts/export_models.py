"""Export the digit models as TensorFlow SavedModels, ready for TF Serving or KServe.

    python scripts/export_models.py                    # models/export/mnist_{dense,cnn}/1/
    python scripts/export_models.py cnn --version 2    # a new version next to the old one
    make export

Each model becomes models/export/<name>/<version>/ with a `serving_default` signature
(Keras' `model.export`). TF Serving serves the highest version under a model's folder:

    docker run -p 8501:8501 -v "$PWD/models/export/mnist_cnn:/models/mnist_cnn" \\
        -e MODEL_NAME=mnist_cnn tensorflow/serving

and answers the same REST requests as this app's /v1/models/mnist_cnn:predict.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.models import DIGIT_MODELS  # noqa: E402


def export_model(keras_path, export_dir, version=1, force=False):
    """models/mnist_<name>.keras -> export_dir/mnist_<name>/<version>/ (a SavedModel); returns it.

    The SavedModel is written next to its final place and then renamed, because TF Serving
    polls the model folder and must never load a half-written version.
    """
    import keras

    target = Path(export_dir) / Path(keras_path).stem / str(version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists: export a new --version (TF Serving serves the highest) or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(keras_path, compile=False)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as scratch:
        staged = Path(scratch) / "saved_model"
        model.export(str(staged), format="tf_saved_model", verbose=False)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("names", nargs="*", metavar="name", help=f"{' or '.join(DIGIT_MODELS)} (default: both)")
    parser.add_argument("--version", type=int, default=1, help="the version folder (default: 1)")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="where the .keras files are")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "export", help="the export folder")
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    args = parser.parse_args(argv)
    args.names = args.names or list(DIGIT_MODELS)
    if unknown := set(args.names) - set(DIGIT_MODELS):
        parser.error(f"unknown model {', '.join(sorted(unknown))}: use {' or '.join(DIGIT_MODELS)}")
    if args.version < 1:
        parser.error("--version must be a positive integer: TF Serving ignores other folder names")
    return args


def main(argv=None):
    args = parse_args(argv)
    for name in args.names:
        keras_path = args.models / f"mnist_{name}.keras"
        if not keras_path.is_file():
            sys.exit(f"{keras_path} is missing; train it with `python train_mnist.py --arch {name}`")
        try:
            print(f"exported {keras_path.name} to {export_model(keras_path, args.out, args.version, args.force)}")
        except FileExistsError as exc:
            sys.exit(str(exc))


if __name__ == "__main__":
    main()
