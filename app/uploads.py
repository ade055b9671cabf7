"""Reading uploads from a request, and keeping a clean copy of the accepted ones.

Validate first, store last: a rejected upload leaves nothing behind. An upload must
come as a multipart form; any other body is refused before it is parsed. What is kept
is a clean copy of the picture the server decoded, never the bytes as sent: no
metadata (EXIF, GPS, ICC, comments), nothing appended, under a generated name
(uuid + extension), never the client's. app/quota.py keeps the folder within its caps.
"""

import functools
import io
import json
import math
import re
import struct
from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np
from flask import Request, abort, current_app, request
from PIL import Image
from werkzeug import formparser
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.sansio.multipart import MultipartDecoder, State

from .images import ImageRejected, open_untrusted
from .preprocessing import UPRIGHT, exif_orientation
from .quota import STORED_NAME, UploadFolder  # noqa: F401 (STORED_NAME: pages and tests use it from here)


# Forms -----------------------------------------------------------------------------


class LimitedFormDataParser(FormDataParser):
    """Werkzeug applies MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS to multipart forms only;
    here url-encoded forms get them too (10 MB of "a&a&..." cost 2.5 s of CPU and 321 MB)."""

    def _parse_urlencoded(self, stream, mimetype, content_length, options):
        limit = self.max_form_memory_size
        if limit is not None and content_length is not None and content_length > limit:
            raise RequestEntityTooLarge()
        body = read_at_most(stream, limit + 1) if limit is not None else stream.read()
        if limit is not None and len(body) > limit:  # sent chunked, without a Content-Length
            raise RequestEntityTooLarge()
        if self.max_form_parts is not None and body.count(b"&") >= self.max_form_parts:
            raise RequestEntityTooLarge()
        items = parse_qsl(body.decode(), keep_blank_values=True, errors="werkzeug.url_quote")
        return stream, self.cls(items), self.cls()


def read_at_most(stream, size):
    """Up to `size` bytes of `stream`: fewer only at its end."""
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# Werkzeug's decoder compiles two regular expressions from each form's boundary, and
# browsers and curl send a fresh boundary with every request: the compiling cost 0.75 ms
# of a 6 ms canvas upload over HTTP (0.35-0.7 ms in-process; the benchmark's one fixed
# boundary had hidden it). Here the boundary is found with bytes.find, and only what
# follows it is matched, by one pattern compiled once.
LINE_BREAK = rb"(?:\r\n|\n|\r)"
BOUNDARY_END = re.compile(rb"(--[^\S\n\r]*%s?|[^\S\n\r]*%s)" % (LINE_BREAK, LINE_BREAK))
# RFC 2046's boundary characters. Others (a CR or LF smuggled in through RFC 2231's
# encoded parameters) get Werkzeug's own patterns: what is found must not depend on this.
BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{1,70}")


@dataclass(frozen=True)
class BoundaryFound:
    """The parts of a re.Match that Werkzeug's decoder uses."""

    first: int
    after: int
    ending: bytes  # group 1: "--" and what follows it for the last boundary, else a line break

    def start(self):
        return self.first

    def end(self):
        return self.after

    def group(self, index):
        assert index == 1
        return self.ending


class BoundarySearch:
    """Finds what Werkzeug's pattern `name` ("preamble_re": `[line break]--boundary(ending)`,
    or "boundary_re", with the line break required) finds: search(buffer, position) -> the
    leftmost match.

    Each "--boundary" with no line break or ending around it costs a step in Python, where
    Werkzeug's pattern steps in C: past FALSE_MARKERS of them, a body made of nothing else
    (10 MB of "\\n--bX") would cost seconds, so the search compiles Werkzeug's own pattern
    then, once, as Werkzeug would have for every request.
    """

    FALSE_MARKERS = 32

    def __init__(self, boundary, name):
        self.boundary, self.name = boundary, name
        self.marker = b"--" + boundary
        self.line_break_optional = name == "preamble_re"
        self.false_markers = 0
        self.compiled = None

    def search(self, buffer, position=0):
        if self.compiled is not None:
            return self.compiled.search(buffer, position)
        at = buffer.find(self.marker, position)
        while at >= 0:
            ending = BOUNDARY_END.match(buffer, at + len(self.marker))
            first = self.line_start(buffer, at, position) if ending else None
            if first is not None:
                return BoundaryFound(first, ending.end(), bytes(ending.group(1)))
            self.false_markers += 1
            if self.false_markers > self.FALSE_MARKERS:
                self.compiled = getattr(MultipartDecoder(self.boundary), self.name)
                return self.compiled.search(buffer, position)
            at = buffer.find(self.marker, at + 1)
        return None

    def line_start(self, buffer, at, position):
        """Where the line break before the marker at `at` begins (not before `position`)."""
        if at - 2 >= position and buffer[at - 2 : at] == b"\r\n":
            return at - 2
        if at - 1 >= position and buffer[at - 1 : at] in (b"\r", b"\n"):
            return at - 1
        return at if self.line_break_optional else None


