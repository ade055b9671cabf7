"""The model registry: every model is loaded once per process, lazily, and kept here.

No Flask in here. Each model runs through one compiled `tf.function` with a fixed
input signature (not `model.predict`, which costs ~40 ms of set-up per call), under
a lock, because TensorFlow does not promise that every call path is thread-safe;
the lesson's all-Dense network runs in NumPy, which is faster still.
"""

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DIGIT_MODELS = ("dense", "cnn")
IMAGENET_INDEX = Path(__file__).parent / "data" / "imagenet_class_index.json"
XCEPTION_RETRY_SECONDS = 60  # after a failed load, don't retry (or re-download) on every request


class ModelUnavailable(RuntimeError):
    """A model can't be loaded; the message says what is missing and how to get it."""


class CompiledModel:
    """A Keras model behind one traced, locked forward pass."""

    def __init__(self, keras_model):
        import tensorflow as tf

        self.keras_model = keras_model
        self.input_shape = tuple(keras_model.input_shape[1:])
        # One trace, for any batch size: the signature leaves the batch dimension open.
        self.function = tf.function(
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32)],
        )
        # Calling the traced graph itself skips tf.function's argument binding: 0.1-0.3 ms a call.
        self._graph = self.function.get_concrete_function()
        self._lock = threading.Lock()

    def __call__(self, batch):
        """float32 batch shaped like the model's input -> NumPy outputs."""
        batch = np.asarray(batch, dtype=np.float32).reshape((-1, *self.input_shape))
        with self._lock:
            return self._graph(batch).numpy()

    def warm_up(self):
        """Run the graph once now: its first run optimises it, and no user should wait for that."""
        self(np.zeros((1, *self.input_shape), dtype=np.float32))


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class DenseStackModel:
    """A model made only of Dense layers, run in NumPy with the model's own weights.

    For the lesson's 784-100-100-10 net this costs ~0.015 ms a digit against ~0.25 ms
    for the compiled TensorFlow graph, and it leaves TensorFlow's thread pool idle:
    its threads spin after each call and slowed the rest of the request. Pure NumPy
    on read-only arrays needs no lock. Answers equal Keras' (tested).
    """

    ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0), "softmax": softmax, "linear": lambda z: z}

    @classmethod
    def fits(cls, keras_model):
        return all(
            type(layer).__name__ == "Dense" and layer.activation.__name__ in cls.ACTIVATIONS
            for layer in keras_model.layers
        )

    def __init__(self, keras_model):
        self.keras_model = keras_model
        self.input_shape = tuple(keras_model.input_shape[1:])
        self._layers = [
            (*(np.asarray(w, dtype=np.float32) for w in layer.get_weights()),
             self.ACTIVATIONS[layer.activation.__name__])
            for layer in keras_model.layers
        ]

    def __call__(self, batch):
        """float32 batch shaped like the model's input -> NumPy outputs."""
        x = np.asarray(batch, dtype=np.float32).reshape((-1, *self.input_shape))
        for kernel, bias, activation in self._layers:
            x = activation(x @ kernel + bias)
        return x

    def warm_up(self):
        self(np.zeros((1, *self.input_shape), dtype=np.float32))


def fastest_runner(keras_model):
    """NumPy for a plain stack of Dense layers, a compiled TensorFlow graph otherwise."""
    return DenseStackModel(keras_model) if DenseStackModel.fits(keras_model) else CompiledModel(keras_model)


def load_digit_model(path, name):
    """Load models/mnist_<name>.keras, ready to run fast."""
    if not path.is_file():
        raise ModelUnavailable(
            f"the {name} digit model is missing ({path}); train it with "
            f"`python train_mnist.py --arch {name}` (add --data DIR when offline)"
        )
    import keras

    try:
        return fastest_runner(keras.saving.load_model(path, compile=False))
    except Exception as exc:  # a corrupt or foreign file: say which, don't crash
        raise ModelUnavailable(f"the {name} digit model at {path} cannot be loaded: {exc}") from None


def load_imagenet_index():
    """[(wnid, label)] in Xception's output order, from the shipped class index."""
    index = json.loads(IMAGENET_INDEX.read_text())
    return [tuple(index[str(i)]) for i in range(len(index))]


