"""Every documented answer to a bad or awkward upload, over real HTTP from the
production server that `make run` starts (gunicorn, gunicorn.conf.py), not only
through Flask's test client. Afterwards the server is healthy and the upload
folder holds exactly the accepted uploads, under generated names."""

import http.client
import json
import threading
import time

import pytest

import hostile_files
from app.uploads import STORED_NAME
from helpers import multipart
from live_server import live_server
from test_hostile_uploads import AWKWARD_UPLOADS, BAD_UPLOADS, handwriting_from

pytestmark = pytest.mark.slow
MNIST_URL = "/api/predict/mnist"


def post(base_url, data, filename, path=MNIST_URL):
    """One upload on a fresh connection (gunicorn drops a connection after a 413)."""
    body, content_type = multipart(data, filename)
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        try:
            connection.request("POST", path, body, {"Content-Type": content_type})
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was read: the answer is still there to read
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), json.loads(response.read())
    finally:
        connection.close()


def stored(folder):
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live") / "uploads"
    with live_server(folder) as base_url:
        yield base_url, folder


def test_every_bad_upload_gets_its_documented_answer_over_http(server, mnist_sample):
    base_url, folder = server
    handwritten = handwriting_from(mnist_sample)
    before = stored(folder)
    for case in BAD_UPLOADS:
        make_file, filename, status, message = case.values
        got = post(base_url, make_file(handwritten), filename)
        assert got[:2] == (status, "application/json"), (case.id, got)
        assert message.lower() in got[2]["error"].lower(), (case.id, got)
    assert stored(folder) == before  # nothing refused was kept


@pytest.mark.parametrize("model", ["dense", "cnn"])
def test_every_awkward_upload_is_read_correctly_over_http(server, mnist_sample, model):
    base_url, folder = server
    handwritten = handwriting_from(mnist_sample)
    before = stored(folder)
    accepted = set()
    for case in AWKWARD_UPLOADS:
        make_file, filename, label, extension = case.values
        status, _, body = post(base_url, make_file(handwritten), filename, f"{MNIST_URL}?model={model}")
        assert (status, body.get("prediction")) == (200, label), (case.id, body)
        assert STORED_NAME.match(body["upload"]) and body["upload"].endswith("." + extension)
        accepted.add(body["upload"])
    assert stored(folder) - before == accepted


# The worst of the decoder bombs in tests/test_hostile_uploads.py, with their answers.
# Before they were refused from their structure, eight such uploads kept every /health
# request waiting for over a minute.
WORST_UPLOADS = [
    ("jpeg_progressive_filling_the_upload", "too many scans"),
    ("jpeg_sequential_scans", "too many scans"),
    ("tiff_huge_tile", "far larger than its image"),
    ("tiff_many_strips", "5,000,000 strips"),
    ("png_palette_at_the_cap", "looks blank"),
    ("webp_animated_huge_canvas", "too large to decode"),
    ("png_many_chunks", "chunks"),
    ("gif_long_comment", "extension blocks"),
]
# The costliest files the server does decode, a second of CPU or more each: eight at once
# kept /health waiting for 20 s until large decodes took turns (one per worker).
COSTLIEST_UPLOADS = ["png_rgba16_at_the_cap"] * 3 + [
    "png_rgba8_at_the_cap", "tiff_rgba_at_the_cap", "webp_lossless_at_the_limit",
    "jpeg_progressive_at_the_limit", "png_grey16_at_the_cap"]


def health_seconds(base_url):
    """One GET /health on a fresh connection: its round trip in seconds."""
    host, port = base_url.removeprefix("http://").split(":")
    start = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    return time.perf_counter() - start


def post_all_at_once(base_url, files):
    """Post every file at once, each on its own connection, while /health is asked
    every 50 ms: (the answers, the /health round trips in seconds)."""
    answers = [None] * len(files)

    def upload(index):
        answers[index] = post(base_url, files[index], "upload")

    uploaders = [threading.Thread(target=upload, args=(index,)) for index in range(len(files))]
    probes = [health_seconds(base_url)]
    for thread in uploaders:
        thread.start()
    while any(thread.is_alive() for thread in uploaders):
        probes.append(health_seconds(base_url))
        time.sleep(0.05)
    return answers, probes + [health_seconds(base_url) for _ in range(3)]


def test_eight_decoder_bombs_at_once_leave_health_answering_within_a_second(server):
    base_url, folder = server
    before = stored(folder)
    answers, probes = post_all_at_once(base_url, [getattr(hostile_files, name)() for name, _ in WORST_UPLOADS])
    for (status, _, body), (name, message) in zip(answers, WORST_UPLOADS):
        assert status == 400 and message in body["error"], (name, body)
    assert max(probes) < 1.0, probes
    assert stored(folder) == before


def test_eight_of_the_costliest_decodes_at_once_take_turns_and_health_answers(server):
    base_url, folder = server
    before = stored(folder)
    answers, probes = post_all_at_once(base_url, [getattr(hostile_files, name)() for name in COSTLIEST_UPLOADS])
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {400, 503} and 400 in statuses, answers
    for status, _, body in answers:
        assert ("looks blank" if status == 400 else "busy decoding another large image") in body["error"]
    assert max(probes) < 1.0, probes
    assert stored(folder) == before


def test_the_server_is_healthy_afterwards(server):
    base_url, _ = server
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    connection.close()
