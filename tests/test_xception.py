"""Xception end to end, with a weights file saved from Xception(weights=None):
ImageNet weights can't be downloaded here, so the labels it gives are
meaningless, but every step from upload to top-5 JSON is the real one. Its
download is served from loopback: a server that never answers, a wrong file,
and the right one."""

import gc
import hashlib
import http.server
import io
import json
import re
import socket
import threading
import time
import weakref
from contextlib import contextmanager
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from app.models import IMAGENET_WEIGHTS_FILE, CompiledModel, ModelRegistry, ModelUnavailable, load_imagenet_index, load_xception
from app.preprocessing import prepare_xception_input
from helpers import ROOT, batched_while_busy, encode, post_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def random_xception(tmp_path_factory):
    """(the Keras model, the path of its saved weights)."""
    from keras.applications import Xception

    model = Xception(weights=None)
    path = tmp_path_factory.mktemp("xception") / "xception_random.weights.h5"
    model.save_weights(path)
    return model, path


@pytest.fixture
def xception_client(app, random_xception):
    app.extensions["models"] = ModelRegistry(ROOT / "models", xception_weights=str(random_xception[1]))
    return app.test_client()


def a_photo():
    """A 640x480 RGB picture with some structure, as a JPEG."""
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return encode(rgb, "JPEG", quality=90)


def test_top5_from_a_weights_file_matches_the_model_itself(xception_client, random_xception, uploads):
    model, _ = random_xception
    data = a_photo()
    response = post_file(xception_client, "/api/predict/xception", data, "photo.jpg")
    assert response.status_code == 200
    body = response.json
    assert body["model"] == "xception" and len(body["predictions"]) == 5
    assert uploads() == [body["upload"]]

    expected = model(prepare_xception_input(Image.open(io.BytesIO(data))), training=False).numpy()[0]
    labels = load_imagenet_index()
    best = np.argsort(expected)[::-1][:5]
    assert [p["wnid"] for p in body["predictions"]] == [labels[i][0] for i in best]
    assert [p["label"] for p in body["predictions"]] == [labels[i][1] for i in best]
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]], expected[best], rtol=1e-4)
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_the_first_request_says_when_it_waited_for_the_weights(xception_client):
    first = post_file(xception_client, "/api/predict/xception", a_photo(), "photo.jpg").json
    second = post_file(xception_client, "/api/predict/xception", a_photo(), "photo.jpg").json
    # Loading 88 MB of weights and tracing takes seconds on 2 cores; the second is instant.
    assert "were loaded for this request" in first["note"]
    assert "note" not in second


def test_xception_page_shows_the_top5_at_the_photos_own_address(xception_client):
    response = xception_client.post("/xception", data={"file": (io.BytesIO(a_photo()), "p.jpg")})
    assert response.status_code == 303 and response.headers["Location"].startswith("/xception/")
    page, again = xception_client.get(response.headers["Location"]), xception_client.get(response.headers["Location"])
    assert page.status_code == 200 and page.data.count(b"<meter") == 5
    assert page.data == again.data  # the kept answer: Xception does not run again


def test_the_class_index_ships_all_1000_imagenet_classes():
    index = json.loads((ROOT / "app" / "data" / "imagenet_class_index.json").read_text())
    assert len(index) == 1000 and len({wnid for wnid, _ in index.values()}) == 1000
    assert index["0"] == ["n01440764", "tench"] and index["281"] == ["n02123045", "tabby"]


def test_an_offline_imagenet_download_is_unavailable_with_what_to_do(monkeypatch, keras_home):
    def offline(*args, **kwargs):  # what urllib raises with no network, without trying one
        raise URLError("Name or service not known")

    monkeypatch.setattr("app.models.urlopen", offline)
    with pytest.raises(ModelUnavailable, match="could not download the ImageNet weights.*XCEPTION_WEIGHTS"):
        load_xception("imagenet")


def test_an_offline_machines_first_xception_request_hears_why_not_downloading(
        imagenet_client, keras_home, monkeypatch):
    def offline(*args, **kwargs):  # no network: the name does not resolve, at once
        raise URLError("Name or service not known")

    monkeypatch.setattr("app.models.urlopen", offline)
    first = post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg")
    assert first.status_code == 503
    assert "could not download the ImageNet weights" in first.json["error"]
    assert "XCEPTION_WEIGHTS" in first.json["error"] and "downloading" not in first.json["error"]


