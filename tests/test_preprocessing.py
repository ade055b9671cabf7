"""prepare_image and the Xception input: pure functions, tested on small arrays."""

import functools
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from app.images import open_untrusted
from app.preprocessing import (DIGIT_DRAFT, REDUCIBLE, XCEPTION_DRAFT, NoDigitFound, prepare_image,
                               prepare_xception_input, upright_flat)
from helpers import encode


def stroke_digit(size=(60, 40), ink=0, paper=255):
    """A '7'-like shape drawn with `ink` on `paper`, as a uint8 array."""
    image = np.full(size, paper, dtype=np.uint8)
    image[10:14, 8:32] = ink  # the bar
    for row in range(14, 50):  # the diagonal
        col = 30 - (row - 14) // 2
        image[row, col - 2 : col + 2] = ink
    return image


def assert_mnist_like(digit):
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert 0.0 <= digit.min() and digit.max() == pytest.approx(1.0)
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == 20  # fitted into 20x20
    # Centred by mass, unless that would push ink off the edge (a top-heavy 7 stops there).
    cy, cx = ndimage.center_of_mass(digit)
    assert abs(cy - 14) <= 0.5 or rows[0] == 0 or rows[-1] == 27
    assert abs(cx - 14) <= 0.5 or cols[0] == 0 or cols[-1] == 27


def test_dark_ink_on_paper_becomes_light_on_black():
    digit = prepare_image(Image.fromarray(stroke_digit()))
    assert_mnist_like(digit)
    assert digit[0, 0] == 0.0  # the paper is gone


def test_light_on_dark_gives_the_same_digit_as_dark_on_light():
    dark_on_light = prepare_image(Image.fromarray(stroke_digit(ink=20, paper=230)))
    light_on_dark = prepare_image(Image.fromarray(stroke_digit(ink=230, paper=20)))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)


def test_a_small_digit_far_off_centre_is_cropped_scaled_and_centred():
    page = np.full((400, 300), 240, dtype=np.uint8)
    page[20:80, 220:260] = stroke_digit(ink=30, paper=240)  # top right corner
    digit = prepare_image(Image.fromarray(page))
    assert_mnist_like(digit)
    reference = prepare_image(Image.fromarray(stroke_digit(ink=30, paper=240)))
    assert np.abs(digit - reference).mean() < 0.02


def test_uneven_lighting_is_removed():
    page = np.full((300, 300), 200.0)
    page += np.linspace(-60, 50, 300)[None, :]  # a lamp on the right
    page[100:160, 130:170] = np.minimum(page[100:160, 130:170], stroke_digit(paper=255))
    digit = prepare_image(Image.fromarray(page.clip(0, 255).astype(np.uint8)))
    assert_mnist_like(digit)
    assert digit[:, :3].max() == 0.0 and digit[:, -3:].max() == 0.0


@pytest.mark.parametrize(("mode", "file_format"), [("L", "JPEG"), ("RGBA", "PNG")])  # RGBA: an opaque canvas
def test_exif_orientation_is_applied(mode, file_format):
    upright = Image.fromarray(stroke_digit(ink=0, paper=255)).convert(mode)
    sideways = upright.transpose(Image.Transpose.ROTATE_270)  # stored turned clockwise ...
    exif = Image.Exif()
    exif[0x0112] = 8  # ... with EXIF orientation 8: "turn it back anticlockwise to view"
    photo = prepare_image(Image.open(io.BytesIO(encode(sideways, file_format, quality=95, exif=exif))))

    def similarity(a, b):  # blurred, so a one-pixel JPEG shift does not count
        a, b = ndimage.gaussian_filter(a, 1.0).ravel(), ndimage.gaussian_filter(b, 1.0).ravel()
        return np.corrcoef(a, b)[0, 1]

    assert similarity(photo, prepare_image(upright)) > 0.8
    assert similarity(photo, prepare_image(sideways)) < 0.5  # the check can tell


def test_transparent_canvas_export_is_flattened_onto_white():
    ink = stroke_digit(ink=255, paper=0)  # alpha: opaque strokes, transparent rest
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)  # black, even where transparent
    rgba[..., 3] = ink
    digit = prepare_image(Image.fromarray(rgba, mode="RGBA"))
    expected = prepare_image(Image.fromarray(stroke_digit()))
    np.testing.assert_allclose(digit, expected, atol=1e-6)


@pytest.mark.parametrize("convert", [
    pytest.param(lambda im: Image.fromarray(np.asarray(im).astype(np.uint16) * 257), id="16-bit"),
    pytest.param(lambda im: im.convert("P"), id="palette"),
    pytest.param(lambda im: im.convert("CMYK"), id="CMYK"),
    pytest.param(lambda im: im.convert("1"), id="1-bit"),
    pytest.param(lambda im: im.convert("LA"), id="grey+alpha"),
    pytest.param(lambda im: Image.fromarray(np.asarray(im).astype(np.float32) / 255), id="float"),
])
def test_every_image_mode_gives_the_same_digit(convert):
    gray = Image.fromarray(stroke_digit())
    np.testing.assert_allclose(prepare_image(convert(gray)), prepare_image(gray), atol=1 / 255)


