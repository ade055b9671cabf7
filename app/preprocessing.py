"""Images to model inputs: pure functions, no Flask.

`prepare_image` does to a photo what MNIST did to its scans, so that a digit
that fills a tenth of a phone picture reaches the model the way MNIST digits do:
light ink on black, cropped to the ink, fitted into 20x20, centred by mass in 28x28.
"""

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

MNIST_SIZE = 28
MNIST_DIGIT_BOX = 20  # MNIST fitted each digit into 20x20 ...
MNIST_CENTRE = 14.0  # ... and placed its centre of mass here (measured: 14.0 +- 0.3)
XCEPTION_SIZE = (299, 299)

WORK_SIZE = 512  # larger photos are reduced first: plenty for a digit, and fast
MIN_SIZE = 8  # smaller than this is no picture of a digit
MIN_CONTRAST = 0.08  # ink this faint (on a 0-1 scale) is noise on a blank page
INK_CORE = 0.25  # part of a stroke, after the ink is scaled to 0-1
MIN_PART = 0.02  # pieces smaller than this share of the largest are specks


class NoDigitFound(ValueError):
    """The image decodes but holds nothing the models can read as a digit."""


def upright_flat(image):
    """Apply the EXIF orientation and drop alpha onto white; returns an 'L' or 'RGB' image.

    Handles palette, CMYK, 16-bit and float images, so callers see only two modes.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Deep images: stretch their own range to 8 bits; the scale is irrelevant.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else values * 0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" or image.mode.endswith("A") or image.mode.endswith("a"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        # Transparent canvas exports: what is not drawn is paper.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image)
        image = white
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB")  # CMYK, YCbCr, LAB, 1, HSV


def grayscale(image):
    """Any decoded image -> float32 array in [0, 1], upright, reduced to WORK_SIZE."""
    image = upright_flat(image)
    if min(image.size) < MIN_SIZE:
        raise NoDigitFound(
            f"the image is too small ({image.size[0]}x{image.size[1]} pixels); "
            f"it needs at least {MIN_SIZE}x{MIN_SIZE}"
        )
    if max(image.size) > WORK_SIZE:
        image = image.copy()
        image.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def ink_map(gray):
    """Grey levels -> ink strength, light ink on a zero background, like MNIST.

    Most of a picture is background, so the median is the background level: if it
    lies nearer the brightest end, the ink is dark. (The 3x3 blur keeps a few
    hot pixels from deciding the extremes.) Large pictures get their uneven
    lighting removed with a grey opening wider than any stroke; small ones just
    lose the median level.
    """
    blurred = ndimage.uniform_filter(gray, 3)
    light_background = np.median(gray) > (blurred.min() + blurred.max()) / 2
    ink = 1.0 - gray if light_background else gray
    if min(ink.shape) > 64:
        width = min(ink.shape) // 4
        background = ndimage.uniform_filter(ndimage.grey_opening(ink, size=width), width)
    else:
        background = float(np.median(ink))
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise NoDigitFound("no digit found: the image looks blank")
    ink /= peak
    # Paper grain and JPEG noise sit a few deviations above zero; cut them off softly.
    noise = float(np.median(np.abs(ink - np.median(ink)))) * 1.4826
    floor = min(0.5, float(np.median(ink)) + 3 * noise)
    if floor > 0:
        ink = np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)
    ink[ink < 0.5 / 255] = 0.0  # rounding residue of the background filters: no ink
    return ink


def keep_digit(ink):
    """Zero out specks and page edges, keeping the digit's pieces and their soft rims."""
    labels, count = ndimage.label(ink > INK_CORE, structure=np.ones((3, 3)))
    if count == 0:
        raise NoDigitFound("no digit found: the image looks blank")
    areas = ndimage.sum_labels(np.ones_like(ink), labels, index=np.arange(1, count + 1))
    boxes = ndimage.find_objects(labels)
    height, width = ink.shape

    def spans_image(box):  # a ruled line or the page's edge, not a digit stroke
        rows, cols = box
        return (cols.stop - cols.start >= 0.9 * width) or (rows.stop - rows.start >= 0.9 * height)

    keep = [
        i + 1 for i, (area, box) in enumerate(zip(areas, boxes))
        if area >= MIN_PART * areas.max() and not (count > 1 and spans_image(box))
    ]
    if not keep:
        raise NoDigitFound("no digit found: only lines or specks")
    # Keep every soft pixel joined to a kept stroke: its anti-aliased rim included.
    regions, _ = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    kept_regions = np.unique(regions[np.isin(labels, keep)])
    return np.where(np.isin(regions, kept_regions), ink, 0.0)


def fit_box(ink):
    """Crop to the ink and scale it so its longer side is 20 pixels, keeping its shape."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    if max(height, width) == MNIST_DIGIT_BOX:
        return crop  # already MNIST-sized: leave MNIST's own digits untouched
    scale = MNIST_DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(
        size, Image.Resampling.LANCZOS
    )
    box = np.clip(np.asarray(resized), 0.0, None)
    return box / box.max() if box.max() > 0 else box


def centre_by_mass(box):
    """Place the box in 28x28 so that its centre of mass lands where MNIST's do."""
    height, width = box.shape
    top, left = (MNIST_SIZE - height) // 2, (MNIST_SIZE - width) // 2
    cy, cx = ndimage.center_of_mass(box)
    # Integer shifts, as MNIST did, held so that no ink falls off the edge.
    dy = int(np.clip(round(MNIST_CENTRE - (top + cy)), -top, MNIST_SIZE - height - top))
    dx = int(np.clip(round(MNIST_CENTRE - (left + cx)), -left, MNIST_SIZE - width - left))
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    out[top + dy : top + dy + height, left + dx : left + dx + width] = box
    return out


def prepare_image(image):
    """A decoded PIL image of one digit -> float32 (28, 28) in [0, 1], MNIST-style.

    Raises NoDigitFound when the picture is too small or holds no ink.
    """
    return centre_by_mass(fit_box(keep_digit(ink_map(grayscale(image)))))


def prepare_xception_input(image):
    """A decoded PIL image -> float32 (1, 299, 299, 3), as Xception was trained on."""
    from keras.applications.xception import preprocess_input

    rgb = upright_flat(image).convert("RGB").resize(XCEPTION_SIZE, Image.Resampling.BILINEAR)
    batch = np.asarray(rgb, dtype=np.float32)[None]  # (1, 299, 299, 3), RGB, 0-255
    return preprocess_input(batch)  # scales to [-1, 1], Xception's "tf" mode