def test_a_bad_weights_path_is_unavailable_and_digits_keep_working(client, tmp_path, mnist_sample):
    not_weights = tmp_path / "xception.h5"
    not_weights.write_bytes(b"not an HDF5 file")
    with pytest.raises(ModelUnavailable, match="could not load"):
        load_xception(str(not_weights))
    response = post_file(client, "/api/predict/mnist", encode(mnist_sample[0][0]))
    assert response.status_code == 200


def test_a_failed_load_keeps_nothing_of_the_requests_it_answers(tmp_path):
    """Each request gets an error of its own: one raised again and again kept every
    request's frames, and so its decoded image (125 MB for a 36-megapixel PNG)."""
    registry = ModelRegistry(ROOT / "models", xception_weights=str(tmp_path / "missing.h5"))

    class Image:
        pass

    def request():
        image = Image()
        with pytest.raises(ModelUnavailable):
            registry.xception()
        return weakref.ref(image)

    images = [request() for _ in range(3)]
    gc.collect()
    assert [image() for image in images] == [None, None, None]


"""
## Downloading the ImageNet weights: in the background, never in a request
"""


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache: where the downloaded weights land."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


@pytest.fixture
def imagenet_client(app, keras_home):
    """A client whose app gets Xception's weights the default way ("imagenet")."""
    app.extensions["models"] = ModelRegistry(ROOT / "models", xception_weights="imagenet")
    return app.test_client()


@contextmanager
def unanswered_download(monkeypatch):
    """Point the weights download at a loopback port that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setattr("app.models.IMAGENET_WEIGHTS_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/w.h5")
        yield


@contextmanager
def served_download(monkeypatch, data, md5=None):
    """Point the weights download at a loopback server of `data`, expected to have `md5` (its own by default)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr("app.models.IMAGENET_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/w.h5")
    monkeypatch.setattr("app.models.IMAGENET_WEIGHTS_MD5", md5 or hashlib.md5(data).hexdigest())
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def xception_state(client, wanted=None, timeout=120):
    """/health's Xception entry, once its state is `wanted` (at once when None)."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.get("/health").json["models"]["xception"]
        if wanted in (None, state["state"]) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@pytest.fixture(scope="module")
def legacy_random_weights(random_xception, tmp_path_factory):
    """Random Xception weights in the legacy HDF5 layout of Keras' ImageNet file."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path = tmp_path_factory.mktemp("legacy") / IMAGENET_WEIGHTS_FILE
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, random_xception[0])
    return path.read_bytes()


def test_an_unreachable_download_holds_up_no_request_and_then_says_what_to_do(
        imagenet_client, keras_home, monkeypatch, mnist_sample):
    monkeypatch.setattr("app.models.DOWNLOAD_TIMEOUT_SECONDS", 2)
    with unanswered_download(monkeypatch):
        started = time.monotonic()
        first = post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg")
        assert time.monotonic() - started < 1  # the request did not wait for the network
        assert first.status_code == 503
        assert "downloading" in first.json["error"] and "XCEPTION_WEIGHTS" in first.json["error"]
        assert xception_state(imagenet_client)["state"] == "loading"
        digit = post_file(imagenet_client, "/api/predict/mnist", encode(mnist_sample[0][0]))
        assert digit.status_code == 200  # meanwhile

        failed = xception_state(imagenet_client, "unavailable", timeout=10)
        assert "could not download the ImageNet weights" in failed["error"] and "timed out" in failed["error"]
        started = time.monotonic()
        again = post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg")
        assert again.status_code == 503 and again.json["error"] == failed["error"]
        assert time.monotonic() - started < 1  # no new attempt within the retry delay
    assert [p for p in keras_home.rglob("*") if p.is_file() and p.name != "keras.json"] == []  # no partial file left


