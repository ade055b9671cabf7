"""Digits drawn with straight strokes, as people draw them on the home page's canvas,
and the same digits photographed on plain, ruled and squared paper.

A straight stroke across the canvas is as long as a ruled line: these tests hold
`prepare_image` to telling them apart. Each drawing is made here, with the page's pen
(app.samples), at 55-95% of the canvas and at the canvas's middle and corners.
"""

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from app.preprocessing import prepare_image
from app.samples import PEN_WIDTH, STRAIGHT_DIGITS, draw_on_canvas, jpeg_bytes, photograph, place, png_bytes

FILLS = (0.55, 0.75, 0.95)
ANCHORS = {"centre": (0.5, 0.5), "top left": (0, 0), "bottom right": (1, 1), "bottom left": (0, 1),
           "top right": (1, 0)}
DRAWINGS = [
    pytest.param(name, fill, ANCHORS[where], id=f"{name}-{fill:.0%}-{where}")
    for name, fill, where in itertools.product(STRAIGHT_DIGITS, FILLS, ANCHORS)
]


def answers(registry, digit):
    return {name: int(registry.digit(name)(digit)[0].argmax()) for name in ("dense", "cnn")}


@pytest.mark.parametrize(("name", "fill", "anchor"), DRAWINGS)
def test_the_cnn_reads_every_straight_stroke_drawing(registry, name, fill, anchor):
    label, strokes = STRAIGHT_DIGITS[name]
    digit = prepare_image(Image.open(io.BytesIO(png_bytes(draw_on_canvas(strokes, fill, anchor)))))
    assert answers(registry, digit)["cnn"] == label


def test_the_dense_net_reads_at_least_92_percent_of_the_drawings(registry):
    right = [
        answers(registry, prepare_image(draw_on_canvas(strokes, fill, anchor)))["dense"] == label
        for (label, strokes), fill, anchor in itertools.product(STRAIGHT_DIGITS.values(), FILLS, ANCHORS.values())
    ]
    assert np.mean(right) >= 0.92, f"dense read {np.mean(right):.1%} of {len(right)} drawings"


@pytest.mark.parametrize("name", ["vertical 1", "7 with a bar wider than tall", "2 with a long base"])
def test_a_stroke_across_the_whole_canvas_is_kept(name):
    """Every stroke reaches the 28x28 digit: nothing is cut as if it were a ruled line."""
    _, strokes = STRAIGHT_DIGITS[name]
    drawing = draw_on_canvas(strokes, 0.95)
    digit = prepare_image(drawing)
    # The drawing's own ink, scaled to the 20x20 box, against the prepared digit's.
    ink = 255 - np.asarray(drawing.convert("L"), dtype=np.float32)
    assert (digit > 0.5).sum() >= 0.8 * ink_pixels_in_box(ink)


def ink_pixels_in_box(ink):
    """How many pixels the drawing's ink covers once fitted into MNIST's 20x20 box."""
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = 20 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BOX))
    return (small > 127).sum()


@pytest.mark.parametrize("paper", ["plain", "ruled", "squared"])
@pytest.mark.parametrize("name", list(STRAIGHT_DIGITS))
def test_straight_stroke_digits_photographed_on_paper_are_read(registry, name, paper):
    label, strokes = STRAIGHT_DIGITS[name]
    for seed, height in ((1, 0.35), (2, 0.8)):  # a small digit, and one that fills the photo
        photo = jpeg_bytes(photograph(draw_on_canvas(strokes, 0.9), (640, 480), paper, height, seed))
        digit = prepare_image(Image.open(io.BytesIO(photo)))
        assert answers(registry, digit) == {"dense": label, "cnn": label}, f"digit {height:.0%} of the photo"


