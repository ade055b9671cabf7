"""The model registry: every model is loaded once per process, lazily, and kept here.

No Flask in here. The two digit models run in NumPy with their own weights (a digit
is far too small a job for TensorFlow). Xception runs through one compiled
`tf.function` with a fixed input signature (not `model.predict`, which costs ~40 ms of
set-up per call), under a lock, because TensorFlow does not promise that every call
path is thread-safe. Xception loads in a background thread: a request never
downloads, and never waits on the network.
"""

import hashlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .batching import Admission, DynamicBatcher

log = logging.getLogger(__name__)

DIGIT_MODELS = ("dense", "cnn")
IMAGENET_INDEX = Path(__file__).parent / "data" / "imagenet_class_index.json"
XCEPTION_RETRY_SECONDS = 60  # after a failed load, don't retry (or re-download) on every request
XCEPTION_WAIT_SECONDS = 60  # how long a request waits for Xception to load from a local file
# ... and for a download to fail at once (no network: the name does not resolve, in ~0.15 s),
# so that an offline machine's first request hears why, not "downloading, retry in a minute".
DOWNLOAD_FIRST_WAIT_SECONDS = 0.3
# Keras' own source and checksum for Xception's ImageNet weights.
IMAGENET_WEIGHTS_FILE = "xception_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/xception/"
                        + IMAGENET_WEIGHTS_FILE)
IMAGENET_WEIGHTS_MD5 = "0a58e3b7378bc2990ea3b43d5981f1f6"
DOWNLOAD_TIMEOUT_SECONDS = 15  # to connect, and for each read: a network that drops packets fails in 15 s
DOWNLOAD_MAX_SECONDS = 600
HOW_TO_GET_WEIGHTS = (
    "Without internet, copy xception_weights_tf_dim_ordering_tf_kernels.h5 "
    "into ~/.keras/models/ or set XCEPTION_WEIGHTS=/path/to/it, then retry"
)




@dataclass(frozen=True)
class QueueSettings:
    """One model's place in line, in each worker process."""

    limit: int  # requests admitted at once (decoding, waiting, running); the next gets a 503
    max_batch: int = 1  # rows run together in one call; 1: no batching
    seconds_per_request: float = 0.01  # a first guess for Retry-After, refined as the model runs


# Sized for 2 cores and gunicorn's 2 workers x 32 threads (gunicorn.conf.py): a worker's
# 4 Xception requests take ~0.5 s to answer between them on idle cores, 4 s under a crowd
# of digits (benchmarks/overload.py), and Xception can hold at most 4 of its 32 threads. A digit costs
# ~2-5 ms: 32 at once is a crowd that still clears in a fraction of a second.
DEFAULT_QUEUES = {
    "dense": QueueSettings(limit=32),
    "cnn": QueueSettings(limit=32, max_batch=64, seconds_per_request=0.002),
    "xception": QueueSettings(limit=4, max_batch=8, seconds_per_request=0.1),
}
BATCH_MAX_WAIT_SECONDS = 0.002  # a batch waits this long at most for requests still decoding
# How much nicer than the request threads Xception's TensorFlow threads run (lower_tensorflow_priority).
# 0 by default: under a crowd that keeps both cores busy with digits, 10 (digits first) left
# Xception 1.0 images/s and a 26 s p99, 0 left it 2.3 images/s and 4.6 s, digits 0.34 -> 0.48 s
# p50 (benchmarks/overload.py, README). XCEPTION_NICE=10 puts digits first.
XCEPTION_NICE = 0


