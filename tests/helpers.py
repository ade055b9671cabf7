"""Small helpers shared by the test modules."""

import io
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from app.quota import LEDGER
from app.samples import multipart  # noqa: F401 (the tests import it from here too)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def encode(image, format="PNG", **options):
    """A PIL image or uint8 array -> file bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def post_file(client, url, data, filename="digit.png", **fields):
    """POST `data` as the multipart field `file`."""
    return client.post(url, data={"file": (io.BytesIO(data), filename), **fields},
                       content_type="multipart/form-data")


def folder_files(folder):
    """The names of the files in an upload folder, sorted, all but the quota's ledger
    (and SQLite's files beside it)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(LEDGER)) if folder.exists() else []


# Dynamic batching (app/batching.py) ----------------------------------------------------


class RecordingModel:
    """A model (by default a stand-in: output = input * 2 + 1) whose calls' row counts are
    recorded; its first call can be held until `release` is set, so that the next callers
    queue behind it."""

    def __init__(self, hold_first=False, fail_when=None, function=lambda batch: batch * 2 + 1, input_shape=(3,)):
        self.function, self.input_shape = function, input_shape
        self.calls = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_when = fail_when

    def __call__(self, batch):
        self.calls.append(len(batch))
        self.started.set()
        self.release.wait(10)
        if self.fail_when is not None and self.fail_when(batch):
            raise ValueError("this batch failed")
        return self.function(batch)


def call_from_threads(batcher, inputs):
    """Call `batcher` with each input from its own thread; (outputs, errors) by index."""
    outputs, errors = [None] * len(inputs), [None] * len(inputs)

    def call(index):
        try:
            outputs[index] = batcher(inputs[index])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            errors[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    return threads, outputs, errors


def queued(batcher, count, timeout=10):
    """Wait until `count` calls are waiting behind the one running."""
    deadline = time.monotonic() + timeout
    while len(batcher._pending) < count:
        assert time.monotonic() < deadline, "the callers never queued"
        time.sleep(0.001)


def batched_while_busy(model, inputs, max_batch=64):
    """Call a DynamicBatcher around `model` with each of `inputs` from a thread of its own,
    all while a first call holds the model, so that they queue and run batched:
    (outputs, errors, the row count of each model call)."""
    from app.batching import DynamicBatcher

    held = RecordingModel(hold_first=True, function=model, input_shape=model.input_shape)
    batcher = DynamicBatcher(held, max_batch=max_batch)
    first, _, _ = call_from_threads(batcher, [inputs[0]])
    held.started.wait(10)
    threads, outputs, errors = call_from_threads(batcher, inputs)
    queued(batcher, len(inputs))
    held.release.set()
    for thread in first + threads:
        thread.join(120)
    return outputs, errors, held.calls
