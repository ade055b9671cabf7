"""Xception end to end, with a weights file saved from Xception(weights=None):
ImageNet weights can't be downloaded here, so the labels it gives are
meaningless, but every step from upload to top-5 JSON is the real one."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from app.models import ModelRegistry, ModelUnavailable, load_imagenet_index, load_xception
from app.preprocessing import prepare_xception_input
from helpers import ROOT, encode, post_file

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


def test_xception_page_shows_the_top5(xception_client):
    response = xception_client.post("/xception", data={"file": (io.BytesIO(a_photo()), "p.jpg")})
    assert response.status_code == 200
    assert response.data.count(b"<meter") == 5


def test_the_class_index_ships_all_1000_imagenet_classes():
    index = json.loads((ROOT / "app" / "data" / "imagenet_class_index.json").read_text())
    assert len(index) == 1000 and len({wnid for wnid, _ in index.values()}) == 1000
    assert index["0"] == ["n01440764", "tench"] and index["281"] == ["n02123045", "tabby"]


def test_an_offline_imagenet_download_is_unavailable_with_what_to_do(monkeypatch):
    def offline(*args, **kwargs):  # what Keras raises with no network, without trying one
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(ModelUnavailable, match="could not download the ImageNet weights.*XCEPTION_WEIGHTS"):
        load_xception("imagenet")


def test_a_bad_weights_path_is_unavailable_and_digits_keep_working(client, tmp_path, mnist_sample):
    not_weights = tmp_path / "xception.h5"
    not_weights.write_bytes(b"not an HDF5 file")
    with pytest.raises(ModelUnavailable, match="could not load"):
        load_xception(str(not_weights))
    response = post_file(client, "/api/predict/mnist", encode(mnist_sample[0][0]))
    assert response.status_code == 200
