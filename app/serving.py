"""TensorFlow Serving's REST API for our digit models, so clients work with either server.

    POST /v1/models/<name>[/versions/1]:predict   {"instances": [...]} -> {"predictions": [...]}
                                                  {"inputs": [...]}    -> {"outputs": [...]}
    GET  /v1/models/<name>[/versions/1]           the model's version status
    GET  /v1/models/<name>[/versions/1]/metadata  its serving_default signature

Model names are `mnist_dense` and `mnist_cnn`, the names of the model files and of
the SavedModels `scripts/export_models.py` writes (models/export/<name>/1/), so a
client moves between this app and TF Serving by changing the host only. There is
one version, 1: the model file this process loaded.

As in TF Serving, inputs must match the signature exactly: 784 floats per instance
for mnist_dense, 28x28x1 for mnist_cnn (a 28x28 digit is refused, with a hint).
Each instance may also be named, {"input_layer": [...]}, as TF Serving allows.
Values must be finite and within +-MAX_VALUE (the models expect pixels in [0, 1]).
Errors are {"error": "..."}: 400 for a bad body (or a non-finite answer), 404 for an
unknown model or version, 503 when the model file is missing, 413 past
MAX_CONTENT_LENGTH, chunked bodies included. A request holds at most MAX_BATCH
instances. Not implemented: :classify, :regress, /labels/, "b64" values.
https://www.tensorflow.org/tfx/serving/api_rest
"""

import json

import numpy as np
from flask import Blueprint, abort, jsonify, request
from werkzeug.routing import BaseConverter

from .models import DIGIT_MODELS, ModelUnavailable
from .recognition import admitted, digit_model, registry

bp = Blueprint("serving", __name__, url_prefix="/v1/models")

SERVED_MODELS = {f"mnist_{name}": name for name in DIGIT_MODELS}  # serving name -> registry name
VERSION = 1
SIGNATURE = "serving_default"
OUTPUT_NAME = "output_0"  # what Keras' model.export() calls a model's single output
# Instances per request. The model lock is held for the whole batch: 256 CNN digits take
# ~0.3 s on 2 cores, 1,024 took 1.1 s, which would hold up the worker's other requests.
MAX_BATCH = 256
# The models expect pixels in [0, 1]; any pixel scale a client may use (0-255, or
# normalised) passes, and bounded inputs keep the float32 products finite: 3e38 in
# every pixel overflowed the dense net's first product to inf, and its answer to NaN.
MAX_VALUE = 255.0


class ModelNameConverter(BaseConverter):
    """A model name stops at '/' and at the ':' of a verb, so GET .../mnist_dense:predict is a 405."""

    regex = "[^/:]+"


@bp.record_once  # before the routes below, which use it
def add_model_name_converter(state):
    state.app.url_map.converters["model"] = ModelNameConverter


# Request bodies -> a float32 batch. Pure functions: they raise ValueError with the message.

def unwrap_named(value, input_name):
    """TF Serving's named form {"<input name>": value} -> value; anything else unchanged."""
    if not isinstance(value, dict):
        return value
    if set(value) != {input_name}:
        raise ValueError(f"the model has one input, {input_name!r}; got {sorted(value)}")
    return value[input_name]


def numeric_array(value, what):
    """Nested JSON lists of numbers -> float32 array; refuses ragged lists and non-numbers."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(f"{what} is a ragged list: every instance needs the same shape") from None
    if array.dtype.kind not in "iuf":  # b: true/false, U: strings, O: null, objects, huge ints
        raise ValueError(f"{what} must hold only numbers")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must hold only finite numbers")
    if array.size and np.abs(array).max() > MAX_VALUE:
        raise ValueError(f"{what} must hold values between {-MAX_VALUE:g} and {MAX_VALUE:g}: "
                         "pixels, which these models expect scaled to [0, 1]")
    return array.astype(np.float32)


def shape_hint(expected, got):
    """Something helpful to add when an instance has the wrong shape."""
    if got == expected[:-1] and expected[-1] == 1:
        return f"; add the channel axis: each pixel as a one-element list, shape {list(expected)}"
    if int(np.prod(got)) == int(np.prod(expected)):
        return f"; the number of values is right: reshape each instance to {list(expected)}"
    return f"; that is {int(np.prod(got))} values, the model needs {int(np.prod(expected))}"


def checked_count(values, what):
    """A non-empty list of at most MAX_BATCH instances, counted before any conversion."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"{what} must be a non-empty list of instances")
    if len(values) > MAX_BATCH:
        raise ValueError(f"{what} holds {len(values)} instances; at most {MAX_BATCH} per request")
    return values