def load_xception(weights):
    """Xception with ImageNet weights: 'imagenet' (Keras download and cache) or a file."""
    if weights != "imagenet" and not Path(weights).is_file():
        raise ModelUnavailable(
            f"XCEPTION_WEIGHTS={weights} is not a file; point it at Keras' "
            "xception_weights_tf_dim_ordering_tf_kernels.h5, or set it to 'imagenet' "
            "on a machine with internet"
        )
    from keras.applications import Xception

    try:
        return CompiledModel(Xception(weights=weights))
    except Exception as exc:  # no network, a bad file: both mean "no weights"
        source = "download the ImageNet weights" if weights == "imagenet" else f"load {weights}"
        raise ModelUnavailable(
            f"Xception is unavailable: could not {source} ({exc.__class__.__name__}: {exc}). "
            "Without internet, copy xception_weights_tf_dim_ordering_tf_kernels.h5 "
            "into ~/.keras/models/ or set XCEPTION_WEIGHTS=/path/to/it, then retry"
        ) from None


class ModelRegistry:
    """All models of one process. Cheap to create: nothing loads until asked."""

    def __init__(self, models_folder, xception_weights="imagenet"):
        self.models_folder = Path(models_folder)
        self.xception_weights = xception_weights
        self._digits = {}
        self._xception = None
        self._xception_error = None  # (monotonic time, ModelUnavailable)
        self._imagenet_labels = None
        self._load_lock = threading.Lock()

    def digit_model_path(self, name):
        return self.models_folder / f"mnist_{name}.keras"

    def digit(self, name):
        """The compiled `name` digit model; raises ModelUnavailable."""
        if name not in DIGIT_MODELS:
            raise KeyError(name)
        model = self._digits.get(name)
        if model is None:
            with self._load_lock:
                model = self._digits.get(name)
                if model is None:
                    model = load_digit_model(self.digit_model_path(name), name)
                    self._digits[name] = model
                    log.info("loaded the %s digit model", name)
        return model

    def digit_report(self, name):
        """What train_mnist.py wrote about the model (accuracy, ...), or None."""
        path = self.models_folder / f"mnist_{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def xception(self):
        """(compiled Xception, seconds spent loading it now or None); raises ModelUnavailable."""
        if self._xception is not None:
            return self._xception, None
        with self._load_lock:
            if self._xception is not None:
                return self._xception, None
            if self._xception_error and time.monotonic() - self._xception_error[0] < XCEPTION_RETRY_SECONDS:
                raise self._xception_error[1]
            started = time.monotonic()
            log.info("loading Xception weights (%s); this takes a few seconds", self.xception_weights)
            try:
                model = load_xception(self.xception_weights)
                model.warm_up()
            except ModelUnavailable as exc:
                log.warning("%s", exc)
                self._xception_error = (time.monotonic(), exc)
                raise
            self._xception, self._xception_error = model, None
            seconds = time.monotonic() - started
            log.info("Xception ready in %.1f s", seconds)
            return model, seconds

    def imagenet_labels(self):
        if self._imagenet_labels is None:
            self._imagenet_labels = load_imagenet_index()
        return self._imagenet_labels

    def warm_up(self, xception=False):
        """Load and trace every available digit model (and Xception if asked)."""
        for name in DIGIT_MODELS:
            try:
                self.digit(name).warm_up()
            except ModelUnavailable as exc:
                log.warning("%s", exc)
        if xception:
            try:
                self.xception()
            except ModelUnavailable:
                pass  # already logged; requests will answer 503 with the reason

    def health(self):
        """The state of each model, without loading anything."""
        state = {}
        for name in DIGIT_MODELS:
            path = self.digit_model_path(name)
            state[name] = {
                "state": "loaded" if name in self._digits else ("ready to load" if path.is_file() else "missing"),
            }
            if not path.is_file():
                state[name]["error"] = f"{path.name} is missing; run `python train_mnist.py --arch {name}`"
        if self._xception is not None:
            state["xception"] = {"state": "loaded"}
        elif self._xception_error:
            state["xception"] = {"state": "unavailable", "error": str(self._xception_error[1])}
        else:
            state["xception"] = {"state": "loads on first use", "weights": str(self.xception_weights)}
        return state


def top_predictions(probabilities, labels, k=5):
    """[{label, wnid, probability}] for the k likeliest classes, best first."""
    best = np.argsort(probabilities)[::-1][:k]
    return [
        {"label": labels[i][1], "wnid": labels[i][0], "probability": float(probabilities[i])}
        for i in best
    ]
