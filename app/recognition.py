"""From an accepted upload to an answer: shared by the pages and the JSON API.

Route -> admitted -> read_upload -> prepare_image (prepare_digits) -> model -> JSON or template.
"""

import io
import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
from flask import abort, current_app
from PIL import Image

from .models import DIGIT_MODELS, ModelUnavailable, top_predictions
from .preprocessing import (NoDigitFound, digit_choices, exif_orientation, prepare_digit,
                            prepare_xception_input)

# The uncertainty rule (shown on the models page, documented in the README): an answer is
# "not sure" when the headline model's top probability is under this, or when the models
# that answered disagree. The API runs one model, so there only the first half applies.
UNSURE_BELOW = 0.8
MAX_DIGITS = 20  # longer rows are not numbers people write (and bound a request's work)


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


class TooManyDigits(ValueError):
    """The picture holds more digits than a number this app reads."""


@dataclass(frozen=True)
class DigitReading:
    digit: int
    confidence: float
    probabilities: list  # 10 floats
    box: tuple  # (x, y, width, height) in the uploaded picture's upright pixels
    pixels: np.ndarray  # the 28x28 input the model saw


@dataclass(frozen=True)
class NumberReading:
    model: str
    digits: list  # [DigitReading], left to right
    marks: tuple = ()  # ((how many digits stand before it, "." "," or "-"), ...) written between digits

    @property
    def number(self):
        """The digits, with the points, commas and dashes written between them ("12,50"), and a minus before them."""
        text = []
        for index, reading in enumerate(self.digits):
            text += [char for position, char in self.marks if position == index]
            text.append(str(reading.digit))
        return "".join(text)

    @property
    def confidence(self):
        """The least sure digit's confidence: a number is only as sure as its weakest digit."""
        return min(reading.confidence for reading in self.digits)

    def as_json(self):
        return {
            "model": self.model,
            "number": self.number,
            "confidence": self.confidence,
            "digits": [{"digit": reading.digit, "confidence": reading.confidence,
                        "probabilities": reading.probabilities, "box": list(reading.box)}
                       for reading in self.digits],
        }


def read_number(image, model_name, size=None):
    """A decoded picture of a number -> NumberReading, all its digits in one model call.

    For every caller: the API, the pages, batch jobs. `size`: the upright (width,
    height) the boxes refer to (see prepare_digits). Raises NoDigitFound (its message
    begins "no digits found" when the picture holds no digit), TooManyDigits, and
    answers 503 through digit_model when the model can't load.
    """
    try:
        choices = digit_choices(image, size)
    except NoDigitFound as exc:
        raise NoDigitFound(str(exc).replace("no digit found:", "no digits found:", 1)) from None
    groups = [options for options in choices if not isinstance(options, str)]  # the rest are marks
    too_many(sum(len(options[0]) for options in groups))
    # Every option of every group in one batch: one model call for the whole number.
    candidates = [digit for options in groups for option in options for digit in option]
    rows = iter(digit_model(model_name)(np.stack([digit.pixels for digit in candidates])))
    readings, marks = [], []
    for options in choices:
        if isinstance(options, str):
            marks.append((len(readings), options))
            continue
        read = [[(DigitReading(int(row.argmax()), float(row.max()), [float(p) for p in row], digit.box, digit.pixels),
                  digit.plausibility) for digit, row in zip(option, rows)] for option in options]
        # Where the group might be touching digits, or one wide digit: the reading most
        # likely as a whole, each part's confidence weighed by its plausibility as a digit.
        best = max(read, key=lambda option: math.prod(reading.confidence * plausible for reading, plausible in option))
        readings += [reading for reading, _ in best]
    too_many(len(readings))
    return NumberReading(model_name, readings, tuple(marks))


def too_many(count):
    if count > MAX_DIGITS:
        raise TooManyDigits(f"too many digits: found {count}, and a number may have at most {MAX_DIGITS}; "
                            "photograph or draw fewer digits at a time")


def number_from(upload, model_name):
    """read_number for an accepted upload; 400 when it holds no digits or too many."""
    try:
        return read_number(upload.image, model_name, uploaded_size(upload))
    except (NoDigitFound, TooManyDigits) as exc:
        abort(400, description=str(exc))


def uploaded_size(upload):
    """The upload's upright (width, height), as sent: a JPEG may have been decoded at
    a reduced scale (images.open_untrusted's draft), so its header is read again."""
    width, height = upload.image.size
    if upload.format in ("JPEG", "MPO"):
        width, height = Image.open(io.BytesIO(upload.data)).size
    return (height, width) if exif_orientation(upload.image) in (5, 6, 7, 8) else (width, height)


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