class FreshBoundaryDecoder(MultipartDecoder):
    """Werkzeug's MultipartDecoder, with its two boundary patterns made without compiling."""

    def __init__(self, boundary, max_form_memory_size=None, *, max_parts=None):
        if not BOUNDARY.fullmatch(boundary):
            super().__init__(boundary, max_form_memory_size, max_parts=max_parts)
            return
        # What MultipartDecoder.__init__ sets (test_uploads checks that it sets no more).
        self.buffer = bytearray()
        self.complete = False
        self.max_form_memory_size = max_form_memory_size
        self.max_parts = max_parts
        self.state = State.PREAMBLE
        self.boundary = boundary
        self.preamble_re = BoundarySearch(boundary, "preamble_re")
        self.boundary_re = BoundarySearch(boundary, "boundary_re")
        self._search_position = 0
        self._parts_decoded = 0


class LimitedRequest(Request):
    """Flask's request, with the form limits applied to every kind of form, and file parts
    kept in memory."""

    form_data_parser_class = LimitedFormDataParser

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        # Werkzeug spools file parts over 500 KB to a temporary file on disk, and we read
        # them straight back: 3-5 ms for a phone photo. Under gunicorn the whole body is
        # in memory already (buffering_worker.py), capped at MAX_CONTENT_LENGTH.
        if (self.max_content_length or 0) > (current_app.config["MAX_CONTENT_LENGTH"] or 0):
            # A route with a higher limit (POST /api/jobs: 200 MB) reads its body from the
            # socket, and its files go to disk as Werkzeug would have it.
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return io.BytesIO()


