"""Decode untrusted image bytes safely. No Flask in here.

Follows Pillow's security notes and the OWASP file-upload cheat sheet: an explicit
allow-list of decoders (never EPS or anything that reaches Ghostscript), a pixel limit
well below Pillow's default, the decompression-bomb warning raised as an error,
truncated files refused, and only the first frame of animations decoded. Files whose
structure would make decoding cost far more than their pixels (decoder bombs) are
refused before Pillow reads them, and no decode may need more than
decode_limits.MEMORY_LIMIT: see decode_limits.py.
"""

import codecs
import io
import threading
import warnings
import weakref

from PIL import (BmpImagePlugin, GifImagePlugin, Image, ImageFile, JpegImagePlugin,  # noqa: F401 - registers them
                 PngImagePlugin, TiffImagePlugin, WebPImagePlugin)

from . import decode_limits
from .decode_limits import MAX_SIDE, MEMORY_LIMIT, OutOfProportion

# Formats Pillow may even try: PNG, JPEG, GIF, BMP, WebP, TIFF. Nothing else.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Phone JPEGs with a depth or preview picture open as MPO: still a JPEG on disk.
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "MPO": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: a 12 MP phone photo fits three times over
# All the decodes under way in one process (a gunicorn worker, 32 request threads) need
# at most this much memory together; one that does not fit now is answered 503 at once.
# Small decodes (a canvas, a phone JPEG read at a draft scale) are not counted.
DECODE_BUDGET = 320 * decode_limits.MEGABYTE
SMALL_DECODE = 8 * decode_limits.MEGABYTE
# A JPEG read at a draft scale may declare up to Pillow's own bomb limit (its warning is an
# error here): 89 megapixels, a 50 or 64 MP phone photo included.
JPEG_MAX_PIXELS = Image.MAX_IMAGE_PIXELS

ImageFile.LOAD_TRUNCATED_IMAGES = False  # the default; stated because it matters here
# Pillow warns above MAX_IMAGE_PIXELS and only raises at twice that; make the warning
# an error too, process-wide (warnings.catch_warnings is not thread-safe).
warnings.simplefilter("error", Image.DecompressionBombWarning)


class ImageRejected(ValueError):
    """An upload that is not an acceptable image. `status` is the HTTP status to answer."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


# The first bytes of each accepted format, to tell a broken image from a non-image.
SIGNATURES = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def claimed_format(data):
    """The accepted format that `data` starts like, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)


def describe_non_image(data):
    """A short guess at what a rejected file is, from its first bytes."""
    head = data[:512].lstrip().lower()
    if head.startswith(b"%!ps") or data.startswith(b"\xc5\xd0\xd3\xc6"):
        return "EPS/PostScript"
    if head.startswith(b"%pdf"):
        return "PDF"
    if b"<svg" in head:
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html")) or b"<script" in head:
        return "HTML"
    if data.startswith((b"\x00\x00\x00\x0cjxl", b"\xff\x0a")):
        return "JPEG XL"
    if b"ftypheic" in data[:32] or b"ftypavif" in data[:32] or b"ftypmif1" in data[:32]:
        return "HEIC/AVIF"
    return "text" if looks_like_text(data[:512]) else None


# Bytes that text files do not contain: control characters other than tabs and line breaks.
CONTROL_BYTES = frozenset(range(32)) - frozenset(b"\t\n\r\f") | {127}


def looks_like_text(head):
    """Valid UTF-8 without control bytes (so a file of zeros is not "text")."""
    if CONTROL_BYTES.intersection(head):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut off at the end is fine
    except UnicodeDecodeError:
        return False
    return True


def open_untrusted(data, max_pixels=DEFAULT_MAX_PIXELS, draft=None):
    """Decode the first frame of an uploaded image; returns (PIL image, format name).

    `draft` is (mode, (width, height)): what the caller needs at least. A JPEG is then
    decoded straight to the smallest DCT scale (1/2, 1/4 or 1/8) that still covers that
    size, and to that mode: a 12-megapixel photo costs 9 ms instead of 40-55 ms.
    `max_pixels` applies to what is decoded: such a JPEG may declare more (a 50 MP phone
    photo decodes at 1/8 as 0.8 MP), up to Pillow's own bomb limit (89 MP; JPEG_MAX_PIXELS).
    Every other format is held to `max_pixels` from its header.
    Raises ImageRejected with a message that says what was wrong.
    """
    if not data:
        raise ImageRejected("the file is empty")
    try:
        format_name = pillow_format(data)
        structure = decode_limits.check_structure(data, format_name)
        reduces = draft is not None and format_name == "JPEG"
        image = opened(data, JPEG_MAX_PIXELS if reduces else max_pixels)
        size = image.size
        image.seek(0)  # animations: the first frame only
        if reduces:
            image.draft(*draft)
            if image.width * image.height > max_pixels:  # too large even at 1/8
                raise ImageRejected(too_many_pixels_message(size, max_pixels))
        load(image, check_memory(image, structure, size))
    except OutOfProportion as exc:
        raise ImageRejected(exc.message, exc.status) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(too_many_pixels_message(image.size, max_pixels)) from None
    except MemoryError:
        raise ImageRejected("the image is too large to decode") from None
    except ImageRejected:
        raise
    except Exception:  # OSError for truncation, and whatever else corrupt data provokes
        raise ImageRejected("the image is truncated or corrupt: it cannot be decoded") from None
    return image, image.format


