"""Pictures with nothing written on them are refused, with a reason; digits are not.

The no-digit photos are made here by app.samples.blank_photo, like the digit photos:
paper grain, soft shadows, folds, lighting gradients, poor JPEGs, empty ruled pages,
wood, fabric and concrete, empty chalkboards. The rule was tuned on other seeds
(1000 and up); these 200 are held out.
"""

import io

import pytest
from PIL import Image

from app.preprocessing import NoDigitFound, prepare_image
from app.samples import BLANK_KINDS, blank_photo, draw_on_canvas, jpeg_bytes, photograph, STRAIGHT_DIGITS
from helpers import FIXTURES, post_file

HELD_OUT = 200
SIZES = [(640, 480), (480, 640), (1024, 768), (400, 300)]


def held_out_blank(seed):
    kind = BLANK_KINDS[seed % len(BLANK_KINDS)]
    return kind, Image.open(io.BytesIO(jpeg_bytes(blank_photo(kind, SIZES[seed % len(SIZES)], seed))))


def refused(image):
    try:
        prepare_image(image)
    except NoDigitFound:
        return True
    return False


def test_at_least_95_percent_of_the_held_out_no_digit_photos_are_refused():
    answers = [(kind, refused(image)) for kind, image in map(held_out_blank, range(HELD_OUT))]
    share = sum(was_refused for _, was_refused in answers) / len(answers)
    accepted = sorted({kind for kind, was_refused in answers if not was_refused})
    assert share >= 0.95, f"refused {share:.1%}; accepted some of: {accepted}"


@pytest.mark.parametrize("kind", BLANK_KINDS)
def test_every_kind_of_no_digit_photo_is_mostly_refused(kind):
    seeds = [seed for seed in range(HELD_OUT) if BLANK_KINDS[seed % len(BLANK_KINDS)] == kind][:10]
    assert sum(refused(held_out_blank(seed)[1]) for seed in seeds) >= 8


def test_blank_paper_gets_a_reason_from_the_api(client, uploads):
    photo = jpeg_bytes(blank_photo("shadow", seed=3))
    response = post_file(client, "/api/predict/mnist", photo, "paper.jpg")
    assert response.status_code == 400
    assert response.json["error"].startswith("no digit found: nothing stands out from the paper")
    assert uploads() == []  # refused: nothing kept


@pytest.mark.parametrize("photo", ["digit_photo_3.jpg", "digit_photo_7.jpg", "chalk_photo_5.jpg"])
def test_the_committed_digit_photos_are_not_refused(photo):
    assert not refused(Image.open(FIXTURES / "photos" / photo))


def test_no_photographed_mnist_digit_is_refused(mnist_sample):
    """100 real handwritten digits, on each kind of paper, small and large in the frame."""
    images, _ = mnist_sample
    papers = ("plain", "ruled", "squared")
    for index, image in enumerate(images[:100]):
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
        photo = photograph(drawing, paper=papers[index % 3], digit_height=(0.25, 0.5, 0.85)[index % 3], seed=index)
        assert not refused(Image.open(io.BytesIO(jpeg_bytes(photo)))), f"digit {index} refused"


@pytest.mark.parametrize("name", list(STRAIGHT_DIGITS))
def test_no_straight_stroke_drawing_is_refused(name):
    _, strokes = STRAIGHT_DIGITS[name]
    for fill in (0.3, 0.55, 0.95):
        assert not refused(draw_on_canvas(strokes, fill))


def test_an_unknown_kind_of_blank_photo_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kind 'sky'"):
        blank_photo("sky")
