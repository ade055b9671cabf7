"""From an accepted upload to an answer: shared by the pages and the JSON API.

Route -> admitted -> read_upload -> prepare_image -> model -> JSON or template.
"""

from contextlib import ExitStack, contextmanager

from flask import abort, current_app

from .models import DIGIT_MODELS, ModelUnavailable, top_predictions
from .preprocessing import NoDigitFound, prepare_digit, prepare_image, prepare_xception_input

# The uncertainty rule (shown on the models page, documented in the README): an answer is
# "not sure" when the headline model's top probability is under this, or when the models
# that answered disagree. The API runs one model, so there only the first half applies.
UNSURE_BELOW = 0.8


def registry():
    """The process's ModelRegistry (created by create_app, loads lazily)."""
    return current_app.extensions["models"]


@contextmanager
def admitted(*model_names):
    """Hold a place in line for each model the request will use, before any decoding.
    Raises batching.ServerBusy (503 with Retry-After, errors.py) when one is full."""
    with ExitStack() as places:
        for name in model_names:
            places.enter_context(registry().admission(name).admitted())
        yield


def checked_model_name(name):
    if name not in DIGIT_MODELS:
        shown = name if len(name) <= 20 else name[:20] + "..."
        abort(400, description=f"unknown model {shown!r}: use one of {', '.join(DIGIT_MODELS)}")
    return name


def digit_from(upload):
    """The 28x28 digit the models will see; 400 when there is none."""
    try:
        return prepare_image(upload.image)
    except NoDigitFound as exc:
        abort(400, description=str(exc))


def prepared_digit_from(upload):
    """The PreparedDigit (model input, and how many digits stand side by side); 400 when there is none."""
    try:
        return prepare_digit(upload.image)
    except NoDigitFound as exc:
        abort(400, description=str(exc))


def is_uncertain(probabilities_by_model, headline):
    """The uncertainty rule: the `headline` model's top probability under UNSURE_BELOW,
    or the models' answers (the argmax of each one's probabilities) not all the same."""
    answers = {int(max(range(10), key=lambda d: p[d])) for p in probabilities_by_model.values()}
    return bool(max(probabilities_by_model[headline]) < UNSURE_BELOW or len(answers) > 1)


def digit_model(model_name):
    """The loaded digit model; 503, saying how to get it, when it can't load."""
    try:
        return registry().digit(model_name)
    except ModelUnavailable as exc:
        abort(503, description=str(exc))


def digit_probabilities(digit, model_name):
    """The model's 10 probabilities for one prepared digit."""
    return digit_model(model_name)(digit)[0]


def xception_top5(upload):
    """(top-5 ImageNet predictions, seconds spent loading Xception or None); 503 without weights."""
    try:
        model, load_seconds = registry().xception()
    except ModelUnavailable as exc:
        abort(503, description=str(exc), retry_after=exc.retry_after)
    probabilities = model(prepare_xception_input(upload.image))[0]
    return top_predictions(probabilities, registry().imagenet_labels()), load_seconds


def load_note(load_seconds):
    """What to tell the user whose request had to wait for Xception to load."""
    if load_seconds is None:
        return None
    return f"Xception's weights were loaded for this request ({load_seconds:.1f} s); later requests are faster"