def accepts_upload(view, sent="the image", field="file"):
    """Refuse a POST that is not a multipart form before anything reads its body.
    `sent` in the form `field` is what the refusal asks for."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        limit = request.max_content_length
        if request.method == "POST" and limit and (request.content_length or 0) > limit:
            abort(413)  # too large says more than the wrong type, and costs no more to know
        if request.method == "POST" and request.mimetype != "multipart/form-data":
            got = request.mimetype[:60] or "no Content-Type"
            abort(415, description=f"send {sent} as a multipart form (multipart/form-data) "
                                   f"in the field '{field}', as a browser or curl -F does; got {got}")
        return view(*args, **kwargs)

    return checked


# Reading ---------------------------------------------------------------------------

BUSY_DECODING_RETRY_SECONDS = 2  # a large decode takes ~0.3-1.5 s


@dataclass
class Upload:
    data: bytes  # as sent
    image: object  # the decoded PIL image (first frame; JPEGs maybe at a reduced scale)
    format: str  # Pillow's name for it: PNG, JPEG, MPO, GIF, BMP, WEBP, TIFF


def read_upload(field="file", draft=None):
    """The decoded image from the multipart field `field`; aborts with a clear message.

    `draft`: (mode, size) the caller needs at least, so that JPEGs decode at a reduced
    scale (preprocessing.DIGIT_DRAFT, XCEPTION_DRAFT)."""
    if field not in request.files:
        abort(400, description=f"no file: send the image in the multipart form field '{field}'")
    sent = request.files[field]
    try:
        return decoded_upload(sent.read(), sent.filename, current_app.config["MAX_IMAGE_PIXELS"], draft)
    except ImageRejected as exc:
        if exc.status == 503:  # busy, not broken: say when to come back
            abort(503, description=exc.message, retry_after=BUSY_DECODING_RETRY_SECONDS)
        abort(exc.status, description=exc.message)


def decoded_upload(data, filename, max_pixels, draft=None):
    """The Upload for a file's bytes as sent under `filename`, without a request: the
    batch jobs read each file of a job through here. Raises ImageRejected, with the
    message the single-image API answers."""
    if not data and not filename:  # a browser form submitted before a file was chosen
        raise ImageRejected("no file chosen: choose an image to upload")
    image, image_format = open_untrusted(data, max_pixels, draft)
    return Upload(data=data, image=image, format=image_format)


# Keeping a clean copy --------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_PIXEL_CHUNKS = (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND")
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")
JPEG_MODES = ("L", "RGB", "CMYK")
JPEG_QUALITY = 90


def clean_copy(upload, max_side):
    """(file bytes, extension) to keep for an accepted upload: only its picture.

    A PNG that needs no turning or reducing keeps its own compressed pixels, with every other
    chunk and anything after its end dropped (microseconds). Anything else is
    re-encoded from the decoded picture: turned upright by its EXIF orientation,
    reduced to at most `max_side` pixels a side, without metadata; JPEG (quality 90)
    for JPEGs, PNG for the rest. JPEGs arrive decoded at a reduced scale already
    (images.open_untrusted's draft), so a 12 MP photo costs about 1 ms, not ~70."""
    # Only a PNG within `max_side` is kept as sent: a larger one (a 6000x6000 PNG can be
    # 150 KB) would cost every later preview of it a full decode (290 MB, 1 s of CPU).
    if upload.format == "PNG" and exif_orientation(upload.image) == 1 and max(upload.image.size) <= max_side:
        data = png_pixels_only(upload.data)
        if data is not None:
            return data, "png"
    as_jpeg = upload.format in ("JPEG", "MPO")
    image = savable(reduced(upright(upload.image), max_side), JPEG_MODES if as_jpeg else PNG_MODES)
    if image is upload.image:
        image = image.copy()  # don't touch the caller's image
    image.info = {key: value for key, value in image.info.items() if key == "transparency"}
    buffer = io.BytesIO()
    if as_jpeg:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue(), "jpg" if as_jpeg else "png"


def png_pixels_only(data):
    """The PNG with only the chunks that make its pixels (header, palette, transparency,
    image data), ending at IEND; None where that is not simply possible: animations,
    unknown critical chunks, or more image data than its pixels could need (a payload
    hidden after the compressed pixels)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    view, position, kept, image_data = memoryview(data), len(PNG_SIGNATURE), [PNG_SIGNATURE], 0
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length  # length, type, data, CRC
        critical = not kind[0] & 0x20  # an upper-case first letter
        if end > len(data) or kind == b"acTL" or (critical and kind not in PNG_PIXEL_CHUNKS):
            return None  # cut short, animated, or a critical chunk we don't know
        if kind in PNG_PIXEL_CHUNKS:
            kept.append(view[position:end])
            image_data += length if kind == b"IDAT" else 0
        if kind == b"IEND":
            break
        position = end
    else:
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    row = math.ceil(width * PNG_CHANNELS.get(colour, 4) * depth / 8)
    raw = height * (1 + row) + 8 * height + 64  # filter bytes, and interlacing's extra rows
    if image_data > raw + raw // 1000 + 1024:  # deflate's worst case is about raw + 0.01%
        return None
    return b"".join(kept)


def upright(image):
    """The picture turned the way its EXIF orientation says it is seen."""
    transpose = UPRIGHT.get(exif_orientation(image))
    return image.transpose(transpose) if transpose else image


def savable(image, modes):
    """The picture in one of `modes`: 32-bit and float as 8-bit grey, the rest as RGB(A)."""
    if image.mode in modes:
        return image
    if image.mode in ("I", "F"):  # their own range stretched to 0-255, as prepare_image does
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        return Image.fromarray(((values - low) * (255 / (high - low) if high > low else 0)).astype(np.uint8))
    return image.convert("RGBA" if image.mode.endswith(("A", "a")) else "RGB")


def reduced(image, max_side):
    """The picture with its longer side at most `max_side`: an integer box filter."""
    factor = math.ceil(max(image.size) / max_side)
    if factor < 2:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):  # no box filter for these
        width, height = image.size
        return image.resize((math.ceil(width / factor), math.ceil(height / factor)), Image.Resampling.NEAREST)
    return image.reduce(factor)


def store_upload(upload, answer=None):
    """Keep a clean copy of an accepted upload, and `answer` (what the server answered
    about it: JSON-able, for its result page) beside it; returns its generated name, or
    None when the caps leave no room for it at all (UPLOAD_MAX_FILES = 0: storing is off)."""
    config = current_app.config
    if config["UPLOAD_MAX_FILES"] < 1:
        return None
    data, extension = clean_copy(upload, config["UPLOAD_STORED_MAX_SIDE"])
    answer_bytes = json.dumps(answer, separators=(",", ":")).encode() if answer is not None else b""
    name = upload_folder().store(data, extension, config["UPLOAD_MAX_FILES"], config["UPLOAD_MAX_BYTES"],
                                 answer=answer_bytes)
    if name is None:
        current_app.logger.info("upload not kept: %d bytes, caps %d files, %d bytes",
                                len(data), config["UPLOAD_MAX_FILES"], config["UPLOAD_MAX_BYTES"])
    return name


def stored_answer(name):
    """The answer kept with the stored upload `name`; None when there is none (an unknown
    or malformed name, an upload kept without one, or one deleted to make room) or when
    its file is damaged."""
    if not STORED_NAME.fullmatch(name):
        return None
    data = upload_folder().answer(name)
    if data is None:
        return None
    try:
        answer = json.loads(data)
    except ValueError:  # empty or cut short (a power cut: the file is renamed in, never fsynced), or not UTF-8
        current_app.logger.warning("the answer kept with upload %s cannot be read (%d bytes)", name, len(data))
        return None
    return answer if isinstance(answer, dict) else None


def upload_folder():
    """This app's UploadFolder (created by init_app)."""
    return current_app.extensions["uploads"]


def init_app(app):
    app.request_class = LimitedRequest
    # Werkzeug's MultiPartParser.parse makes its decoder by this module-level name, with no
    # other way in; FreshBoundaryDecoder finds what Werkzeug's own decoder finds (test_uploads).
    formparser.MultipartDecoder = FreshBoundaryDecoder
    app.extensions["uploads"] = UploadFolder(app.config["UPLOAD_FOLDER"])