@pytest.mark.parametrize("paper", ["ruled", "squared"])
def test_the_lines_of_the_paper_are_removed(mnist_sample, paper):
    """An MNIST digit written on lined paper comes out as it does on plain paper."""
    images, _ = mnist_sample
    for image in images[:20]:
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
        on_plain = prepare_image(photograph(drawing, paper="plain", digit_height=0.5, seed=3))
        on_lines = prepare_image(photograph(drawing, paper=paper, digit_height=0.5, seed=3))
        # Blurred, so that a one-pixel shift of the centring does not count.
        on_plain, on_lines = ndimage.gaussian_filter(on_plain, 1.0), ndimage.gaussian_filter(on_lines, 1.0)
        assert np.corrcoef(on_plain.ravel(), on_lines.ravel())[0, 1] > 0.85  # without line removal: < 0.7


@pytest.mark.parametrize("paper", ["ruled", "squared"])
def test_a_small_digit_on_lined_paper_keeps_its_box(registry, mnist_sample, paper):
    """A digit an eighth of the photo tall, smaller than the lines are apart: the dashes a
    faint line leaves behind, far from the digit, must not widen its box. (They did: the
    digit shrank into a corner of the 28x28 input and was read "1", 90-96% sure.)"""
    images, labels = mnist_sample
    read = []
    for seed, (image, label) in enumerate(zip(images[:20], labels[:20])):
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
        on_plain = prepare_image(photograph(drawing, paper="plain", digit_height=0.12, seed=seed))
        on_lines = prepare_image(photograph(drawing, paper=paper, digit_height=0.12, seed=seed))
        read.append(answers(registry, on_lines)["cnn"] == label)
        blurred = [ndimage.gaussian_filter(digit, 1.0).ravel() for digit in (on_plain, on_lines)]
        assert np.corrcoef(*blurred)[0, 1] > 0.8, f"digit {seed}"
    assert np.mean(read) >= 0.95



@pytest.mark.parametrize("name", ["7 with a bar wider than tall", "2 with a long base", "closed 4"])
@pytest.mark.parametrize(("size", "pen"), [(512, 2), (1000, 2), (600, 3)])
def test_thin_pen_drawings_keep_their_long_strokes(registry, name, size, pen):
    """A drawing app's thin pen: a clean drawing has no ruled lines to remove."""
    label, strokes = STRAIGHT_DIGITS[name]
    digit = prepare_image(draw_on_canvas(strokes, fill=0.9, canvas=size, pen=pen))
    assert answers(registry, digit) == {"dense": label, "cnn": label}


@pytest.mark.parametrize("name", ["2 with a long base", "5 with a long top bar", "7"])
@pytest.mark.parametrize("size", [(1600, 1200), (3000, 2000)])
def test_a_stray_pixel_far_from_a_drawn_digit_changes_nothing(registry, name, size):
    """A paint program's big picture, the digit small in its top left corner and one stray
    pixel in the far corner: the crop reached the stray pixel, and the digit was reduced
    with it to a few pixels tall ("2" read "8", "7" read "3"). The specks dropped, the
    kept ink is cropped again: the digit is prepared as if the pixel were not there."""
    label, strokes = STRAIGHT_DIGITS[name]
    clean = Image.new("RGB", size, "white")
    clean.paste(draw_on_canvas(strokes, fill=0.8, canvas=200, pen=4), (0, 0))
    stray = clean.copy()
    stray.putpixel((size[0] - 20, size[1] - 20), (0, 0, 0))
    digit = prepare_image(stray)
    np.testing.assert_array_equal(digit, prepare_image(clean))
    assert answers(registry, digit) == {"dense": label, "cnn": label}


def test_a_dithered_texture_costs_no_more_than_a_photo():
    """Every other pixel inked (226 bytes as a PNG) once made 131,000 'line' pieces: 1-5 s."""
    import time

    dithered = Image.new("L", (513, 513), 128).convert("1")
    started = time.process_time()
    try:
        prepare_image(dithered)
    except Exception as exc:  # a refusal is fine; slowness is not
        assert "no digit" in str(exc)
    assert time.process_time() - started < 0.5  # loosely: ~0.07 s here


