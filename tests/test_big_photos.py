"""Big modern phone photos: a JPEG is judged by what is decoded (at a reduced scale),
every other format by the pixels its header declares."""

import numpy as np
import pytest
from PIL import Image

from app.images import ImageRejected, open_untrusted
from app.preprocessing import DIGIT_DRAFT
from app.samples import STRAIGHT_DIGITS, draw_on_canvas, jpeg_bytes
from helpers import multipart
import struct

from hostile_files import png, progressive_jpeg

FIFTY_MEGAPIXELS = (8160, 6120)  # what several current phones save by default


@pytest.fixture(scope="module")
def fifty_megapixel_seven():
    """A 7 written on grey paper, photographed at 8160x6120 (50 MP), as a grey JPEG."""
    width, height = FIFTY_MEGAPIXELS
    page = np.full((height, width), 228, np.uint8)
    page += np.random.default_rng(0).integers(0, 6, (height, width), dtype=np.uint8)
    seven = draw_on_canvas(STRAIGHT_DIGITS["7"][1], 0.9).convert("L").resize((3000, 3000), Image.Resampling.BILINEAR)
    photo = Image.fromarray(page)
    photo.paste(Image.eval(seven, lambda level: 40 + level * 188 // 255), (2500, 1500))
    return jpeg_bytes(photo, quality=70)


def post_big(client, url, data, filename):
    body, content_type = multipart(data, filename)
    return client.post(url, data=body, content_type=content_type)


def test_a_50_megapixel_jpeg_is_read(client, fifty_megapixel_seven):
    response = post_big(client, "/api/predict/mnist?model=cnn", fifty_megapixel_seven, "phone.jpg")
    assert response.status_code == 200, response.json
    assert response.json["prediction"] == 7


def test_a_50_megapixel_jpeg_gets_a_result_page(client, fifty_megapixel_seven):
    response = post_big(client, "/predict", fifty_megapixel_seven, "phone.jpg")
    assert response.status_code == 303 and response.headers["Location"].startswith("/digits/")


def gif_header(width, height):
    """A GIF that declares width x height: its header, one empty frame, the end."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b")


@pytest.mark.parametrize("bomb", [
    png(*FIFTY_MEGAPIXELS, bit_depth=1), png(20_000, 20_000, bit_depth=1),
    gif_header(*FIFTY_MEGAPIXELS),
], ids=["png-50MP", "png-400MP", "gif-50MP"])
def test_other_formats_over_the_budget_are_still_refused_from_the_header(client, bomb):
    response = post_big(client, "/api/predict/mnist", bomb, "bomb")
    assert response.status_code == 400 and "too many pixels" in response.json["error"]


def test_a_refusal_for_memory_never_states_a_figure_within_the_limit():
    """Just over the limit (256.3 MB), the message must not read "about 256 MB, over the limit of 256 MB"."""
    with pytest.raises(ImageRejected) as refused:
        open_untrusted(progressive_jpeg(837 * 8, 834 * 8, 2, components=3), draft=DIGIT_DRAFT)
    assert "would take about 257 MB of memory, over the limit of 256 MB" in refused.value.message
