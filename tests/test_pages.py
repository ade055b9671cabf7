"""The HTML pages a person uses: home, result, Xception, models."""

import json
import re

import numpy as np
import pytest
from markupsafe import escape

from app import create_app
from helpers import FIXTURES, encode, post_file


@pytest.mark.parametrize(("path", "texts"), [
    ("/", [b'data-testid="upload-input"', b'data-testid="upload-submit"',
           b'data-testid="draw-canvas"', b'data-testid="draw-submit"', b"draw.js"]),
    ("/xception", [b"Recognise any photo with Xception", b'name="file"']),
    ("/models", [b"Explore CNN", b"How does it differ from a dense network?",
                 b'data-testid="accuracy-dense"', b'data-testid="accuracy-cnn"']),
])
def test_pages_render(client, path, texts):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    for text in texts:
        assert text in response.data


def test_models_page_reads_what_train_mnist_wrote(client, registry):
    page = client.get("/models").data.decode()
    for name in ("dense", "cnn"):
        accuracy = registry.digit_report(name)["test_accuracy"]
        assert f'data-testid="accuracy-{name}">{accuracy * 100:.2f}%' in page
        assert f"/models/{name}/curves.png" in page and f"/models/{name}/confusion.png" in page


def test_models_page_shows_how_each_model_was_trained(client, registry):
    page = client.get("/models").data.decode()
    for name in ("dense", "cnn"):
        report = registry.digit_report(name)
        shown = f"<strong>{escape(report['recipe'])}</strong>: {escape(report['recipe_description'])}"
        assert f'data-testid="recipe-{name}">{shown}</dd>' in page


def test_models_page_copes_with_reports_from_before_recipes(tmp_path, registry, missing_weights):
    # Reports written before train_mnist.py recorded the recipe have no such field.
    for name, recipe in (("dense", "lesson"), ("cnn", None)):
        report = dict(registry.digit_report(name), recipe=recipe,
                      recipe_description="MNIST digits as they are")
        if recipe is None:
            del report["recipe"], report["recipe_description"]
        (tmp_path / f"mnist_{name}.json").write_text(json.dumps(report))
    client = create_app({"TESTING": True, "MODELS_FOLDER": str(tmp_path),
                         "XCEPTION_WEIGHTS": missing_weights}).test_client()
    response = client.get("/models")
    page = response.data.decode()
    assert response.status_code == 200
    assert 'data-testid="recipe-dense"><strong>lesson</strong>: MNIST digits as they are</dd>' in page
    assert 'data-testid="recipe-cnn">not recorded in its report</dd>' in page


@pytest.mark.parametrize("name", ["dense", "cnn"])
@pytest.mark.parametrize("plot", ["curves", "confusion", "errors"])
def test_training_plots_are_served(client, name, plot):
    with client.get(f"/models/{name}/{plot}.png") as response:  # a streamed file: close it
        assert response.status_code == 200 and response.data.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/models/rnn/curves.png", "/models/cnn/secrets.png", "/models/../app/curves.png"])
def test_only_known_plots_are_served(client, path):
    assert client.get(path).status_code == 404


@pytest.mark.parametrize(("photo", "digit"), [
    ("digit_photo_3.jpg", 3), ("digit_photo_7.jpg", 7), ("chalk_photo_5.jpg", 5),
])
def test_a_photo_upload_shows_the_digit_both_models_and_what_they_saw(client, uploads, photo, digit):
    response = post_file(client, "/predict", (FIXTURES / "photos" / photo).read_bytes(), photo)
    assert response.status_code == 303 and response.headers["Location"] == f"/digits/{uploads()[0]}"
    page = client.get(response.headers["Location"]).data.decode()
    assert re.search(r'data-testid="prediction">(\d)<', page).group(1) == str(digit)
    assert page.count("<meter") == 20  # ten bars for each of the two models
    assert f'src="/uploads/{uploads()[0]}/preview"' in page
    assert 'src="data:image/png;base64,' in page  # the 28x28 input itself


def test_the_stored_upload_is_served_back_as_an_inert_image(client, uploads, mnist_sample):
    post_file(client, "/predict", encode(mnist_sample[0][0]))
    with client.get(f"/uploads/{uploads()[0]}") as response:
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("data", "status", "message"), [
    (b"", 400, "The file is empty."),
    (b"<html><script>alert(1)</script></html>", 415, "Unsupported file type: HTML files are not accepted"),
    (encode(np.full((80, 80), 255, np.uint8)), 400, "No digit found: the image looks blank."),
])
def test_a_bad_upload_gets_a_readable_page(client, uploads, data, status, message):
    response = post_file(client, "/predict", data, "x.png")
    assert response.status_code == status and response.mimetype == "text/html"
    assert message in response.data.decode()
    assert b"Traceback" not in response.data and uploads() == []


def test_xception_page_without_weights_says_how_to_get_them(client):
    response = post_file(client, "/xception", (FIXTURES / "photos" / "digit_photo_3.jpg").read_bytes(), "p.jpg")
    assert response.status_code == 503 and b"XCEPTION_WEIGHTS" in response.data


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404 and b"There is nothing at this address" in response.data
