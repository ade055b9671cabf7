"""Hostile and awkward uploads: anyone can post anything to this server.

Every wrong upload gets a clear message and the right status, as JSON {"error": ...}
from the API and as a page for a person. Hostile files never take the server down,
fill its disk, write outside the upload folder, or reach Ghostscript; decoder bombs
are refused, or decoded, within a time and memory budget; and what is kept of an
accepted one is its picture only: no metadata, nothing appended. Awkward but valid
images (transparent canvases, 16-bit, CMYK, sideways phone photos, animations, odd
file names) are read correctly and stored under a generated name.
"""

import functools
import html
import io
import logging
import os
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from flask import request
from PIL import EpsImagePlugin, Image, PngImagePlugin

from app import images
from app.images import ImageRejected, open_untrusted
from app.models import DIGIT_MODELS
from app.quota import LEDGER
from app.uploads import STORED_NAME
from helpers import encode, multipart, post_file
import hostile_files
from hostile_files import png, png_chunk
from upload_cost import UploadMeter

MNIST_URL = "/api/predict/mnist"
MEGABYTE = 1024 * 1024

# One clear MNIST test digit per label (indices into the `mnist_sample` fixture):
# both models read each one confidently when it is drawn large.
DIGIT_INDEX = {1: 8, 2: 0, 3: 44, 4: 21, 5: 56, 6: 20, 7: 6, 8: 30, 9: 15}


def handwriting_from(mnist_sample):
    """handwritten(label) -> that MNIST digit in dark ink on white paper, 120x120 uint8."""
    images, labels = mnist_sample

    def draw(label, size=120):
        index = DIGIT_INDEX[label]
        assert labels[index] == label
        large = Image.fromarray(images[index]).resize((size, size), Image.Resampling.BICUBIC)
        return 255 - np.asarray(large)

    return draw


@pytest.fixture(scope="module")
def handwritten(mnist_sample):
    return handwriting_from(mnist_sample)


def post_whole_body(client, url, data, filename="digit.png"):
    """Like post_file, for bodies of any size (see helpers.multipart)."""
    body, content_type = multipart(data, filename)
    return client.post(url, data=body, content_type=content_type)


def assert_json_error(response, status, fragment):
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json and set(response.json) == {"error"}
    assert fragment.lower() in response.json["error"].lower()


# Files that are not images, or not acceptable ones -----------------------------------


def png_bomb(width, height, bit_depth):
    """A valid greyscale PNG of width x height that is a few KB on disk: every row is zeros."""
    return png(width, height, bit_depth=bit_depth)


def png_with_a_text_bomb(handwritten):
    """A real digit PNG with a metadata chunk that inflates to 64 MB of zeros."""
    data = encode(handwritten(7))
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(64 * MEGABYTE), 9))
    end_of_header = 8 + 25  # the signature, then the IHDR chunk
    return data[:end_of_header] + text + data[end_of_header:]


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
       b"newpath 10 10 moveto 90 90 lineto stroke\nshowpage\n%%EOF\n")
# The binary "DOS EPS" wrapper: a 30-byte header, then the same PostScript.
DOS_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
       b'<script>alert(document.cookie)</script><text x="10" y="50">7</text></svg>')
HTML = b"<!DOCTYPE html><html><body><script>fetch('/steal')</script></body></html>"