def test_mnist_digits_pass_through_essentially_unchanged(mnist_sample):
    images, _ = mnist_sample
    differences = np.array([
        np.abs(prepare_image(Image.fromarray(image)) - image / 255).mean() for image in images
    ])
    assert (differences < 1e-6).mean() > 0.85  # most are bit-for-bit identical
    assert (differences < 1e-3).mean() > 0.95  # others lose a stray speck
    assert (differences > 0.01).mean() < 0.01  # one in a few hundred moves by a pixel


@pytest.mark.parametrize(("image", "message"), [
    (np.full((100, 100), 255, np.uint8), "looks blank"),
    (np.full((100, 100), 0, np.uint8), "looks blank"),
    ((np.random.default_rng(0).random((100, 100)) * 12 + 120).astype(np.uint8), "looks blank"),
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((5, 300), np.uint8), "too small"),
])
def test_pictures_without_a_digit_are_refused(image, message):
    with pytest.raises(NoDigitFound, match=message):
        prepare_image(Image.fromarray(image))


def test_xception_input_is_rgb_299_scaled_by_its_own_preprocess_input():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)
    batch = prepare_xception_input(Image.fromarray(rgb))
    assert batch.shape == (1, 299, 299, 3) and batch.dtype == np.float32
    # Xception's preprocess_input is "tf" mode: x / 127.5 - 1, channels kept RGB.
    np.testing.assert_allclose(batch[0], rgb / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_xception_input_from_any_mode_is_resized_rgb(mode):
    image = Image.new("RGB", (640, 480), (200, 30, 10)).convert(mode)
    batch = prepare_xception_input(image)
    assert batch.shape == (1, 299, 299, 3)
    assert -1.0 <= batch.min() and batch.max() <= 1.0


def phone_jpeg(size=(2400, 1800), orientation=None):
    """A phone-sized JPEG of a drawn 7 on paper; stored sideways with an EXIF turn when asked."""
    from app.samples import STRAIGHT_DIGITS, draw_on_canvas, photograph

    photo = photograph(draw_on_canvas(STRAIGHT_DIGITS["7"][1]), size=size, digit_height=0.3, seed=4)
    if orientation is None:
        return encode(photo, "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: "turn clockwise to view": stored turned anticlockwise
    return encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)


@pytest.mark.parametrize(("draft", "decoded_size"), [(DIGIT_DRAFT, (600, 450)), (XCEPTION_DRAFT, (600, 450))])
def test_big_jpegs_decode_at_a_reduced_scale_to_what_the_path_needs(draft, decoded_size):
    image, _ = open_untrusted(phone_jpeg(), draft=draft)
    assert image.size == decoded_size  # 1/4 of 2400x1800: the smallest scale that covers the need
    assert image.mode == draft[0]


def test_a_reduced_decode_gives_the_digit_a_full_decode_gives(registry):
    data = phone_jpeg()
    reduced = prepare_image(open_untrusted(data, draft=DIGIT_DRAFT)[0])
    full = prepare_image(open_untrusted(data)[0])
    blur = functools.partial(ndimage.gaussian_filter, sigma=1.0)
    assert np.corrcoef(blur(reduced).ravel(), blur(full).ravel())[0, 1] > 0.9
    for name in ("dense", "cnn"):
        assert registry.digit(name)(reduced)[0].argmax() == registry.digit(name)(full)[0].argmax() == 7


def test_a_reduced_decode_gives_xception_the_input_a_full_decode_gives():
    data = phone_jpeg()
    reduced = prepare_xception_input(open_untrusted(data, draft=XCEPTION_DRAFT)[0])
    full = prepare_xception_input(open_untrusted(data)[0])
    assert reduced.shape == full.shape == (1, 299, 299, 3)
    assert np.abs(reduced - full).mean() < 0.02  # on Xception's [-1, 1] scale


def test_a_sideways_phone_photo_is_turned_upright_when_decoded_at_a_reduced_scale(registry):
    upright = prepare_image(open_untrusted(phone_jpeg(), draft=DIGIT_DRAFT)[0])
    sideways, _ = open_untrusted(phone_jpeg(orientation=6), draft=DIGIT_DRAFT)
    assert sideways.size == (450, 600)  # as stored: portrait
    turned = prepare_image(sideways)
    blur = functools.partial(ndimage.gaussian_filter, sigma=1.0)
    assert np.corrcoef(blur(turned).ravel(), blur(upright).ravel())[0, 1] > 0.9
    assert registry.digit("cnn")(turned)[0].argmax() == 7


def png_with_chunk(image, kind, payload):
    """A PNG of `image` with one extra chunk just before IEND."""
    import struct
    import zlib

    data = encode(image, "PNG")
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return data[:-12] + chunk + data[-12:]


MALFORMED_METADATA = {
    "PNG eXIf chunk of garbage": lambda image: png_with_chunk(image, b"eXIf", b"MM\x00*garbage" * 7),
    "PNG raw exif profile that is not hex": lambda image: png_with_chunk(
        image, b"tEXt", b"Raw profile type exif\x00\nexif\n      40\nnot hex at all, not hex at all!!\n"),
    "WebP EXIF chunk of garbage": lambda image: encode(image, "WEBP", lossless=True, exif=b"II*\x00\xff\xff\xff\x7fjunk"),
}


@pytest.mark.parametrize("make", MALFORMED_METADATA.values(), ids=MALFORMED_METADATA.keys())
def test_malformed_metadata_is_ignored(make):
    image = Image.fromarray(stroke_digit())
    data = make(image)
    digit = prepare_image(open_untrusted(data, draft=DIGIT_DRAFT)[0])
    np.testing.assert_allclose(digit, prepare_image(image), atol=1 / 255)
    assert prepare_xception_input(open_untrusted(data, draft=XCEPTION_DRAFT)[0]).shape == (1, 299, 299, 3)


def big_picture(mode, size=(3000, 2000)):
    """A large stroke_digit page in `mode`; palette and alpha modes with transparent paper."""
    page = np.asarray(Image.fromarray(stroke_digit(paper=230)).resize(size, Image.Resampling.NEAREST))
    grey = Image.fromarray(page)
    if mode in ("LA", "RGBA", "PA"):
        alpha = Image.fromarray(np.where(page < 128, 255, 0).astype(np.uint8))
        image = grey.convert("RGBA")
        image.putalpha(alpha)
        return image.convert(mode) if mode != "PA" else image.convert("P").convert("PA")
    if mode == "I;16":
        return Image.fromarray(page.astype(np.uint16) * 257)
    return grey.convert(mode)


@pytest.mark.parametrize("mode", ["P", "PA", "1", "LA", "RGBA", "I;16", "L", "RGB", "CMYK"])
def test_large_pictures_are_reduced_before_any_conversion_at_full_size(monkeypatch, mode):
    """A 40-megapixel palette PNG converted to RGBA at full size cost 160 MB twice over:
    whatever the mode, conversions happen only on bands or on the reduced picture, and
    reduce() only sees a full-size picture in modes it reads without copying it."""
    big = big_picture(mode)
    full = big.width * big.height
    calls = []
    for name in ("convert", "reduce", "alpha_composite"):
        real = getattr(Image.Image, name)
        monkeypatch.setattr(Image.Image, name, lambda self, *a, _real=real, _name=name, **k:
                            calls.append((_name, self.mode, self.width * self.height)) or _real(self, *a, **k))
    small = upright_flat(big, 256)  # over twice 256 * 5 pixels wide: reduced by 5
    assert small.size == (600, 400) and small.mode in ("L", "RGB")
    assert [c for c in calls if c[2] == full and not (c[0] == "reduce" and c[1] in REDUCIBLE)] == []
    monkeypatch.undo()
    # The same picture as converting first (onto white) and reducing afterwards, to a grey level.
    whole = upright_flat(big.convert("RGBA") if mode in ("P", "PA", "1") else big, 99_999)
    expected = np.asarray(whole.reduce(5).convert("L"), dtype=np.float32)
    assert np.abs(np.asarray(small.convert("L"), dtype=np.float32) - expected).mean() < 1.0


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (101, 77), (65, 66), (512, 384), (290, 513)])
def test_the_sampled_minimum_is_exactly_scipys_minimum_filter_sampled(shape):
    from app.preprocessing import sampled_minimum

    array = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    assert np.array_equal(sampled_minimum(array, 4), ndimage.minimum_filter(array, 4)[::4, ::4])


@pytest.mark.parametrize("shape", [(375, 500), (28, 28), (3, 7)])
def test_the_box_mean_extremes_are_those_of_scipys_uniform_filter(shape):
    from app.preprocessing import box_mean_extremes

    array = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    blurred = ndimage.uniform_filter(array, 3)
    np.testing.assert_allclose(box_mean_extremes(array), (blurred.min(), blurred.max()), rtol=1e-6)


@pytest.mark.parametrize("sag", [1, 3, 7])
@pytest.mark.parametrize("axis", [0, 1])
def test_band_reach_is_the_maximum_filter_it_stands_in_for(sag, axis):
    from app.preprocessing import band_reach

    core = np.random.default_rng(sag + axis).random((171, 512)) < 0.05
    np.testing.assert_array_equal(band_reach(core, sag, axis), ndimage.maximum_filter1d(core, sag, axis=axis))
