"""The fast inference path answers exactly what Keras' own ways of running a model answer."""

import io

import numpy as np
import pytest
from PIL import Image

from app.batching import DynamicBatcher
from app.models import DIGIT_MODELS, CompiledModel, NumpyModel, fastest_runner
from app.preprocessing import prepare_image
from helpers import encode, post_file
from train_mnist import to_model_input


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_the_served_model_equals_keras_predict_on_500_digits(registry, mnist_sample, name):
    model = registry.digit(name)
    x = to_model_input(mnist_sample[0], name)
    expected = model.keras_model.predict(x, verbose=0)  # batches of 32, Keras' way
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_the_api_answers_what_the_model_says_about_the_prepared_digit(client, registry, mnist_sample, name):
    png = encode(mnist_sample[0][0])
    response = post_file(client, "/api/predict/mnist", png, model=name)
    keras_model = registry.digit(name).keras_model
    digit = prepare_image(Image.open(io.BytesIO(png)))  # (28, 28)
    expected = keras_model(digit.reshape(1, *keras_model.input_shape[1:]), training=False).numpy()[0]
    np.testing.assert_allclose(response.json["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert response.json["prediction"] == int(expected.argmax()) == mnist_sample[1][0]


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_one_trace_serves_every_batch_size(registry, name):
    model = CompiledModel(registry.digit(name).keras_model)
    model.warm_up()
    for size in (1, 2, 7, 64, 500, 1, 3):
        assert model(np.zeros((size, *model.input_shape), np.float32)).shape == (size, 10)
    assert model.function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_any_array_shaped_like_the_input_is_accepted(registry, name):
    """A (28, 28) digit, a flat list, float64: all become one float32 batch of the right shape."""
    model = registry.digit(name)
    digit = np.random.default_rng(0).random((28, 28))
    expected = model(digit.astype(np.float32).reshape(1, *model.input_shape))
    for same_digit in (digit, digit.ravel().tolist(), digit[None, ..., None]):
        assert np.array_equal(model(same_digit), expected)


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_both_digit_models_run_in_numpy_and_agree_with_the_compiled_graph(registry, mnist_sample, name):
    model = registry.digit(name)
    # The CNN is batched under load (app/batching.py); the dense net runs lock-free, unwrapped.
    runner = model.model if name == "cnn" else model
    assert isinstance(model, DynamicBatcher) == (name == "cnn")
    assert isinstance(runner, NumpyModel)
    x = to_model_input(mnist_sample[0], name)
    graph = CompiledModel(model.keras_model)
    np.testing.assert_allclose(model(x), graph(x), rtol=1e-5, atol=1e-6)


def test_a_model_with_a_layer_numpy_cannot_run_gets_the_compiled_graph():
    import keras
    from keras import layers

    padded = keras.Sequential([keras.Input(shape=(8, 8, 1)), layers.Conv2D(2, 3, padding="same"),
                               layers.Flatten(), layers.Dense(3)])
    assert isinstance(fastest_runner(padded), CompiledModel)
    gelu = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3, activation="gelu")])
    assert isinstance(fastest_runner(gelu), CompiledModel)