def half_a_png(handwritten):
    data = encode(handwritten(7))
    return data[: len(data) // 2]


BAD_UPLOADS = [
    # (make the file from `handwritten`, file name, status, part of the message)
    pytest.param(lambda hw: b"", "digit.png", 400, "the file is empty", id="empty"),
    pytest.param(lambda hw: b"", "", 400, "no file chosen: choose an image to upload", id="no-file-chosen"),
    pytest.param(lambda hw: b"my digit is a seven\n" * 20, "digit.png", 415,
                 "unsupported file type: text files are not accepted", id="text-named-png"),
    pytest.param(lambda hw: HTML, "digit.png", 415, "HTML files are not accepted", id="html-named-png"),
    pytest.param(lambda hw: SVG, "digit.svg", 415, "SVG files are not accepted", id="svg-with-script"),
    pytest.param(lambda hw: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "scan.pdf", 415,
                 "PDF files are not accepted", id="pdf"),
    pytest.param(lambda hw: EPS, "digit.eps", 415, "EPS/PostScript files are not accepted", id="eps"),
    pytest.param(lambda hw: DOS_EPS, "digit.png", 415, "EPS/PostScript files are not accepted", id="dos-eps"),
    pytest.param(lambda hw: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "IMG_0001.HEIC",
                 415, "HEIC/AVIF files are not accepted", id="heic"),
    pytest.param(lambda hw: bytes(range(256)) * 4, "digit.png", 415,
                 "this file is not accepted; upload a PNG, JPEG, GIF, BMP, WebP or TIFF image", id="binary-junk"),
    pytest.param(lambda hw: bytes(4096), "digit.png", 415, "this file is not accepted", id="all-zero-bytes"),
    pytest.param(half_a_png, "digit.png", 400, "the image is truncated or corrupt", id="png-cut-in-half"),
    pytest.param(lambda hw: b"\x89PNG\r\n\x1a\n" + bytes(100), "digit.png", 400,
                 "corrupt: it starts like a PNG", id="png-signature-then-zeros"),
    pytest.param(lambda hw: png_bomb(20_000, 20_000, 1), "bomb.png", 400, "too many pixels", id="png-bomb-20000px"),
    pytest.param(lambda hw: png_bomb(10_000, 10_000, 8), "bomb.png", 400, "too many pixels", id="png-bomb-10000px"),
    # Under Pillow's own limit (89 Mpx) but over ours (40 Mpx): our check must catch it.
    pytest.param(lambda hw: png_bomb(7_000, 7_000, 8), "bomb.png", 400, "the image 7000x7000 is over the limit",
                 id="png-bomb-7000px"),
    pytest.param(png_with_a_text_bomb, "digit.png", 400, "the image's metadata is too large", id="png-metadata-bomb"),
    pytest.param(lambda hw: bytes(11 * MEGABYTE), "huge.png", 413, "the upload is too large: the limit is 10 MB",
                 id="over-max-content-length"),
    pytest.param(lambda hw: encode(np.zeros((1, 1), np.uint8)), "dot.png", 400, "too small", id="1x1-pixel"),
    pytest.param(lambda hw: encode(np.full((200, 150), 255, np.uint8)), "page.png", 400,
                 "no digit found: the image looks blank", id="blank-white-page"),
]


@pytest.mark.parametrize(("make_file", "filename", "status", "message"), BAD_UPLOADS)
def test_bad_uploads_are_refused_with_a_clear_json_message(
        client, uploads, handwritten, make_file, filename, status, message):
    response = post_whole_body(client, MNIST_URL, make_file(handwritten), filename)
    assert_json_error(response, status, message)
    assert uploads() == []  # a refused upload leaves nothing behind


URLENCODED_BOMB = b"a&" * (5 * MEGABYTE)  # 10 MB, 5.2 million fields: 2.5 s of CPU and 321 MB to parse


@pytest.mark.parametrize(("request_kwargs", "status", "message"), [
    ({"method": "POST", "data": {"image": (io.BytesIO(b"x"), "digit.png")}}, 400,
     "no file: send the image in the multipart form field 'file'"),
    # Anything but a multipart form is refused before its body is read.
    ({"method": "POST", "data": b"\x89PNG...", "content_type": "image/png"}, 415,  # a raw body
     "send the image as a multipart form (multipart/form-data) in the field 'file'"),
    ({"method": "POST", "data": b"\x89PNG...", "content_type": "image/png"}, 415, "got image/png"),
    ({"method": "POST", "data": "model=cnn&file=digit.png", "content_type": "application/x-www-form-urlencoded"},
     415, "got application/x-www-form-urlencoded"),
    ({"method": "POST", "data": URLENCODED_BOMB, "content_type": "application/x-www-form-urlencoded"},
     415, "got application/x-www-form-urlencoded"),
    ({"method": "POST", "data": '{"file": "iVBORw0KGgo="}', "content_type": "application/json"}, 415,
     "got application/json"),
    ({"method": "POST"}, 415, "got no Content-Type"),
    ({"method": "POST", "data": {"file": (io.BytesIO(b"x"), "digit.png"), "model": "foo"}}, 400,
     "unknown model 'foo': use one of dense, cnn"),
    ({"method": "GET"}, 405, "this address does not accept that method; use POST"),
    ({"method": "PUT", "data": {"file": (io.BytesIO(b"x"), "digit.png")}}, 405, "use POST"),
])
def test_malformed_requests_are_refused_with_a_clear_json_message(client, uploads, request_kwargs, status, message):
    response = client.open(MNIST_URL, **request_kwargs)
    assert_json_error(response, status, message)
    if status == 405:
        assert set(response.headers["Allow"].split(", ")) >= {"POST"}
        assert "GET" not in response.headers["Allow"]
    assert uploads() == []


def test_the_urlencoded_bomb_is_refused_without_being_parsed(client, uploads, monkeypatch):
    import werkzeug.formparser

    from app import uploads as upload_module

    parsed = []
    for module in (werkzeug.formparser, upload_module):
        monkeypatch.setattr(module, "parse_qsl", lambda *args, **kwargs: parsed.append(args) or [])
    for url in (MNIST_URL, "/api/predict/xception", "/predict", "/xception"):
        response = client.post(url, data=URLENCODED_BOMB, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 415 and "multipart" in response.get_data(as_text=True)
    assert parsed == [] and uploads() == []


def test_forms_over_the_form_limits_are_refused(client, app, uploads):
    too_many_parts = {f"field{i}": "x" for i in range(app.config["MAX_FORM_PARTS"] + 1)}
    response = client.post(MNIST_URL, data=too_many_parts, content_type="multipart/form-data")
    assert_json_error(response, 413, "too large")
    body, content_type = multipart(b"x", model="x" * (app.config["MAX_FORM_MEMORY_SIZE"] + 1))
    assert_json_error(client.post(MNIST_URL, data=body, content_type=content_type), 413, "too large")
    assert uploads() == []


@pytest.mark.parametrize(("body", "chunked", "status"), [
    (b"a=1&b=2", False, 200),
    (b"a=1&" * 15 + b"a=1", False, 200),  # 16 fields: MAX_FORM_PARTS
    (b"a=1&" * 16 + b"a=1", False, 413),  # 17
    (URLENCODED_BOMB, False, 413),  # over MAX_FORM_MEMORY_SIZE: refused from its Content-Length
    (URLENCODED_BOMB, True, 413),  # the same, chunked: refused after reading 1 MB
    (b"x=" + b"7" * MEGABYTE, False, 413),  # one field over the limit
])
def test_urlencoded_forms_get_the_form_limits_wherever_they_are_parsed(app, body, chunked, status):
    """Werkzeug applies the limits to multipart forms only; this app, to any form."""
    app.add_url_rule("/echo-form", "echo_form", methods=["POST"],
                     view_func=lambda: {"fields": len(list(request.form.items(multi=True)))})
    headers, overrides = {"Accept": "application/json"}, {}
    if chunked:  # as gunicorn passes a chunked body on
        headers["Transfer-Encoding"], overrides["wsgi.input_terminated"] = "chunked", True
    response = app.test_client().post("/echo-form", input_stream=io.BytesIO(body), headers=headers,
                                      content_type="application/x-www-form-urlencoded",
                                      environ_overrides=overrides)
    assert response.status_code == status
    if status == 200:
        assert response.json == {"fields": body.count(b"&") + 1}
    else:
        assert "too large" in response.json["error"]


def test_an_unknown_api_address_is_a_json_404(client):
    assert_json_error(client.get("/api/predict/mnst"), 404, "there is nothing at this address")
    assert_json_error(client.post("/api/nothing"), 404, "there is nothing at this address")


@pytest.mark.parametrize(("width", "height", "bit_depth"), [
    (20_000, 20_000, 1),  # over twice Pillow's limit: Pillow raises
    (10_000, 10_000, 8),  # over Pillow's limit: Pillow only warns, app/images.py makes it an error
    (7_000, 7_000, 8),  # under Pillow's limit, over ours
])
def test_pixel_bombs_are_refused_before_any_pixel_is_decoded(client, uploads, monkeypatch, width, height, bit_depth):
    bomb = png_bomb(width, height, bit_depth)
    assert len(bomb) < 100_000  # tens of KB on disk, 49-400 MB once decoded
    decoders = []
    real_getdecoder = Image._getdecoder
    monkeypatch.setattr(Image, "_getdecoder",
                        lambda *args, **kwargs: decoders.append(args) or real_getdecoder(*args, **kwargs))
    start = time.perf_counter()
    response = post_file(client, MNIST_URL, bomb, "bomb.png")
    elapsed = time.perf_counter() - start
    assert_json_error(response, 400, "too many pixels")
    assert decoders == []  # refused from the header alone: no memory was spent on pixels
    assert elapsed < 0.5
    assert uploads() == []
    open_untrusted(encode(np.full((8, 8), 255, np.uint8)))
    assert decoders  # the spy works: an ordinary image does get a decoder


def test_eps_never_reaches_ghostscript(client, uploads, monkeypatch):
    """Pillow would hand EPS to Ghostscript (a history of remote code execution):
    the EPS plugin must not even be tried, and no process may be started."""
    calls = []
    for target, name in [(subprocess, "Popen"), (subprocess, "check_call"), (subprocess, "run"),
                         (EpsImagePlugin, "Ghostscript"), (EpsImagePlugin, "has_ghostscript")]:
        monkeypatch.setattr(target, name, lambda *args, _name=name, **kwargs: calls.append(_name))
    eps_open = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: calls.append("_open") or eps_open(self))

    for data in (EPS, DOS_EPS):
        assert_json_error(post_file(client, MNIST_URL, data, "digit.eps"), 415, "EPS/PostScript")
    assert calls == []
    assert uploads() == []
    # The spy works: without the allow-list, Pillow does open these files as EPS.
    with Image.open(io.BytesIO(EPS)) as unrestricted:
        assert unrestricted.format == "EPS" and calls == ["_open"]


def test_the_same_checks_guard_the_xception_api(client, uploads):
    """The photo endpoint shares the upload checks (and refuses before loading Xception)."""
    assert_json_error(post_file(client, "/api/predict/xception", SVG, "photo.svg"), 415, "SVG")
    assert_json_error(post_file(client, "/api/predict/xception", png_bomb(20_000, 20_000, 1)), 400, "too many pixels")
    assert uploads() == []


# Decoder bombs -------------------------------------------------------------------------
# Files within the pixel limit that would make a decoder work or allocate far beyond
# it, built by tests/hostile_files.py. Each is refused from its structure before any
# pixel is decoded, or decoded within budget (the rows that end in "looks blank": the
# costliest files that are let through). tests/upload_cost.py posts each to the real
# route in a fresh fork of one server process and measures its CPU time and the
# memory it adds there, C allocations included.

HOSTILE_UPLOADS = [
    # (hostile_files function, status, part of the message)
    # 1. Progressive JPEGs: libjpeg decodes every scan over the whole picture.
    pytest.param("jpeg_progressive_7000_scans", 400, "too many scans: the JPEG has more than 500 scans",
                 id="jpeg-progressive-7000-scans-624kb"),
    pytest.param("jpeg_progressive_filling_the_upload", 400, "too many scans", id="jpeg-progressive-10mb-of-scans"),
    pytest.param("jpeg_progressive_60_scans", 400, "the JPEG has 60 scans, and one of 6320x6320 pixels may have "
                 "at most 51", id="jpeg-progressive-60-scans-of-40mp"),
    pytest.param("jpeg_progressive_at_the_limit", 400, "looks blank", id="jpeg-progressive-51-scans-of-40mp"),
    pytest.param("jpeg_sequential_scans", 400, "too many scans", id="jpeg-baseline-20000-empty-scans"),
    pytest.param("jpeg_cmyk_progressive_at_the_cap", 400, "this 6320x6320 multi-scan JPEG would take about 308 MB",
                 id="jpeg-cmyk-progressive-40mp"),
    pytest.param("jpeg_with_markers_before_the_image", 400, "more than 2,000 segments", id="jpeg-2.6m-segments"),
    pytest.param("jpeg_with_junk_before_the_image", 400, "stray bytes", id="jpeg-10mb-of-stray-bytes"),
    pytest.param("jpeg_segments_between_scans", 400, "looks blank", id="jpeg-2.5m-segments-between-scans"),
    # 2, 3. TIFF: a tile far larger than the image; millions of strips; huge tags.
    pytest.param("tiff_huge_tile", 400, "the TIFF's tiles (46336x46336) are far larger than its image (16x16)",
                 id="tiff-16px-with-a-2gb-tile"),
    pytest.param("tiff_many_strips", 400, "the TIFF lists 5,000,000 strips or tiles", id="tiff-8px-5m-strips"),
    pytest.param("tiff_many_tags", 400, "the TIFF has 15,009 tags", id="tiff-15000-tags"),
    pytest.param("tiff_huge_colormap", 400, "4,000,000 values in its tag 320", id="tiff-4m-colour-map"),
    pytest.param("tiff_one_big_strip", 400, "would take about 458 MB", id="tiff-40mp-rgba16-in-one-strip"),
    pytest.param("tiff_jpeg_compressed", 415, "TIFF files with compression 7 are not accepted",
                 id="tiff-jpeg-compressed"),
    pytest.param("tiff_rgba_at_the_cap", 400, "looks blank", id="tiff-40mp-rgba-deflate"),
    pytest.param("tiff_many_pages", 400, "looks blank", id="tiff-80000-pages"),
    # 4. Small files that are large inside the limit.
    pytest.param("png_palette_at_the_cap", 400, "looks blank", id="png-palette-40mp-39kb"),
    pytest.param("png_rgba16_at_the_cap", 400, "looks blank", id="png-rgba16-40mp"),
    pytest.param("png_grey16_at_the_cap", 400, "looks blank", id="png-grey16-40mp"),
    pytest.param("png_one_long_row", 400, "over the limit of 65,535 pixels on a side", id="png-40000000x1"),
    pytest.param("png_many_chunks", 400, "more than 20,000 chunks", id="png-870k-chunks"),
    pytest.param("png_many_idat_chunks", 400, "more than 20,000 chunks", id="png-40mp-in-1-byte-chunks"),
    pytest.param("png_text_chunks", 400, "the image's metadata is too large", id="png-80-text-chunks-of-1mb"),
    pytest.param("png_icc_bomb", 400, "the image's metadata is too large", id="png-64mb-icc-profile"),
    pytest.param("png_exif_many_tags", 400, "looks blank", id="png-exif-65535-tags"),
    pytest.param("webp_exif_many_tags", 400, "looks blank", id="webp-exif-65535-tags"),
    pytest.param("webp_animated_huge_canvas", 400, "this 6324x6324 WebP would take about 611 MB",
                 id="webp-90-bytes-animation-on-40mp"),
    pytest.param("webp_lossless_at_the_cap", 400, "too large to decode", id="webp-lossless-40mp"),
    pytest.param("webp_lossless_at_the_limit", 400, "looks blank", id="webp-lossless-16mp"),
    pytest.param("webp_many_frames", 400, "looks blank", id="webp-150000-frames"),
    pytest.param("gif_many_sub_blocks", 400, "more than 10,000 extension blocks", id="gif-5m-sub-blocks"),
    pytest.param("gif_long_comment", 400, "more than 10,000 extension blocks", id="gif-5m-comment-pieces"),
    pytest.param("gif_at_the_cap", 400, "looks blank", id="gif-40mp"),
    pytest.param("gif_frame_beyond_its_screen", 400, "the image 7000x7000 is over the limit",
                 id="gif-7000px-frame-on-8px-screen"),
    pytest.param("bmp_rle8_line_ends", 400, "a run-length-encoded BMP may have at most 250,000 pixels",
                 id="bmp-rle8-36mp-of-line-ends"),
    pytest.param("bmp_rle4_runs", 400, "run-length-encoded", id="bmp-rle4-36mp"),
    pytest.param("bmp_1bit_at_the_cap", 400, "looks blank", id="bmp-1bit-40mp"),
]
CPU_SECONDS, ADDED_MEGABYTES = 3.0, 400  # loose: the measured figures are in the README


@pytest.fixture(scope="module")
def meter():
    with UploadMeter() as meter:
        yield meter


@pytest.mark.parametrize(("name", "status", "message"), HOSTILE_UPLOADS)
def test_decoder_bombs_are_answered_within_the_time_and_memory_budget(meter, name, status, message):
    result = meter.measure(name)
    assert (result.get("status"), result.get("stored")) == (status, 0), result
    assert message.lower() in result["error"].lower(), result
    # CPU time, not wall time: the build machine is shared, and the budget is the work.
    assert result["cpu_seconds"] < CPU_SECONDS and result["added_mb"] < ADDED_MEGABYTES, result


@functools.cache
def photo(size, mode="RGB"):
    """Smooth shading and noise, like a photo: its JPEG has real entropy-coded data."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    noise = np.random.default_rng(0).normal(0, 12, (size[1], size[0], 3))
    rgb = np.stack([x / 8, y / 6, (x + y) / 14], -1) % 256 + noise
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).convert(mode)


ORDINARY_FILES = [
    pytest.param(lambda: encode(photo((4000, 3000)), "JPEG", quality=90, exif=Image.Exif()), id="jpeg-12mp"),
    pytest.param(lambda: encode(photo((4000, 3000)), "JPEG", quality=90, progressive=True),
                 id="jpeg-progressive-12mp"),
    pytest.param(lambda: encode(photo((2000, 1500)), "JPEG", progressive=True, subsampling=0, optimize=True),
                 id="jpeg-progressive-4:4:4"),
    pytest.param(lambda: encode(photo((1000, 800), "CMYK"), "JPEG", progressive=True), id="jpeg-progressive-cmyk"),
    pytest.param(lambda: encode(photo((1000, 800), "L"), "JPEG", progressive=True), id="jpeg-progressive-grey"),
    pytest.param(lambda: encode(photo((600, 400)), "PNG", optimize=True), id="png"),
    pytest.param(lambda: encode(photo((600, 400)).convert("P"), "PNG", interlace=1), id="png-palette"),
    pytest.param(lambda: encode(photo((600, 400)), "GIF", save_all=True, append_images=[photo((600, 400), "L")],
                                comment=b"a comment " * 1000), id="gif-animated-with-a-comment"),
    pytest.param(lambda: encode(photo((600, 400)), "BMP"), id="bmp"),
    pytest.param(lambda: encode(photo((600, 400)), "WEBP", quality=80), id="webp"),
    pytest.param(lambda: encode(photo((600, 400)), "WEBP", lossless=True), id="webp-lossless"),
    pytest.param(lambda: encode(photo((600, 400)), "WEBP", save_all=True, append_images=[photo((600, 400))]),
                 id="webp-animated"),
    pytest.param(lambda: encode(photo((600, 400)), "TIFF", compression="tiff_lzw"), id="tiff-lzw"),
    pytest.param(lambda: encode(photo((600, 400)), "TIFF", compression="tiff_adobe_deflate"), id="tiff-deflate"),
    pytest.param(lambda: encode(photo((600, 400)), "TIFF", compression="packbits"), id="tiff-packbits"),
    pytest.param(lambda: encode(photo((600, 400), "1"), "TIFF", compression="group4"), id="tiff-g4"),
    pytest.param(lambda: encode(photo((600, 400)), "TIFF"), id="tiff-uncompressed"),
    pytest.param(lambda: hostile_files.tiff_tiled(1000, 700, 256, compression=8), id="tiff-tiled-deflate"),
    pytest.param(lambda: hostile_files.tiff_tiled(100, 60, 256), id="tiff-tiles-larger-than-the-image"),
]


@pytest.mark.parametrize("make_file", ORDINARY_FILES)
def test_ordinary_files_of_every_kind_are_within_the_limits(make_file):
    image, _ = open_untrusted(make_file(), draft=("L", (288, 288)))
    assert min(image.size) > 0


def test_the_jpeg_walk_keeps_step_with_pillow():
    """Pillow reads no payload for a segment whose length says 0; the walk does the
    same, and still counts every segment after it."""
    real = encode(Image.new("L", (28, 28), 255), "JPEG")
    hidden = real[:2] + b"\xff\xfe\x00\x00" + hostile_files.jpeg_segment(0xFE, b"") * 3000 + real[2:]
    with pytest.raises(ImageRejected, match="more than 2,000 segments"):
        open_untrusted(hidden)


def test_large_decodes_take_turns(client, handwritten):
    """Large decodes share a memory budget per process: one that does not fit now is told
    to retry at once (and keeps no thread waiting), while ordinary uploads go on as usual."""
    large = hostile_files.png_rgba8_at_the_cap()  # 160 MB once decoded
    other = images.DECODE_BUDGET - 100 * 1024 * 1024  # as if other requests were decoding 220 MB
    assert images.decode_budget.reserve(other)
    try:
        response = post_whole_body(client, MNIST_URL, large)
        assert_json_error(response, 503, "the server is busy decoding other large images; try again in a few seconds")
        assert int(response.headers["Retry-After"]) >= 1
        assert post_file(client, MNIST_URL, encode(handwritten(7))).json["prediction"] == 7
    finally:
        images.decode_budget.release(other)
    assert images.decode_budget.reserved == 0
    assert_json_error(post_whole_body(client, MNIST_URL, large), 400, "looks blank")


def test_the_meter_sees_memory_that_c_code_allocates(meter):
    """Guards the table above: an upload that Pillow decodes to 160 MB shows as such."""
    result = meter.measure("png_rgba8_at_the_cap")
    assert result["status"] == 400 and 150 < result["added_mb"] < ADDED_MEGABYTES, result


# Awkward but valid images -------------------------------------------------------------


def transparent_canvas(hw):
    """A browser canvas export: black strokes, everything else transparent black (0, 0, 0, 0)."""
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[..., 3] = 255 - hw(3)  # ignore the alpha and the whole picture is black
    return encode(Image.fromarray(rgba))


def sixteen_bit(hw):
    image = Image.fromarray(hw(4).astype(np.uint16) * 257)  # the full 0-65535 range
    assert image.mode == "I;16"
    return encode(image)


def palette(hw):
    return encode(Image.fromarray(hw(5)).convert("RGB").quantize(colors=16))


def cmyk_jpeg(hw):
    return encode(Image.fromarray(hw(6)).convert("CMYK"), "JPEG", quality=95)


def sideways_jpeg(hw, orientation=8):
    """A phone photo stored turned clockwise, with EXIF saying "turn it back to view"."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # 8: rotate 90 degrees anticlockwise to display
    sideways = Image.fromarray(hw(7)).transpose(Image.Transpose.ROTATE_270)
    return encode(sideways, "JPEG", quality=95, exif=exif)


def sideways_png(hw):
    """The same, as a PNG: its EXIF sits in an eXIf chunk."""
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(Image.fromarray(hw(7)).transpose(Image.Transpose.ROTATE_270), exif=exif)


def animated_gif(hw):
    """Two frames: an 8, then a 2. Only the first frame counts."""
    first, second = Image.fromarray(hw(8)), Image.fromarray(hw(2))
    return encode(first, "GIF", save_all=True, append_images=[second], duration=500, loop=0)


def chalk_on_board(hw):
    board = 40 + (255 - hw(9).astype(np.float32)) * 0.75  # light strokes on a dark-grey board
    return encode(board.astype(np.uint8))


AWKWARD_UPLOADS = [
    # (make the file from `handwritten`, file name, expected digit, stored extension:
    # jpg for JPEGs, png for everything else)
    pytest.param(transparent_canvas, "canvas.png", 3, "png", id="rgba-transparent-canvas"),
    pytest.param(sixteen_bit, "scan16.png", 4, "png", id="16-bit-grey-png"),
    pytest.param(palette, "digit.png", 5, "png", id="palette-png"),
    pytest.param(cmyk_jpeg, "print.jpg", 6, "jpg", id="cmyk-jpeg"),
    pytest.param(sideways_jpeg, "IMG_1234.JPG", 7, "jpg", id="sideways-jpeg-with-exif-orientation"),
    pytest.param(sideways_png, "sideways.png", 7, "png", id="sideways-png-with-exif-orientation"),
    pytest.param(animated_gif, "anim.gif", 8, "png", id="animated-gif-first-frame"),
    pytest.param(lambda hw: encode(hw(9), "WEBP", quality=80), "digit.webp", 9, "png", id="webp"),
    pytest.param(lambda hw: encode(hw(1), "BMP"), "digit.bmp", 1, "png", id="bmp"),
    pytest.param(lambda hw: encode(hw(2), "TIFF", compression="tiff_lzw"), "scan.tiff", 2, "png", id="tiff"),
    pytest.param(chalk_on_board, "board.png", 9, "png", id="light-ink-on-dark-board"),
    # A PNG named like something else is stored as what it is.
    pytest.param(lambda hw: encode(hw(3)), "digit.jpg", 3, "png", id="png-named-jpg"),
    pytest.param(lambda hw: encode(hw(3)), "../../etc/passwd.png", 3, "png", id="path-traversal-name"),
    pytest.param(lambda hw: encode(hw(5)), "цифра ٣.png", 5, "png", id="unicode-name"),
    pytest.param(lambda hw: encode(hw(6)), "d" * 296 + ".png", 6, "png", id="300-character-name"),
]


@pytest.mark.parametrize("model", DIGIT_MODELS)
@pytest.mark.parametrize(("make_file", "filename", "label", "extension"), AWKWARD_UPLOADS)
def test_awkward_but_valid_images_are_read_correctly(
        client, app, tmp_path, handwritten, make_file, filename, label, extension, model):
    data = make_file(handwritten)
    response = post_file(client, MNIST_URL, data, filename, model=model)
    assert response.status_code == 200, response.json
    assert response.json["prediction"] == label
    # Stored under a generated name, as a clean copy ...
    folder = Path(app.config["UPLOAD_FOLDER"])
    name = response.json["upload"]
    assert STORED_NAME.fullmatch(name) and name.endswith("." + extension)
    # ... and nothing else was written anywhere, least of all where the client's name points.
    assert [p for p in tmp_path.rglob("*") if not p.is_dir() and not p.name.startswith(LEDGER)] == [folder / name]
    assert not os.path.lexists(os.path.normpath(folder / filename))
    # The copy is the same picture, upright: it reads as the same digit without any metadata.
    stored = (folder / name).read_bytes()
    assert_only_a_picture(stored)
    assert post_file(client, MNIST_URL, stored, name, model=model).json["prediction"] == label


@pytest.mark.parametrize(("make_file", "format", "mode", "frames"), [
    (transparent_canvas, "PNG", "RGBA", 1),
    (sixteen_bit, "PNG", "I;16", 1),
    (palette, "PNG", "P", 1),
    (cmyk_jpeg, "JPEG", "CMYK", 1),
    (animated_gif, "GIF", "P", 2),
])
def test_the_awkward_files_are_what_they_claim_to_be(handwritten, make_file, format, mode, frames):
    with Image.open(io.BytesIO(make_file(handwritten))) as image:
        assert (image.format, image.mode, getattr(image, "n_frames", 1)) == (format, mode, frames)


@pytest.mark.parametrize("model", DIGIT_MODELS)
def test_the_sideways_jpeg_really_needs_its_exif_orientation(client, handwritten, model):
    """Guards the row above: without the orientation tag the same pixels read as another digit."""
    no_orientation = post_file(client, MNIST_URL, sideways_jpeg(handwritten, orientation=1), model=model)
    assert no_orientation.status_code == 200 and no_orientation.json["prediction"] != 7


def test_the_transparent_canvas_really_needs_its_alpha(client, handwritten):
    """Guards the row above: the same pixels with the alpha dropped are a black page."""
    opaque = Image.open(io.BytesIO(transparent_canvas(handwritten))).convert("RGB")
    assert_json_error(post_file(client, MNIST_URL, encode(opaque)), 400, "blank")


# The pages say the same to a person ---------------------------------------------------

@pytest.mark.parametrize(("data", "filename", "status", "message"), [
    (b"", "", 400, "no file chosen: choose an image to upload"),
    (b"", "digit.png", 400, "the file is empty"),
    (b"my digit is a seven\n", "digit.png", 415, "text files are not accepted"),
    (SVG, "digit.svg", 415, "SVG files are not accepted"),
    (EPS, "digit.eps", 415, "EPS/PostScript files are not accepted"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "digit.png", 400, "corrupt"),
    (png_bomb(20_000, 20_000, 1), "digit.png", 400, "too many pixels"),
    (bytes(11 * MEGABYTE), "digit.png", 413, "the limit is 10 MB"),
    (None, None, 400, "send the image in the multipart form field 'file'"),
    ("urlencoded", None, 415, "send the image as a multipart form (multipart/form-data)"),
])
def test_the_upload_page_shows_the_same_messages_to_a_person(client, uploads, data, filename, status, message):
    if data is None:
        response = client.post("/predict", data={}, content_type="multipart/form-data")
    elif data == "urlencoded":
        response = client.post("/predict", data="file=digit.png", content_type="application/x-www-form-urlencoded")
    else:
        response = post_whole_body(client, "/predict", data, filename)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = html.unescape(response.get_data(as_text=True))
    assert message.lower() in page.lower()
    assert "Traceback" not in page and 'File "' not in page
    assert uploads() == []


# Keeping the disk from filling up -----------------------------------------------------


def test_past_the_file_cap_only_the_newest_uploads_are_kept(client, app, uploads, handwritten):
    """The policy: accepted uploads are kept for inspection, within two caps,
    UPLOAD_MAX_FILES and UPLOAD_MAX_BYTES, for all workers together: to make room for
    a new upload, the oldest are deleted. Refused uploads are never written at all.
    (More in test_upload_quota.py.)"""
    app.config["UPLOAD_MAX_FILES"] = 3
    names = [post_file(client, MNIST_URL, encode(handwritten(label))).json["upload"] for label in (1, 2, 3, 4, 5)]
    assert uploads() == sorted(names[-3:])


def test_past_the_byte_cap_the_oldest_uploads_are_deleted(client, app, uploads, handwritten):
    data = encode(handwritten(7))
    app.config["UPLOAD_MAX_BYTES"] = 2 * len(data) + len(data) // 2  # room for two and a half
    names = [post_file(client, MNIST_URL, data).json["upload"] for _ in range(4)]
    assert uploads() == sorted(names[-2:])


def test_pruning_leaves_files_it_did_not_write_alone(client, app, uploads, handwritten):
    folder = Path(app.config["UPLOAD_FOLDER"])
    folder.mkdir()
    (folder / ".gitkeep").touch()
    app.config["UPLOAD_MAX_FILES"] = 1
    names = [post_file(client, MNIST_URL, encode(handwritten(label))).json["upload"] for label in (1, 2)]
    assert uploads() == sorted([".gitkeep", names[-1]])

# What is kept of an accepted upload: its picture, nothing else ------------------------

PAYLOAD = HTML + np.random.default_rng(11).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()


def gps_exif():
    """EXIF as a phone writes it: the maker, and where the photo was taken."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 30.0)})
    return exif


def png_with_metadata_and_a_payload(hw):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at home")
    info.add_itxt("Description", "a seven", zip=True)
    return encode(Image.fromarray(hw(7)), exif=gps_exif(), pnginfo=info, icc_profile=b"\x00" * 1000) + PAYLOAD


def png_with_data_after_its_pixels(hw):
    """Another IDAT chunk after the compressed pixels: decoders stop before it."""
    data = encode(hw(7))
    iend = len(data) - 12
    return data[:iend] + png_chunk(b"IDAT", PAYLOAD) + data[iend:]


def jpeg_with_gps_and_a_payload(hw):
    return encode(Image.fromarray(hw(7)).convert("RGB"), "JPEG", quality=95, exif=gps_exif(),
                  comment=b"taken at home", icc_profile=b"\x00" * 1000) + PAYLOAD


def finding_11(hw):
    """Issue 14, finding 11: a 64x64 PNG followed by 9 MB of HTML and random bytes."""
    junk = np.random.default_rng(14).integers(0, 256, 9 * MEGABYTE, dtype=np.uint8).tobytes()
    return encode(hw(7, size=64)) + HTML + junk


STORED_COPIES = [
    # (make the file from `handwritten`, file name, stored extension, the same pixels exactly)
    pytest.param(png_with_metadata_and_a_payload, "IMG_0042.png", "png", True, id="png-gps-text-icc-payload"),
    pytest.param(png_with_data_after_its_pixels, "digit.png", "png", True, id="png-data-after-the-pixels"),
    pytest.param(finding_11, "digit.png", "png", True, id="png-then-9-mb-of-html-and-bytes"),
    pytest.param(jpeg_with_gps_and_a_payload, "IMG_0042.jpg", "jpg", False, id="jpeg-gps-comment-icc-payload"),
    pytest.param(lambda hw: encode(Image.fromarray(hw(7)), "GIF", comment=b"hello") + PAYLOAD, "digit.gif", "png",
                 True, id="gif-comment-payload"),
    pytest.param(lambda hw: encode(Image.fromarray(hw(7)), "WEBP", lossless=True, exif=gps_exif()), "digit.webp",
                 "png", True, id="webp-gps"),
    pytest.param(lambda hw: encode(Image.fromarray(hw(7)), "TIFF", exif=gps_exif().tobytes()), "scan.tif",
                 "png", True, id="tiff-gps"),
]


def png_chunk_types(data):
    kinds, position = [], 8
    while position < len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        kinds.append(kind.decode())
        position += 12 + length
    return kinds


def jpeg_segments(data):
    """The marker bytes of a JPEG's segments, up to the start of its pixel data."""
    markers, position = [], 2
    while data[position + 1] != 0xDA:  # SOS: the compressed pixels follow
        markers.append(data[position + 1])
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]
    return markers


