"""Every documented answer to a bad or awkward upload, over real HTTP from the
production server that `make run` starts (gunicorn, gunicorn.conf.py), not only
through Flask's test client. Afterwards the server is healthy and the upload
folder holds exactly the accepted uploads, under generated names."""

import http.client
import json

import pytest

from app.uploads import STORED_NAME
from helpers import folder_files, multipart
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
    return set(folder_files(folder))


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
        assert STORED_NAME.fullmatch(body["upload"]) and body["upload"].endswith("." + extension)
        accepted.add(body["upload"])
    assert stored(folder) - before == accepted


def test_the_server_is_healthy_afterwards(server):
    base_url, _ = server
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    connection.close()
