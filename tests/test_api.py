"""The JSON API's contract: what curl users and other tools rely on."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.models import DIGIT_MODELS
from helpers import encode, post_file

STORED_NAME = re.compile(r"[0-9a-f]{32}\.png")


def confident_digits(mnist_sample, count=5):
    """A few (image, label) pairs of different classes from the real MNIST fixture."""
    images, labels = mnist_sample
    firsts = [int(np.flatnonzero(labels == d)[0]) for d in range(count)]
    return [(images[i], int(labels[i])) for i in firsts]


@pytest.mark.parametrize("model", DIGIT_MODELS)
def test_predict_mnist_answers_with_the_contract(client, uploads, mnist_sample, model):
    image, label = confident_digits(mnist_sample)[3]
    response = post_file(client, f"/api/predict/mnist?model={model}", encode(image))
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"model", "prediction", "confidence", "probabilities", "uncertain", "upload"}
    assert body["model"] == model and body["prediction"] == label
    assert body["uncertain"] is False  # a confident digit (README: the rule)
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == max(body["probabilities"])
    assert body["prediction"] == int(np.argmax(body["probabilities"]))
    assert STORED_NAME.fullmatch(body["upload"]) and uploads() == [body["upload"]]


def test_model_can_be_chosen_in_the_form_too(client, mnist_sample):
    image, _ = confident_digits(mnist_sample)[0]
    response = post_file(client, "/api/predict/mnist", encode(image), model="cnn")
    assert response.json["model"] == "cnn"


def test_dense_is_the_default_model(client, mnist_sample):
    image, _ = confident_digits(mnist_sample)[0]
    assert post_file(client, "/api/predict/mnist", encode(image)).json["model"] == "dense"


def test_a_plain_png_is_stored_as_it_was_sent(client, app, mnist_sample):
    data = encode(confident_digits(mnist_sample)[1][0])
    name = post_file(client, "/api/predict/mnist", data).json["upload"]
    assert (Path(app.config["UPLOAD_FOLDER"]) / name).read_bytes() == data


@pytest.mark.parametrize(("path", "keep"), [
    ("/api/predict/mnist?model=cnn", "0"), ("/api/predict/mnist", "no"), ("/api/predict/number", "false"),
])
def test_keep_0_answers_without_keeping_the_upload(client, uploads, mnist_sample, path, keep):
    """The pages' live answers while drawing ask for this: one per pen lift, each kept, would
    push real uploads (and their result pages) out of the capped folder."""
    image, label = confident_digits(mnist_sample)[3]
    response = post_file(client, path, encode(image), keep=keep)
    assert response.status_code == 200
    assert response.json["upload"] is None
    assert response.json.get("prediction", label) == label and response.json.get("number", str(label)) == str(label)
    assert uploads() == []
    kept = post_file(client, path, encode(image), keep="1").json["upload"]  # and 1 keeps it, as by default
    assert uploads() == [kept]


@pytest.mark.slow
@pytest.mark.parametrize("model", DIGIT_MODELS)
def test_mnist_test_digits_uploaded_as_png_score_like_the_raw_test_set(client, registry, mnist_sample, model):
    """Uploading MNIST digits as PNGs must cost (almost) nothing against the raw set."""
    images, labels = mnist_sample
    raw = registry.digit(model)(images.astype("float32") / 255).argmax(axis=1)
    served = np.array([
        post_file(client, f"/api/predict/mnist?model={model}", encode(image)).json["prediction"]
        for image in images
    ])
    assert (served == labels).mean() >= (raw == labels).mean() - 0.005


@pytest.mark.parametrize(("method", "path", "data", "status", "message"), [
    ("post", "/api/predict/mnist?model=rnn", "digit", 400, "unknown model 'rnn': use one of dense, cnn"),
    ("post", "/api/predict/number?keep=maybe", "digit", 400, "keep must be 1 (keep a copy of the upload: the default) or 0, or yes/no, true/false; got 'maybe'"),
    ("post", "/api/predict/mnist", None, 415, "send the image as a multipart form (multipart/form-data)"),
    ("post", "/api/predict/mnist", b"", 400, "the file is empty"),
    ("post", "/api/predict/mnist", b"just some text", 415, "unsupported file type: text files"),
    ("post", "/api/predict/mnist", "blank", 400, "no digit found: the image looks blank"),
    ("post", "/api/predict/xception", b"GIF89a garbage", 400, "corrupt: it starts like a GIF"),
    ("get", "/api/predict/mnist", None, 405, "use POST"),
    ("get", "/api/predict/xception", None, 405, "use POST"),
    ("put", "/health", None, 405, "use GET"),
    ("get", "/api/nothing-here", None, 404, "there is nothing at this address"),
])
def test_errors_are_json_with_a_clear_message(client, uploads, mnist_sample, method, path, data, status, message):
    if data == "digit":
        data = encode(confident_digits(mnist_sample)[0][0])
    elif data == "blank":
        data = encode(np.full((64, 64), 255, np.uint8))
    if data is None:
        response = getattr(client, method)(path)
    else:
        response = post_file(client, path, data)
    assert response.status_code == status
    assert response.is_json and set(response.json) == {"error"}
    assert message in response.json["error"]
    assert uploads() == []  # nothing is kept from a refused request


def test_xception_without_weights_is_503_with_what_to_do(client, uploads):
    photo = encode(Image.new("RGB", (64, 48), (120, 160, 200)), "JPEG")
    response = post_file(client, "/api/predict/xception", photo, "photo.jpg")
    assert response.status_code == 503
    assert "XCEPTION_WEIGHTS" in response.json["error"]
    assert uploads() == []


def test_a_missing_digit_model_is_503_and_says_how_to_train_it(client, app, tmp_path, mnist_sample):
    from app.models import ModelRegistry

    app.extensions["models"] = ModelRegistry(tmp_path / "empty", xception_weights="unused")
    response = post_file(client, "/api/predict/mnist?model=cnn", encode(confident_digits(mnist_sample)[0][0]))
    assert response.status_code == 503
    assert "python train_mnist.py --arch cnn" in response.json["error"]


def test_health_reports_each_model(client):
    response = client.get("/health")
    assert response.status_code == 200
    models = response.json["models"]
    assert set(models) == {"dense", "cnn", "xception"}
    assert models["dense"]["state"] in ("loaded", "ready to load")
    assert models["xception"]["state"] in ("loads on first use", "unavailable")


def test_health_shows_no_server_paths(client, app, tmp_path):
    """Anyone can read /health: file names at most, never the server's directories."""
    from app.models import ModelRegistry

    weights = tmp_path / "private" / "xception.weights.h5"
    app.extensions["models"] = ModelRegistry(tmp_path / "private" / "models", xception_weights=str(weights))
    before = client.get("/health")
    assert before.json["models"]["xception"] == {"state": "loads on first use", "weights": "xception.weights.h5"}
    assert post_file(client, "/api/predict/xception", encode(Image.new("RGB", (64, 48)), "JPEG")).status_code == 503
    after = client.get("/health")
    assert after.json["models"]["xception"]["state"] == "unavailable"
    assert "XCEPTION_WEIGHTS=xception.weights.h5 is not a file" in after.json["models"]["xception"]["error"]
    assert after.json["models"]["dense"]["state"] == "missing"
    for response in (before, after):
        assert str(tmp_path) not in response.get_data(as_text=True)
        assert "/private" not in response.get_data(as_text=True)
