"""Many clients at once: every answer is the answer that image gets alone, and the
production server (gunicorn, real HTTP) stays healthy through hostile uploads."""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.models import DIGIT_MODELS
from app.uploads import STORED_NAME
from helpers import encode, folder_files, multipart, post_file
from benchmarks.live_server import live_server
from test_hostile_uploads import EPS, png_bomb

MNIST_URL = "/api/predict/mnist"


@pytest.fixture(scope="module")
def digits(mnist_sample):
    """The first MNIST test digit of each class, as PNG bytes, with its label."""
    images, labels = mnist_sample
    firsts = [int(np.flatnonzero(labels == label)[0]) for label in range(10)]
    return [(encode(images[i]), int(labels[i])) for i in firsts]


def run_together(count, work):
    """Run work(i) for i in range(count) on `count` threads released at the same moment."""
    start = threading.Barrier(count)

    def worker(i):
        start.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(worker, range(count)))


def test_threads_get_the_answers_a_single_thread_gets(app, uploads, digits):
    jobs = [(image, model) for image in range(len(digits)) for model in DIGIT_MODELS]
    client = app.test_client()
    alone = {}
    for image, model in jobs:
        response = post_file(client, f"{MNIST_URL}?model={model}", digits[image][0])
        alone[image, model] = np.array(response.json["probabilities"])
    assert [alone[i, m].argmax() for i, m in jobs] == [digits[i][1] for i, m in jobs]  # and they are right

    threads, requests_each = 16, 10

    def client_thread(t):
        own_client = app.test_client()
        answers = []
        for r in range(requests_each):
            image, model = jobs[(t * requests_each + r * 7) % len(jobs)]  # each thread its own mix
            response = post_file(own_client, f"{MNIST_URL}?model={model}", digits[image][0])
            answers.append((image, model, response.status_code, response.json))
        return answers

    answers = [a for thread_answers in run_together(threads, client_thread) for a in thread_answers]
    assert len(answers) == threads * requests_each
    for image, model, status, body in answers:
        assert status == 200 and body["model"] == model
        np.testing.assert_allclose(body["probabilities"], alone[image, model], rtol=0, atol=1e-6)
        assert body["prediction"] == alone[image, model].argmax()
    stored = [body["upload"] for *_, body in answers]
    assert len(set(stored)) == len(stored)  # no two uploads share a name
    assert set(stored) <= set(uploads()) and len(uploads()) == len(jobs) + len(stored)


# Over real HTTP, against the production server -----------------------------------------


class HttpClient:
    """One keep-alive connection to the live server, as a browser or script would hold."""

    def __init__(self, base_url, timeout=60):
        host, port = base_url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        """(status, response, parsed JSON body)."""
        try:
            self.connection.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            # The server refused a too-large body from its Content-Length alone, answered,
            # and closed while we were still sending. The answer is waiting to be read,
            # and browsers read it; so do we.
            pass
        response = self.connection.getresponse()
        return response.status, response, json.loads(response.read())

    def upload(self, data, path=MNIST_URL, filename="digit.png"):
        body, content_type = multipart(data, filename)
        return self.request("POST", path, body, {"Content-Type": content_type})

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.connection.close()


def chunks_of(data, size=64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.slow
def test_gunicorn_under_concurrent_and_hostile_uploads(tmp_path, digits):
    folder = tmp_path / "uploads"
    clients, requests_each = 16, 3
    with live_server(folder) as base_url:

        def browser(c):
            with HttpClient(base_url) as connection:
                answers = []
                for r in range(requests_each):
                    image, label = digits[(c + r * 3) % len(digits)]
                    model = DIGIT_MODELS[(c + r) % len(DIGIT_MODELS)]
                    status, _, body = connection.upload(image, f"{MNIST_URL}?model={model}")
                    answers.append((status, body, label, model))
                return answers

        answers = [a for client_answers in run_together(clients, browser) for a in client_answers]
        assert len(answers) == clients * requests_each
        for status, body, label, model in answers:
            assert status == 200, body
            assert body["model"] == model and body["prediction"] == label
        accepted = {body["upload"] for _, body, _, _ in answers}

        # Hostile uploads over the wire, each on a fresh connection: after a refusal
        # without reading the body, gunicorn drops the connection (though its answer
        # said keep-alive). The bombs matter here: Pillow's size check only warns below
        # twice its limit, and outside pytest only app/images.py makes that an error.
        half_a_png = digits[0][0][: len(digits[0][0]) // 2]
        for data, status, message in [
            (bytes(11 * 1024 * 1024), 413, "the upload is too large: the limit is 10 MB"),
            (png_bomb(20_000, 20_000, 1), 400, "too many pixels"),
            (png_bomb(10_000, 10_000, 8), 400, "too many pixels"),
            (png_bomb(7_000, 7_000, 8), 400, "too many pixels"),
            (EPS, 415, "EPS/PostScript files are not accepted"),
            (half_a_png, 400, "truncated or corrupt"),
        ]:
            with HttpClient(base_url) as connection:
                got_status, response, body = connection.upload(data)
            assert (got_status, response.getheader("Content-Type")) == (status, "application/json")
            assert message in body["error"]
        # Without a Content-Length (chunked), the limit applies as the body is read.
        body, content_type = multipart(bytes(11 * 1024 * 1024))
        with HttpClient(base_url) as connection:
            status, _, answer = connection.request("POST", MNIST_URL, chunks_of(body), {"Content-Type": content_type})
        assert status == 413 and "too large" in answer["error"]

        # Still healthy, and still right.
        with HttpClient(base_url) as connection:
            status, _, health = connection.request("GET", "/health")
            assert status == 200 and health["status"] == "ok"
            status, _, body = connection.upload(digits[7][0])
            assert status == 200 and body["prediction"] == 7
            accepted.add(body["upload"])

    # Only the accepted uploads were kept, each under a generated name, nothing else.
    stored = set(folder_files(folder))
    assert stored == accepted
    assert all(STORED_NAME.fullmatch(name) for name in stored)
    log = next(tmp_path.glob("gunicorn-*.log")).read_text()
    assert "rejected POST /api/predict/mnist: too many pixels" in log  # the reason reaches the log
    assert "Traceback" not in log