class ModelUnavailable(RuntimeError):
    """A model can't be loaded; the message says what is missing and how to get it.
    `retry_after`: seconds after which it may be there (while it loads), else None."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


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


ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0, out=z), "softmax": softmax, "linear": lambda z: z}


def dense_layer(layer):
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
    activation = ACTIVATIONS[layer.activation.__name__]
    return lambda x: activation(x @ kernel + bias)


def conv_layer(layer):
    """A 'valid', stride-1 convolution as one matrix product over the image's patches."""
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
    size_y, size_x, _, filters = kernel.shape
    kernel = kernel.reshape(-1, filters)  # (patch, filters), the patch in (y, x, channel) order
    activation = ACTIVATIONS[layer.activation.__name__]

    def convolve(x):
        count, height, width, _ = x.shape
        patches = sliding_window_view(x, (size_y, size_x), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        out = activation(patches.reshape(-1, kernel.shape[0]) @ kernel + bias)
        return out.reshape(count, height - size_y + 1, width - size_x + 1, filters)

    return convolve


def batch_norm_layer(layer):
    """Inference-time batch normalisation: a fixed scale and shift per channel."""
    scale = 1.0 / np.sqrt(np.asarray(layer.moving_variance, dtype=np.float32) + layer.epsilon)
    if layer.scale:
        scale = scale * np.asarray(layer.gamma, dtype=np.float32)
    shift = -np.asarray(layer.moving_mean, dtype=np.float32) * scale
    if layer.center:
        shift = shift + np.asarray(layer.beta, dtype=np.float32)
    return lambda x: x * scale + shift


def max_pool_layer(layer):
    size_y, size_x = layer.pool_size

    def pool(x):
        height, width = x.shape[1] // size_y * size_y, x.shape[2] // size_x * size_x
        out = x[:, :height:size_y, :width:size_x].copy()
        for dy in range(size_y):
            for dx in range(size_x):
                np.maximum(out, x[:, dy:height:size_y, dx:width:size_x], out=out)
        return out

    return pool


def numpy_layer(layer):
    """A function doing in NumPy what the Keras layer does at inference, or None."""
    kind = type(layer).__name__
    activation = getattr(layer, "activation", None)
    if activation is not None and activation.__name__ not in ACTIVATIONS:
        return None
    if kind == "Dense":
        return dense_layer(layer)
    if kind == "Conv2D" and (layer.padding, tuple(layer.strides), tuple(layer.dilation_rate), layer.groups,
                             layer.data_format) == ("valid", (1, 1), (1, 1), 1, "channels_last"):
        return conv_layer(layer)
    if kind == "BatchNormalization" and layer.axis in (-1, len(layer.input.shape) - 1):
        return batch_norm_layer(layer)
    if kind == "MaxPooling2D" and (tuple(layer.strides), layer.padding, layer.data_format) == (
            tuple(layer.pool_size), "valid", "channels_last"):
        return max_pool_layer(layer)
    if kind == "Dropout":
        return lambda x: x  # only active while training
    if kind == "Flatten":
        return lambda x: x.reshape(x.shape[0], -1)  # (y, x, channel) order, as Keras flattens
    return None


class NumpyModel:
    """A small Sequential model run in NumPy with the model's own weights: Dense,
    Conv2D ('valid', stride 1), BatchNormalization, MaxPooling2D, Dropout, Flatten.

    The lesson's 784-100-100-10 net costs ~0.015 ms a digit against ~0.25 ms for the
    compiled TensorFlow graph; our CNN ~0.3 ms against ~0.9 ms (a digit is far too
    small a job for TensorFlow's thread pool, whose threads also spin after each call
    and slow the rest of the request). Pure NumPy on read-only arrays needs no lock,
    so digit requests never queue behind each other or behind Xception's graph.
    Answers equal Keras' (tested).
    """

    @classmethod
    def fits(cls, keras_model):
        return all(numpy_layer(layer) is not None for layer in keras_model.layers)

    def __init__(self, keras_model):
        from threadpoolctl import threadpool_limits

        # A digit's matrices are tiny: BLAS threads would only wait for each other, and on
        # a busy 2-core server that wait cost 10-30 ms a call (measured). One per process.
        threadpool_limits(1, user_api="blas")
        self.keras_model = keras_model
        self.input_shape = tuple(keras_model.input_shape[1:])
        self._layers = [numpy_layer(layer) for layer in keras_model.layers]

    def __call__(self, batch):
        """float32 batch shaped like the model's input -> NumPy outputs."""
        x = np.asarray(batch, dtype=np.float32).reshape((-1, *self.input_shape))
        for layer in self._layers:
            x = layer(x)
        return x

    def warm_up(self):
        self(np.zeros((1, *self.input_shape), dtype=np.float32))


def fastest_runner(keras_model):
    """NumPy for the small Sequential models it can run, a compiled TensorFlow graph otherwise."""
    return NumpyModel(keras_model) if NumpyModel.fits(keras_model) else CompiledModel(keras_model)


def load_digit_model(path, name):
    """Load models/mnist_<name>.keras, ready to run fast."""
    if not path.is_file():
        raise ModelUnavailable(
            f"the {name} digit model is missing ({path}); train it with "
            f"`python train_mnist.py --arch {name}` (add --data DIR when offline)"
        )
    note_threads_before_tensorflow()
    import keras

    try:
        return fastest_runner(keras.saving.load_model(path, compile=False))
    except Exception as exc:  # a corrupt or foreign file: say which, don't crash
        raise ModelUnavailable(f"the {name} digit model at {path} cannot be loaded: {exc}") from None


def load_imagenet_index():
    """[(wnid, label)] in Xception's output order, from the shipped class index."""
    index = json.loads(IMAGENET_INDEX.read_text())
    return [tuple(index[str(i)]) for i in range(len(index))]


def imagenet_weights_cache():
    """Where Keras keeps Xception's downloaded ImageNet weights (~/.keras/models/...)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / IMAGENET_WEIGHTS_FILE


def download_imagenet_weights(destination, progress=lambda received: None):
    """Download Xception's ImageNet weights to `destination`, checked, then renamed into place.

    No wait on the network lasts more than DOWNLOAD_TIMEOUT_SECONDS, nor the whole
    download more than DOWNLOAD_MAX_SECONDS. Raises OSError, or ValueError when the
    file is not the one Keras expects. `progress(bytes received)` follows it.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    deadline = time.monotonic() + DOWNLOAD_MAX_SECONDS
    md5, received = hashlib.md5(usedforsecurity=False), 0
    try:
        with urlopen(IMAGENET_WEIGHTS_URL, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response, open(partial, "wb") as out:
            while chunk := response.read(1024 * 1024):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the download took over {DOWNLOAD_MAX_SECONDS} s")
                out.write(chunk)
                md5.update(chunk)
                received += len(chunk)
                progress(received)
        if md5.hexdigest() != IMAGENET_WEIGHTS_MD5:
            raise ValueError(f"the downloaded file ({received} bytes) is not the expected one (MD5 differs)")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def load_xception(weights, progress=lambda received: None):
    """Xception with ImageNet weights from a file, or 'imagenet': Keras' cached copy,
    downloaded first when there is none (`progress` follows the download)."""
    if weights == "imagenet":
        weights = imagenet_weights_cache()
        if not weights.is_file():
            try:
                download_imagenet_weights(weights, progress)
            except (OSError, ValueError) as exc:  # no network, a firewall, a bad file
                raise ModelUnavailable(
                    f"Xception is unavailable: could not download the ImageNet weights "
                    f"({exc.__class__.__name__}: {exc}). " + HOW_TO_GET_WEIGHTS
                ) from None
    elif not Path(weights).is_file():
        raise ModelUnavailable(
            f"XCEPTION_WEIGHTS={weights} is not a file; point it at Keras' "
            "xception_weights_tf_dim_ordering_tf_kernels.h5, or set it to 'imagenet' "
            "on a machine with internet"
        )
    note_threads_before_tensorflow()
    from keras.applications import Xception

    try:
        return CompiledModel(Xception(weights=str(weights)))
    except Exception as exc:  # a bad or foreign file
        raise ModelUnavailable(
            f"Xception is unavailable: could not load {weights} ({exc.__class__.__name__}: {exc}). "
            + HOW_TO_GET_WEIGHTS
        ) from None



_threads_before_tensorflow = {}  # pid -> the native threads this process had before importing TensorFlow


def native_thread_ids():
    return {int(task) for task in os.listdir("/proc/self/task")} if os.path.isdir("/proc/self/task") else set()


def python_thread_ids():
    return {thread.native_id for thread in threading.enumerate()}


def note_threads_before_tensorflow():
    """Remember this process's threads (NumPy's BLAS threads among them) the first time it
    is about to import TensorFlow, so that TensorFlow's own can be told from them."""
    if os.getpid() not in _threads_before_tensorflow and "tensorflow" not in sys.modules:
        _threads_before_tensorflow[os.getpid()] = native_thread_ids()


def lower_tensorflow_priority(nice):
    """Run TensorFlow's own threads (Xception's compute: the digit models run in NumPy on the
    request threads) at a lower CPU priority: on a busy server, digits and pages get the
    cores first, and Xception all that is left, which is all of it when nothing else runs.
    TensorFlow's threads are those that Python did not start and that the process did not
    have before it imported TensorFlow. Linux only; elsewhere nothing changes."""
    if not hasattr(os, "setpriority") or not os.path.isdir("/proc/self/task"):
        return 0
    before = _threads_before_tensorflow.get(os.getpid(), set())
    candidates = native_thread_ids() - before - python_thread_ids()
    time.sleep(0.05)  # a Python thread that was just starting has registered by now
    lowered = 0
    for tid in candidates - python_thread_ids():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
            lowered += 1
        except OSError:  # the thread has ended
            pass
    return lowered


class ModelRegistry:
    """All models of one process. Cheap to create: nothing loads until asked."""

    def __init__(self, models_folder, xception_weights="imagenet", queues=None,
                 batch_max_wait=BATCH_MAX_WAIT_SECONDS, xception_nice=XCEPTION_NICE):
        self.models_folder = Path(models_folder)
        self.xception_weights = xception_weights
        self.queues = dict(DEFAULT_QUEUES, **(queues or {}))
        self.batch_max_wait = batch_max_wait
        self.xception_nice = xception_nice  # 0: Xception's threads keep the server's priority
        self.admissions = {name: Admission(name, settings.limit, settings.seconds_per_request)
                           for name, settings in self.queues.items()}
        self._digits = {}
        self._imagenet_labels = None
        self._load_lock = threading.Lock()  # digit models: local files, loaded in milliseconds
        self._xception = None
        # (monotonic time, message). Only the message is kept: an exception raised again and again
        # grows its traceback each time, and with it every frame's locals (each request's image).
        self._xception_error = None
        self._xception_loader = None  # the thread loading Xception, while it runs
        self._xception_downloaded = None  # bytes of its weights downloaded so far
        self._xception_lock = threading.Lock()  # guards the four above, never held while loading

    def admission(self, name):
        """The model's place in line (batching.Admission): hold one to use the model."""
        return self.admissions[name]

    def _in_line(self, name, model):
        """The model as its callers use it: behind a DynamicBatcher when it batches."""
        settings = self.queues[name]
        if settings.max_batch <= 1:
            return model
        return DynamicBatcher(model, settings.max_batch, self.batch_max_wait, self.admissions[name])

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
                    model = self._in_line(name, load_digit_model(self.digit_model_path(name), name))
                    self._digits[name] = model
                    log.info("loaded the %s digit model", name)
        return model

    def digit_report(self, name):
        """What train_mnist.py wrote about the model (accuracy, ...), or None."""
        path = self.models_folder / f"mnist_{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def xception(self):
        """(compiled Xception, seconds this request waited for it to load, or None).

        Xception loads in a background thread. A request waits for it when its weights
        are a local file (a few seconds, no network), but never for a download: it gets
        ModelUnavailable (503) saying the weights are on their way. Raises ModelUnavailable,
        saying what is missing and how to fix it, when Xception can't load.
        """
        if self._xception is not None:
            return self._xception, None
        started = time.monotonic()
        downloading = self.xception_weights == "imagenet" and not imagenet_weights_cache().is_file()
        loader = self._start_loading_xception()
        loader.join(DOWNLOAD_FIRST_WAIT_SECONDS if downloading else XCEPTION_WAIT_SECONDS)
        with self._xception_lock:
            if self._xception is not None:
                return self._xception, time.monotonic() - started
            if self._xception_loader is None and self._xception_error is not None:
                raise ModelUnavailable(self._xception_error[1])
            raise ModelUnavailable(self._xception_progress(), retry_after=60 if downloading else 5)

    def _start_loading_xception(self):
        """The thread loading Xception, started if none is; raises a failure younger than the retry delay."""
        with self._xception_lock:
            if self._xception_loader is None:
                if self._xception_error and time.monotonic() - self._xception_error[0] < XCEPTION_RETRY_SECONDS:
                    raise ModelUnavailable(self._xception_error[1])
                self._xception_loader = threading.Thread(target=self._load_xception, name="load-xception",
                                                         daemon=True)
                self._xception_loader.start()
            return self._xception_loader

    def _load_xception(self):
        """In the background: download if need be, load, warm up; then publish the model or the error."""
        started = time.monotonic()
        log.info("loading Xception weights (%s); this takes a few seconds", self.xception_weights)
        model = error = None
        try:
            model = self._in_line("xception", load_xception(self.xception_weights, progress=self._note_download))
            model.warm_up()
            if self.xception_nice > 0:
                lower_tensorflow_priority(self.xception_nice)
            log.info("Xception ready in %.1f s", time.monotonic() - started)
        except Exception as exc:  # nothing may escape a background thread unseen
            if not isinstance(exc, ModelUnavailable):
                log.exception("loading Xception failed")
                exc = ModelUnavailable(f"Xception is unavailable: loading it failed ({exc.__class__.__name__}: {exc})")
            log.warning("%s", exc)
            model, error = None, (time.monotonic(), str(exc))
        finally:
            with self._xception_lock:
                self._xception, self._xception_error = model, error
                self._xception_loader = self._xception_downloaded = None

    def _note_download(self, received):
        self._xception_downloaded = received

    def _xception_progress(self):
        """What a request hears while Xception is on its way."""
        if self.xception_weights == "imagenet" and not imagenet_weights_cache().is_file():
            received = self._xception_downloaded
            so_far = f" ({received / 1e6:.0f} MB so far)" if received else ""
            return (f"Xception is not ready yet: its ImageNet weights (88 MB) are downloading{so_far}; "
                    "retry in a minute. " + HOW_TO_GET_WEIGHTS)
        return "Xception is not ready yet: it is still loading; retry in a few seconds"

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
                self.xception()  # a local file loads now; a download goes on in the background
            except ModelUnavailable:
                pass  # logged; requests answer 503 with the reason meanwhile

    def readiness(self):
        """(ready, reasons not): ready when both digit models are loaded and neither
        digit queue is full. A full Xception queue sheds its own requests (503) but
        leaves the server ready: digits and pages are still answered at once."""
        reasons = [f"the {name} digit model is not loaded" for name in DIGIT_MODELS if name not in self._digits]
        reasons += [f"the {name} queue is full ({self.admissions[name].in_flight} of {self.admissions[name].limit})"
                    for name in DIGIT_MODELS if self.admissions[name].full()]
        return not reasons, reasons

    def queue_state(self):
        """Each model's requests in flight, limit and requests shed so far, in this process."""
        return {name: admission.state() for name, admission in self.admissions.items()}

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
        with self._xception_lock:
            if self._xception is not None:
                state["xception"] = {"state": "loaded"}
            elif self._xception_loader is not None:
                state["xception"] = {"state": "loading", "message": self._xception_progress()}
            elif self._xception_error:
                state["xception"] = {"state": "unavailable", "error": self._xception_error[1]}
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