def pillow_format(data):
    """The accepted format Pillow will open `data` as (by its own signature checks), or None."""
    prefix = data[:16]
    for name in ALLOWED_FORMATS:
        _, accept = Image.OPEN[name]
        if accept(prefix) is True:  # WebP's answers a string for RIFF files it can't read
            return name
    return None


def opened(data, max_pixels):
    """The image Pillow opens from `data`, its header read and its size checked, no pixel decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.UnidentifiedImageError:
        claimed = claimed_format(data)
        if claimed:
            raise ImageRejected(f"the image is corrupt: it starts like a {claimed} but cannot be read") from None
        kind = describe_non_image(data)
        what = f"{kind} files are" if kind else "this file is"
        raise ImageRejected(
            f"unsupported file type: {what} not accepted; upload a PNG, JPEG, GIF, BMP, WebP or TIFF image",
            status=415,
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(too_many_pixels_message(None, max_pixels)) from None
    except ValueError as exc:
        if "MAX_TEXT" in str(exc):  # PngImagePlugin's limits on text chunks and ICC profiles
            raise ImageRejected("the image's metadata is too large: a PNG text chunk or colour profile "
                                "inflates to over 1 MB, or all of them to over 64 MB") from None
        raise ImageRejected("the image is corrupt: its header cannot be read") from None
    except Exception:  # Pillow's plugins raise many types on corrupt headers
        raise ImageRejected("the image is corrupt: its header cannot be read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(too_many_pixels_message(image.size, max_pixels))
    if max(width, height) > MAX_SIDE:
        raise ImageRejected(f"the image {width}x{height} is over the limit of {MAX_SIDE:,} pixels on a side; "
                            "resize it and try again")
    return image


def check_memory(image, structure, size):
    """The bytes decoding `image`, opened (`size` as it declares) but not loaded, will
    take (decode_limits.memory_needed); raises OutOfProportion over MEMORY_LIMIT."""
    needed = decode_limits.memory_needed(image, structure)
    if needed > MEMORY_LIMIT:
        kind = {"JPEG": "multi-scan JPEG", "MPO": "multi-scan JPEG", "WEBP": "WebP"}.get(image.format, image.format)
        raise OutOfProportion(
            f"the image is too large to decode: this {size[0]}x{size[1]} {kind} would take about "
            f"{-(-needed // decode_limits.MEGABYTE):,} MB of memory, over the limit of "  # rounded up: never "256, over 256"
            f"{MEMORY_LIMIT // decode_limits.MEGABYTE} MB; resize it and try again")
    return needed


class DecodeBudget:
    """The memory that this process's decodes under way may take together."""

    def __init__(self, total):
        self.total, self.reserved = total, 0
        self._lock = threading.Lock()

    def reserve(self, size):
        """Take `size` bytes of it, or False when they are not free now."""
        with self._lock:
            if self.reserved + size > self.total:
                return False
            self.reserved += size
            return True

    def release(self, size):
        with self._lock:
            self.reserved -= size


decode_budget = DecodeBudget(DECODE_BUDGET)


def load(image, needed):
    """Decode `image`, which will need `needed` bytes, held from the budget until the
    picture is freed. A large decode waits for no other: when the budget has no room for
    it now, it is answered 503 at once, which keeps a worker's memory bounded and its
    threads free for other requests."""
    if needed <= SMALL_DECODE:
        image.load()
        return
    if not decode_budget.reserve(needed):
        raise ImageRejected("the server is busy decoding other large images; try again in a few seconds",
                            status=503)
    try:
        image.load()
    except BaseException:
        decode_budget.release(needed)
        raise
    # The pixels stay in memory as long as the picture does (preprocessing, waiting for a
    # model, storing): so does its share of the budget, given back when it is freed.
    weakref.finalize(image, decode_budget.release, needed)


def too_many_pixels_message(size, max_pixels):
    dims = f"{size[0]}x{size[1]} " if size else ""
    return f"too many pixels: the image {dims}is over the limit of {max_pixels:,} pixels; resize it and try again"