def checked_shape(batch, instance_shape, what):
    """The batch, if every instance has exactly the signature's shape."""
    got = tuple(batch.shape[1:])
    if got != instance_shape:
        raise ValueError(
            f"each instance in {what} must have shape {list(instance_shape)}, got {list(got)}"
            + shape_hint(instance_shape, got)
        )
    return batch


def batch_from_body(body, input_name, instance_shape):
    """A predict request's JSON -> (float32 batch, "row" or "columnar")."""
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object with "instances" or "inputs"')
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ValueError(f"serving signature name {signature!r} not found; the only one is {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise ValueError('the body must hold exactly one of "instances" (row format) or "inputs" (columnar)')
    if "instances" in body:
        what, form = '"instances"', "row"
        values = [unwrap_named(instance, input_name) for instance in checked_count(body["instances"], what)]
    else:
        what, form = '"inputs"', "columnar"
        values = checked_count(unwrap_named(body["inputs"], input_name), what)
    return checked_shape(numeric_array(values, what), instance_shape, what), form


# Views

def registry_name(name, version):
    """Our registry's name for a served model and version; 404 when there is no such servable."""
    if name not in SERVED_MODELS:
        abort(404, description=f"Servable not found: no model named {name!r}; "
                               f"this server has {', '.join(SERVED_MODELS)}")
    if version is not None and version != VERSION:
        abort(404, description=f"Servable not found: {name} has only version {VERSION}, not {version}")
    return SERVED_MODELS[name]


def served_model(name, version):
    """The compiled model behind a served name; 404 unknown, 503 when its file is missing."""
    return digit_model(registry_name(name, version))


def input_name(model):
    return model.keras_model.inputs[0].name


@bp.post("/<model:name>:predict", defaults={"version": None})
@bp.post("/<model:name>/versions/<int:version>:predict")
def predict(name, version):
    """TF Serving's predict: row ("instances") or columnar ("inputs") format."""
    with admitted(registry_name(name, version)):
        model = served_model(name, version)
        try:
            batch, form = batch_from_body(json_body(), input_name(model), model.input_shape)
        except ValueError as exc:
            abort(400, description=str(exc))
        outputs = model(batch)
    if not np.isfinite(outputs).all():  # never NaN in a JSON answer (it isn't JSON)
        abort(400, description="the model's output for these inputs is not a finite number")
    outputs = outputs.tolist()
    return jsonify(predictions=outputs) if form == "row" else jsonify(outputs=outputs)


def json_body():
    """The request body, parsed; 400 when it is not JSON, 413 past MAX_CONTENT_LENGTH."""
    data = request.get_data(cache=False)
    limit = request.max_content_length
    # Sent chunked (no Content-Length), a body is read up to the limit and no further,
    # without a word: a longer one would look like a shorter, broken one.
    if limit is not None and request.content_length is None and len(data) >= limit and request.input_stream.read(1):
        abort(413)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError included; RecursionError: [[[[...
        abort(400, description="the body is not valid JSON")


@bp.get("/<model:name>", defaults={"version": None})
@bp.get("/<model:name>/versions/<int:version>")
def status(name, version):
    """TF Serving's model status: AVAILABLE once the model is loaded."""
    model_name = registry_name(name, version)
    try:
        registry().digit(model_name)
        state, error_code, message = "AVAILABLE", "OK", ""
    except ModelUnavailable as exc:  # TF Serving reports a failed load as state END, not as an HTTP error
        state, error_code, message = "END", "NOT_FOUND", str(exc)
    return jsonify(model_version_status=[{
        "version": str(VERSION), "state": state,
        "status": {"error_code": error_code, "error_message": message},
    }])


def tensor_info(name, shape):
    """One tensor of a signature, the way TF Serving's metadata describes it."""
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in (-1, *shape)], "unknown_rank": False},
        "name": name,
    }


@bp.get("/<model:name>/metadata", defaults={"version": None})
@bp.get("/<model:name>/versions/<int:version>/metadata")
def metadata(name, version):
    """TF Serving's model metadata: the serving_default signature's inputs and outputs."""
    model = served_model(name, version)
    signature = {
        "inputs": {input_name(model): tensor_info(f"{SIGNATURE}_{input_name(model)}:0", model.input_shape)},
        "outputs": {OUTPUT_NAME: tensor_info("StatefulPartitionedCall:0", model.keras_model.output_shape[1:])},
        "method_name": "tensorflow/serving/predict",
    }
    return jsonify(
        model_spec={"name": name, "signature_name": "", "version": str(VERSION)},
        metadata={"signature_def": {"signature_def": {SIGNATURE: signature}}},
    )