def test_a_download_that_is_not_the_expected_file_is_not_kept(imagenet_client, keras_home, monkeypatch):
    with served_download(monkeypatch, b"<html>a captive portal</html>", md5=hashlib.md5(b"the real file").hexdigest()):
        assert post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg").status_code == 503
        failed = xception_state(imagenet_client, "unavailable", timeout=10)
    assert "not the expected one" in failed["error"]
    assert [p for p in keras_home.rglob("*") if p.is_file()] == []


def test_downloaded_weights_are_checked_cached_and_then_serve(
        imagenet_client, keras_home, monkeypatch, legacy_random_weights):
    with served_download(monkeypatch, legacy_random_weights):
        first = post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg")
        # A loopback download may be done within the first request's short wait: then it is loading.
        assert first.status_code == 503 and re.search("downloading|still loading", first.json["error"])
        assert xception_state(imagenet_client, "loaded")["state"] == "loaded"
    answer = post_file(imagenet_client, "/api/predict/xception", a_photo(), "photo.jpg")
    assert answer.status_code == 200 and len(answer.json["predictions"]) == 5 and "note" not in answer.json
    assert (keras_home / "models" / IMAGENET_WEIGHTS_FILE).read_bytes() == legacy_random_weights


def test_photos_batched_together_get_the_top5_each_would_get_alone(random_xception):
    """Six different photos queued behind a busy Xception run as one batch, and each gets
    the answer it gets alone (equal to float32 rounding: another batch, another sum order)."""
    model = CompiledModel(random_xception[0])
    rng = np.random.default_rng(7)
    photos = [prepare_xception_input(Image.fromarray(rng.integers(0, 256, (240 + 10 * i, 320, 3), dtype=np.uint8)))
              for i in range(6)]
    outputs, errors, calls = batched_while_busy(model, photos, max_batch=8)
    assert errors == [None] * 6 and calls == [1, 6]
    for photo, batched in zip(photos, outputs):
        alone = model(photo)
        assert list(np.argsort(batched[0])[::-1][:5]) == list(np.argsort(alone[0])[::-1][:5])
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)


def test_xceptions_tensorflow_threads_yield_the_cpu_and_numpys_do_not(random_xception, tmp_path):
    """In a fresh process, as in a gunicorn worker: once Xception is loaded, TensorFlow's
    threads run at nice XCEPTION_NICE; the Python threads (requests) and the threads the
    process had before TensorFlow (NumPy's BLAS pool) keep their priority."""
    import json
    import subprocess
    import sys

    script = f"""
import json, os, threading
import numpy as np
np.ones((64, 64)) @ np.ones((64, 64))  # NumPy's BLAS threads exist now
from app.models import ModelRegistry, native_thread_ids, python_thread_ids
before_tensorflow = native_thread_ids()
registry = ModelRegistry({str(ROOT / "models")!r}, xception_weights={str(random_xception[1])!r}, xception_nice=10)
registry.warm_up(xception=True)
nice = {{}}
for tid in native_thread_ids():
    try:
        nice[tid] = (os.getpriority(os.PRIO_PROCESS, tid), open(f"/proc/self/task/{{tid}}/comm").read().strip())
    except (ProcessLookupError, FileNotFoundError):  # the thread ended meanwhile
        pass
print(json.dumps({{"own": os.getpriority(os.PRIO_PROCESS, 0), "python": sorted(python_thread_ids()),
                  "before": sorted(before_tensorflow), "nice": {{str(k): v for k, v in nice.items()}}}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    XCEPTION_NICE = 10  # as XCEPTION_NICE=10 asks

    nice = {int(tid): value for tid, (value, _) in report["nice"].items()}
    own = report["own"]
    tensorflow = [tid for tid in nice if tid not in report["python"] and tid not in report["before"]]
    lowered = [tid for tid in tensorflow if nice[tid] >= max(XCEPTION_NICE, own)]
    names = {tid: report["nice"][str(tid)][1] for tid in tensorflow}
    # TensorFlow's named pools, and its unnamed compute threads (two on 2 cores), all lowered;
    # a thread it may start later inherits its creator's priority.
    assert all(tid in lowered for tid in tensorflow if names[tid].startswith("tf_")), report
    assert sum(1 for tid in lowered if not names[tid].startswith("tf_")) >= 2, report
    assert all(nice[tid] == own for tid in report["python"] + report["before"] if tid in nice)
