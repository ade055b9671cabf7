"""TF Serving's REST protocol on /v1/models: what a TF Serving client sends works here too."""

import io
import json

import numpy as np
import pytest

from app.serving import MAX_BATCH
from train_mnist import to_model_input

SERVED = {"mnist_dense": "dense", "mnist_cnn": "cnn"}


@pytest.fixture(scope="module")
def instances(mnist_sample):
    """Three MNIST test digits per model, shaped as each model's signature wants."""
    images = mnist_sample[0][:3]
    return {name: to_model_input(images, arch).tolist() for name, arch in SERVED.items()}


def predict(client, name, body, version=None):
    url = f"/v1/models/{name}/versions/{version}:predict" if version else f"/v1/models/{name}:predict"
    return client.post(url, data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                       content_type="application/json")


@pytest.mark.parametrize(("request_key", "response_key"), [
    ("instances", "predictions"),  # row format
    ("inputs", "outputs"),  # columnar format
])
@pytest.mark.parametrize("name", SERVED)
def test_predictions_are_the_registry_models_outputs(client, registry, instances, name, request_key, response_key):
    response = predict(client, name, {request_key: instances[name]})
    assert response.status_code == 200
    assert list(response.json) == [response_key]
    expected = registry.digit(SERVED[name])(np.array(instances[name], np.float32))
    assert np.array_equal(np.array(response.json[response_key], np.float32), expected)


@pytest.mark.parametrize("name", SERVED)
def test_named_inputs_and_explicit_version_and_signature_are_accepted(client, registry, instances, name):
    input_name = registry.digit(SERVED[name]).keras_model.inputs[0].name
    plain = predict(client, name, {"instances": instances[name]}).json["predictions"]
    row = {"signature_name": "serving_default", "instances": [{input_name: x} for x in instances[name]]}
    columnar = {"inputs": {input_name: instances[name]}}
    assert predict(client, name, row, version=1).json["predictions"] == plain
    assert predict(client, name, columnar, version=1).json["outputs"] == plain