@pytest.mark.parametrize("name, anchor, tap", [
    ("vertical 1", (0.2, 0.5), (230, 60)),
    ("1 with flag and base", (0.8, 0.8), (40, 40)),
    ("open 4", (0.3, 0.3), (250, 250)),
    ("7 with a crossbar", (0.5, 0.2), (140, 260)),
    ("2 with a long base", (0.1, 0.9), (250, 30)),
    ("5 with a long top bar", (0.9, 0.1), (30, 250)),
])
def test_a_tap_of_the_pages_pen_beside_a_digit_changes_nothing(registry, name, anchor, tap):
    """A tap of the home page's pen away from the digit (a touch screen's stray touch) was
    kept as ink: the digit's box took it in, and on 400 drawings with one tap the dense
    net's answer changed on 77, the CNN's on 24, every time to a wrong one. A dot of the
    pen more than a stroke width from the rest of a lone digit's ink is dropped."""
    label, strokes = STRAIGHT_DIGITS[name]
    drawing = draw_on_canvas(strokes, fill=0.5, anchor=anchor)
    without = prepare_image(drawing)
    x, y, radius = *tap, PEN_WIDTH / 2
    ImageDraw.Draw(drawing).ellipse((x - radius, y - radius, x + radius, y + radius), fill="black")
    np.testing.assert_array_equal(prepare_image(drawing), without)
    assert answers(registry, without) == {"dense": label, "cnn": label}


@pytest.mark.parametrize("name, pen, tap", [("1 with flag and base", 6, (360, 120)),
                                            ("1 with flag and base", 6, (360, 360)),
                                            ("2 with a long base", 3, (40, 40))])
def test_a_stray_tap_of_a_fine_pen_is_no_part_of_a_drawn_digit(registry, name, pen, tap):
    """A tap of the pen away from the digit, on a drawing app's 400-pixel canvas with a
    fine pen, was kept as ink once a drawing kept its pen dots (for a number's decimal
    point): the 28x28 input took it in, the digit shrank to one side, and the dense net
    (the single-digit endpoint's default) read this 1 "8", 99% sure. A lone digit has no
    points: specks are dropped as before."""
    label, strokes = STRAIGHT_DIGITS[name]
    drawing = draw_on_canvas(strokes, fill=0.6, anchor=(0.2, 0.5), canvas=400, pen=pen)
    x, y = tap
    ImageDraw.Draw(drawing).ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill="black")
    digit = prepare_image(drawing)
    _, pieces = ndimage.label(digit > 0.1, structure=np.ones((3, 3)))
    assert pieces == 1
    assert answers(registry, digit) == {"dense": label, "cnn": label}


@pytest.mark.parametrize("name, pen", [("open 4", 18), ("closed 4", 10), ("7 with a crossbar", 10)])
def test_a_digit_drawn_in_dots_keeps_its_dots(registry, name, pen):
    """A digit drawn as a dotted line, its dots merged where its strokes meet: every other
    dot lay more than a stroke width from the merged ones, and was dropped as a stray tap
    (the open 4 was refused as "only a dot or a dash", the closed 4 read 5, the 7 read 4).
    Found by the third attack review."""
    label, strokes = STRAIGHT_DIGITS[name]
    drawing = Image.new("RGB", (280, 280), "white")
    radius = pen / 2
    for stroke in place(strokes, 0.75, (0.5, 0.5), pen=pen):
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            steps = max(1, int(np.hypot(x1 - x0, y1 - y0) // (1.6 * pen)))
            for x, y in [(x0 + (x1 - x0) * j / steps, y0 + (y1 - y0) * j / steps) for j in range(steps + 1)]:
                ImageDraw.Draw(drawing).ellipse((x - radius, y - radius, x + radius, y + radius), fill="black")
    assert answers(registry, prepare_image(drawing)) == {"dense": label, "cnn": label}