def assert_only_a_picture(data):
    """`data` is one PNG or JPEG holding its pixels and nothing else: no metadata, nothing after its end."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format in ("PNG", "JPEG")
        assert len(image.getexif()) == 0
        assert not {"exif", "comment", "icc_profile", "xmp", "XML:com.adobe.xmp"} & set(image.info)
        format = image.format
    if format == "PNG":
        assert set(png_chunk_types(data)) <= {"IHDR", "PLTE", "tRNS", "IDAT", "IEND"}
        assert png_chunk_types(data)[-1] == "IEND"  # and the walk above reached the end exactly
    else:
        APP1_EXIF_XMP, APP2_ICC, COMMENT = 0xE1, 0xE2, 0xFE
        assert not {APP1_EXIF_XMP, APP2_ICC, COMMENT} & set(jpeg_segments(data))
        assert data.endswith(b"\xff\xd9")
        assert b"Exif" not in data


@pytest.mark.parametrize(("make_file", "filename", "extension", "lossless"), STORED_COPIES)
def test_only_the_picture_is_kept_no_metadata_and_nothing_appended(
        client, app, handwritten, make_file, filename, extension, lossless):
    data = make_file(handwritten)
    response = post_whole_body(client, MNIST_URL, data, filename)
    assert response.status_code == 200 and response.json["prediction"] == 7, response.json
    name = response.json["upload"]
    assert name.endswith("." + extension)
    stored = (Path(app.config["UPLOAD_FOLDER"]) / name).read_bytes()
    assert_only_a_picture(stored)
    assert HTML not in stored and PAYLOAD[-64:] not in stored and b"PhoneMaker" not in stored
    assert len(stored) < 20_000  # the pictures are 120x120 (64x64) grey: the rest was not kept
    # ... and it is the picture that was sent.
    with Image.open(io.BytesIO(data)) as sent, Image.open(io.BytesIO(stored)) as kept:
        sent_pixels = np.asarray(sent.convert("L"), dtype=np.int16)
        kept_pixels = np.asarray(kept.convert("L"), dtype=np.int16)
    if lossless:
        assert np.array_equal(kept_pixels, sent_pixels)
    else:
        assert np.abs(kept_pixels - sent_pixels).mean() < 2


def test_the_metadata_rows_really_carry_gps_and_payloads(handwritten):
    """Guards the table above: each file has what must not be kept."""
    for make_file in (png_with_metadata_and_a_payload, jpeg_with_gps_and_a_payload):
        data = make_file(handwritten)
        assert data.endswith(PAYLOAD)
        with Image.open(io.BytesIO(data)) as image:
            assert image.getexif().get_ifd(0x8825)[2] == (52.0, 22.0, 5.0)  # latitude
            assert "icc_profile" in image.info
    for make_file, format in ((lambda hw: STORED_COPIES[5].values[0](hw), "WEBP"),
                              (lambda hw: STORED_COPIES[6].values[0](hw), "TIFF")):
        with Image.open(io.BytesIO(make_file(handwritten))) as image:
            assert image.format == format and image.getexif().get_ifd(0x8825)
    # Without our cleaning, Pillow reads the PNG's extra IDAT chunk as if it were not there.
    with Image.open(io.BytesIO(png_with_data_after_its_pixels(handwritten))) as image:
        image.load()


@pytest.mark.parametrize(("format", "options", "extension"), [
    ("JPEG", {"quality": 90}, "jpg"),  # decoded at 1/8 scale already (images.open_untrusted's draft)
    ("GIF", {}, "png"),  # a palette picture: reduced by taking every n-th pixel
    ("TIFF", {"compression": "tiff_lzw"}, "png"),
    ("PNG", {}, "png"),  # not kept as sent: each preview of it would decode it whole
])
def test_big_pictures_are_kept_reduced(client, app, handwritten, format, options, extension):
    data = encode(handwritten(3, size=3000), format, **options)
    response = post_whole_body(client, MNIST_URL, data, "big")
    assert response.status_code == 200 and response.json["prediction"] == 3
    name = response.json["upload"]
    assert name.endswith("." + extension)
    with Image.open(Path(app.config["UPLOAD_FOLDER"]) / name) as kept:
        assert max(kept.size) <= app.config["UPLOAD_STORED_MAX_SIDE"]
        assert kept.size[0] == kept.size[1]


# Serving stored uploads back ----------------------------------------------------------


def test_a_stored_upload_is_served_as_an_inert_image(client, handwritten):
    # A polyglot: a valid PNG with an HTML page after its end. Only the PNG is kept, and
    # it is served in a way no browser will run: image type, no sniffing, sandboxed.
    png = encode(handwritten(4))
    name = post_file(client, MNIST_URL, png + HTML, "digit.html").json["upload"]
    assert name.endswith(".png")
    with client.get(f"/uploads/{name}") as response:  # a file response: closed when done
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.data == png
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        assert response.headers["Content-Disposition"] == "inline"


@pytest.mark.parametrize("path", [
    "/uploads/../app/__init__.py",
    "/uploads/..%2fapp%2f__init__.py",
    "/uploads/..%2F..%2Fetc%2Fpasswd",
    "/uploads/%2e%2e/pyproject.toml",
    "/uploads/.gitkeep",
    "/uploads/.incoming-abc123",
    "/uploads/digit.png",
    "/uploads/" + "0" * 32 + ".png",  # the right shape, but no such upload
    "/uploads/" + "A" * 32 + ".png",
    "/uploads/" + "a" * 32 + ".svg",
    "/uploads/" + "a" * 32 + ".png.html",
    "/uploads/" + "a" * 32 + ".png%00.html",
    "/uploads/" + "a" * 32 + ".png%0A",  # a `$` in the name's pattern would let this through
    "/uploads/" + LEDGER,
])
def test_only_generated_upload_names_are_served(client, app, path):
    folder = Path(app.config["UPLOAD_FOLDER"])
    folder.mkdir()
    for decoy in (".gitkeep", ".incoming-abc123", "digit.png", "a" * 32 + ".svg", "A" * 32 + ".png",
                  "a" * 32 + ".png\n", LEDGER):
        (folder / decoy).write_bytes(SVG)  # files that are there, but were never ours to serve
    response = client.get(path)
    assert response.status_code == 404
    assert b"<svg" not in response.data


# Fuzzing: whatever the bytes, never a server error ------------------------------------

FUZZ_SEED_FORMATS = [("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}), ("BMP", {}),
                     ("WEBP", {"quality": 80}), ("TIFF", {})]


def mutate(data, draw):
    """Flip, insert, overwrite or cut bytes of `data`, a few times."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "overwrite", "truncate"]))
        if action == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif action == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[where:where + len(chunk)] = chunk
        elif action == "truncate":
            del data[where:]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_seeds(handwritten):
    """A small valid digit in each accepted format, and small versions of the decoder
    bombs' structures (scans, tiles, strips, extension blocks, runs, frames), for the
    fuzzer to mutate."""
    digits = [encode(handwritten(3, size=40), fmt, **options) for fmt, options in FUZZ_SEED_FORMATS]
    return digits + [
        hostile_files.progressive_jpeg(64, 48, scans=6, components=3),
        hostile_files.jpeg_sequential_scans(scans=6),
        hostile_files.tiff_tiled(40, 30, 16, compression=8),
        hostile_files.tiff_many_pages(pages=3),
        hostile_files.gif_many_sub_blocks(count=20),
        hostile_files.bmp_rle4_runs(side=40),
        hostile_files.webp_animated_huge_canvas(side=40),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_uploads_never_cause_a_server_error(client, app, uploads, fuzz_seeds, data):
    if data.draw(st.booleans(), label="random bytes"):
        upload = data.draw(st.binary(max_size=2048))
    else:
        upload = mutate(data.draw(st.sampled_from(fuzz_seeds)), data.draw)
    before = set(uploads())
    response = post_file(client, MNIST_URL, upload, data.draw(st.sampled_from(["digit.png", "x.jpg", "../x"])))
    after = set(uploads())
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code == 200:
        assert 0 <= response.json["prediction"] <= 9
        assert after - before == {response.json["upload"]}
        assert_only_a_picture((Path(app.config["UPLOAD_FOLDER"]) / response.json["upload"]).read_bytes())
    else:
        assert response.status_code in (400, 415) and response.is_json and set(response.json) == {"error"}
        assert after == before


# Logging ------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "the file is empty"),
    (SVG, "SVG files are not accepted"),
    (png_bomb(20_000, 20_000, 1), "too many pixels"),
    (encode(np.full((64, 64), 255, np.uint8)), "the image looks blank"),
])
def test_rejections_are_logged_with_their_reason(client, caplog, data, reason):
    caplog.set_level(logging.INFO, logger="app")
    post_file(client, MNIST_URL, data)
    rejections = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected")]
    assert len(rejections) == 1
    assert rejections[0].startswith(f"rejected POST {MNIST_URL}: ") and reason in rejections[0]


def test_a_large_decodes_share_of_the_budget_is_held_while_its_picture_lives(client):
    """The budget counts decoded pictures still in memory, not only decodes under way:
    the share comes back when the request is over and the picture freed, whatever the answer."""
    large = hostile_files.png_rgba8_at_the_cap()  # 160 MB once decoded
    image, _ = images.open_untrusted(large)
    assert images.decode_budget.reserved >= 150 * 1024 * 1024
    del image
    assert images.decode_budget.reserved == 0
    for _ in range(3):  # a "looks blank" answer leaves nothing reserved behind it
        assert_json_error(post_whole_body(client, MNIST_URL, large), 400, "looks blank")
        assert images.decode_budget.reserved == 0