def test_integers_are_numbers_too(client):
    response = predict(client, "mnist_dense", {"instances": [[0] * 784]})
    assert response.status_code == 200
    assert sum(response.json["predictions"][0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("body", "message"), [
    ("not json", "the body is not valid JSON"),
    ("[" * 100_000, "the body is not valid JSON"),
    ([[0.0] * 784], 'the body must be a JSON object with "instances" or "inputs"'),
    ({}, 'exactly one of "instances" (row format) or "inputs" (columnar)'),
    ({"instances": [[0.0] * 784], "inputs": [[0.0] * 784]}, 'exactly one of "instances"'),
    ({"instances": []}, '"instances" must be a non-empty list of instances'),
    ({"instances": [0.0, 0.5, 1.0]}, 'each instance in "instances" must have shape [784], got []'),
    ({"inputs": [0.0, 0.5, 1.0]}, 'each instance in "inputs" must have shape [784], got []'),
    ({"inputs": 0.5}, '"inputs" must be a non-empty list of instances'),
    ({"instances": [[0.0] * 783]}, "got [783]; that is 783 values, the model needs 784"),
    ({"instances": [[[0.0] * 28] * 28]}, "got [28, 28]; the number of values is right: reshape each instance to [784]"),
    ({"instances": [[0.0] * 784, [0.0] * 783]}, '"instances" is a ragged list: every instance needs the same shape'),
    ({"instances": [["0.5"] * 784]}, '"instances" must hold only numbers'),
    ({"instances": [[True] * 784]}, '"instances" must hold only numbers'),
    ({"instances": [[None] * 784]}, '"instances" must hold only numbers'),
    ('{"instances": [[NaN]]}', '"instances" must hold only finite numbers'),
    ('{"instances": [[Infinity]]}', '"instances" must hold only finite numbers'),
    ('{"inputs": [[-Infinity]]}', '"inputs" must hold only finite numbers'),
    # Issue 14, finding 13: float32 products overflowed to inf, and the answer to NaN.
    ({"instances": [[3e38] * 784]}, '"instances" must hold values between -255 and 255'),
    ({"instances": [[1e39] * 784]}, "pixels, which these models expect scaled to [0, 1]"),
    ({"inputs": [[0.0] * 783 + [-256]]}, '"inputs" must hold values between -255 and 255'),
    ({"instances": [{"pixels": [0.0] * 784}]}, "got ['pixels']"),
    ({"instances": [[0.0]] * (MAX_BATCH + 1)}, f'"instances" holds {MAX_BATCH + 1} instances; at most {MAX_BATCH} per request'),
    ({"inputs": [[0.0]] * (MAX_BATCH + 1)}, f"at most {MAX_BATCH} per request"),
    ({"signature_name": "classify", "instances": [[0.0] * 784]}, "serving signature name 'classify' not found"),
])
def test_bad_bodies_are_refused_with_tf_servings_error_shape(client, body, message):
    response = predict(client, "mnist_dense", body)
    assert response.status_code == 400
    assert list(response.json) == ["error"]
    assert message in response.json["error"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_max_content_length_is_413(client, app, chunked):
    """Sent chunked, without a Content-Length, it was cut at the limit and parsed: a 400
    "not valid JSON" (issue 14, finding 12)."""
    body = json.dumps({"instances": [[0.0] * 784]}).encode()
    too_large = body + b" " * (app.config["MAX_CONTENT_LENGTH"] + 1 - len(body))
    send = post_chunked if chunked else predict
    response = send(client, "mnist_dense", too_large)
    assert response.status_code == 413
    assert "too large" in response.json["error"]


def post_chunked(client, name, body):
    """POST `body` as gunicorn passes a chunked request on: no Content-Length, the stream ended by the server."""
    return client.post(f"/v1/models/{name}:predict", input_stream=io.BytesIO(body), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})


def test_a_chunked_body_up_to_the_limit_is_read_whole(client, app):
    body = json.dumps({"instances": [[0.0] * 784]}).encode()
    at_the_limit = body + b" " * (app.config["MAX_CONTENT_LENGTH"] - len(body))
    for data in (body, at_the_limit):
        response = post_chunked(client, "mnist_dense", data)
        assert response.status_code == 200 and len(response.json["predictions"]) == 1


@pytest.mark.parametrize("name", SERVED)
def test_any_pixel_scale_gives_finite_json(client, name):
    """0-1 as trained, 0-255 as stored, negative when normalised: a finite answer, valid JSON."""
    shape = (784,) if name == "mnist_dense" else (28, 28, 1)
    for value in (0.0, 1.0, 255.0, -255.0):
        response = predict(client, name, {"instances": np.full((1, *shape), value).tolist()})
        assert response.status_code == 200
        assert "NaN" not in response.get_data(as_text=True) and "Infinity" not in response.get_data(as_text=True)
        assert np.isfinite(response.json["predictions"]).all()


def test_a_non_finite_answer_is_refused_not_sent(client, registry, monkeypatch):
    """Never NaN in the JSON (it would not be JSON): should a model answer it, 400."""
    model = registry.digit("dense")
    monkeypatch.setattr(type(model), "__call__", lambda self, batch: np.full((len(batch), 10), np.nan, np.float32))
    response = predict(client, "mnist_dense", {"instances": [[0.0] * 784]})
    assert response.status_code == 400
    assert response.json == {"error": "the model's output for these inputs is not a finite number"}


@pytest.mark.parametrize(("instance_shape", "message"), [
    ((28, 28), "got [28, 28]; add the channel axis: each pixel as a one-element list, shape [28, 28, 1]"),
    ((784,), "got [784]; the number of values is right: reshape each instance to [28, 28, 1]"),
])
def test_cnn_wants_its_signature_shape_exactly_and_says_how_to_get_there(client, instance_shape, message):
    response = predict(client, "mnist_cnn", {"instances": np.zeros((2, *instance_shape)).tolist()})
    assert response.status_code == 400
    assert message in response.json["error"]


@pytest.mark.parametrize(("method", "url", "status", "message"), [
    ("post", "/v1/models/dense:predict", 404, "no model named 'dense'; this server has mnist_dense, mnist_cnn"),
    ("post", "/v1/models/mnist_dense/versions/2:predict", 404, "mnist_dense has only version 1, not 2"),
    ("get", "/v1/models/resnet", 404, "Servable not found: no model named 'resnet'"),
    ("get", "/v1/models/mnist_cnn/versions/7/metadata", 404, "has only version 1, not 7"),
    ("get", "/v1/models/mnist_dense:predict", 405, "use POST"),
    ("post", "/v1/models/mnist_dense", 405, "use GET"),
])
def test_unknown_models_versions_and_methods(client, method, url, status, message):
    response = getattr(client, method)(url, json={"instances": [[0.0] * 784]})
    assert response.status_code == status
    assert message in response.json["error"]


@pytest.mark.parametrize("url", ["/v1/models/mnist_cnn", "/v1/models/mnist_cnn/versions/1"])
def test_model_status_is_available_once_loaded(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response.json == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]}


def test_a_missing_model_file_is_state_end_for_status_and_503_for_predict(app, tmp_path):
    from app.models import ModelRegistry

    app.extensions["models"] = ModelRegistry(tmp_path / "no-models")
    client = app.test_client()
    status = client.get("/v1/models/mnist_dense").json["model_version_status"][0]
    assert (status["state"], status["status"]["error_code"]) == ("END", "NOT_FOUND")
    assert "mnist_dense.keras" in status["status"]["error_message"]
    response = predict(client, "mnist_dense", {"instances": [[0.0] * 784]})
    assert response.status_code == 503
    assert "train it with `python train_mnist.py --arch dense`" in response.json["error"]


@pytest.mark.parametrize(("name", "shape"), [("mnist_dense", ["-1", "784"]), ("mnist_cnn", ["-1", "28", "28", "1"])])
def test_metadata_describes_the_serving_signature(client, registry, name, shape):
    response = client.get(f"/v1/models/{name}/metadata")
    assert response.status_code == 200
    assert response.json["model_spec"] == {"name": name, "signature_name": "", "version": "1"}
    signature = response.json["metadata"]["signature_def"]["signature_def"]["serving_default"]
    input_name = registry.digit(SERVED[name]).keras_model.inputs[0].name
    assert [dim["size"] for dim in signature["inputs"][input_name]["tensor_shape"]["dim"]] == shape
    assert [dim["size"] for dim in signature["outputs"]["output_0"]["tensor_shape"]["dim"]] == ["-1", "10"]
    assert signature["method_name"] == "tensorflow/serving/predict"
