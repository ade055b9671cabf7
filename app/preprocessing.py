"""Images to model inputs: pure functions, no Flask.

`prepare_image` does to a photo what MNIST did to its scans, so that a digit
that fills a tenth of a phone picture reaches the model the way MNIST digits do:
light ink on black, cropped to the ink, fitted into 20x20, centred by mass in 28x28.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

MNIST_SIZE = 28
MNIST_DIGIT_BOX = 20  # MNIST fitted each digit into 20x20 ...
MNIST_CENTRE = 14.0  # ... and placed its centre of mass here (measured: 14.0 +- 0.3)
XCEPTION_SIZE = (299, 299)
# What each path needs decoded at least (see images.open_untrusted): JPEGs decode
# straight to a reduced scale. A digit needs little: a 4000x3000 photo gives 500x375.
DIGIT_DRAFT = ("L", (288, 288))
XCEPTION_DRAFT = ("RGB", XCEPTION_SIZE)

WORK_SIZE = 512  # larger photos are reduced first: plenty for a digit, and fast
MIN_SIZE = 8  # smaller than this is no picture of a digit
PHOTO_SIDE = 64  # pictures larger than this both ways may be photos of paper: lighting, noise, lines
CLEAN_SHARE = 0.5  # a picture with this share of its pixels at one exact grey level is a clean drawing ...
CLEAN_NEAR, CLEAN_NOISE = 8, 0.02  # ... unless this share lies within a few levels of it: noise, grain
CLEAN_SIZE = 96  # a clean drawing's digit is cropped and reduced to at most this size
NUMBER_ASPECT = 1.5  # no single digit is wider than this share of its height
MIN_CONTRAST = 0.08  # ink this faint (on a 0-1 scale) is noise on a blank page
MIN_INK_TO_NOISE = 8.0  # a digit's strokes stand this many noise deviations above the paper, at least
MIN_PAPER_LINES = 3  # this many bands of ink across the picture ...
PAPER_LINE_COVER = 0.3  # ... each inked along this share of it at least (broken lines) ...
PAPER_LINE_WIDTH = 6  # ... and at most this many pixels thick (sagging a little) ...
PAPER_LINES_SHARE = 0.8  # ... holding this share of the ink: an empty ruled page
SIDE_BY_SIDE_HEIGHT = 0.6  # pieces of ink this share of the tallest's height, or taller, ...
SIDE_BY_SIDE_GAP = 0.1  # ... apart by this share of it: several digits side by side
INK_CORE = 0.25  # part of a stroke, after the ink is scaled to 0-1
MIN_PART = 0.02  # pieces smaller than this share of the largest are specks ...
PEN_DOT = 0.5  # ... in a number's drawing, only those under this many stroke widths squared (a dot: pi / 4)
FAR_DOT = 2.0  # a lone digit's dot of the pen this many stroke widths from any other ink is a stray tap
MIN_STROKE_PIXELS = 8  # a drawing's largest piece of ink holds at least this many pixels, or reaches ...
DUST = 3  # ... further than this many pixels across (dust does neither; a tiny picture's 1 may be 6x1)
PEN_PIXELS = 3  # a drawing is reduced no further than leaves its pen this wide ...
PEN_SMEAR = 2  # ... which, reduced, looks at most this much wider (pixels): a thicker one is left alone
MAX_RECROPS = 3  # each crop is tighter than the last; the first again is enough (a bound, not a tuning)
RECROP_MARGIN = 6  # a drawing's kept ink this many pixels smaller than its crop was cropped with a speck
LINE_SEEN = 0.1  # faint lines are looked for in ink down to this (INK_CORE breaks them into dashes)
LINE_SPAN = 0.6  # a straight run across this share of a picture may be a ruled line ...
LINE_SEARCH_SIZE = 128  # pictures twice this size are searched for runs at half size
LINE_SAG = 0.005  # ... give or take this share of the picture across it, with
LINE_FILL = 0.9  # this share of the run inked (noise breaks faint lines) ...
LINE_FAINT = 0.5  # ... where its ink is this faint (print, beside the pen); or if it is dark but
LINE_THINNER = 0.6  # this much thinner than the digit's strokes, or runs on past both
LINE_BEYOND = 0.25  # ends of the digit by this share of the digit's size (page edges)
LINE_MAX_PIECES = 200  # more long dark pieces than this: a texture, not ruled paper
LINE_DIGIT_PART = 0.25  # smaller than this share of the largest piece: a scrap, not the digit
MNIST_STROKE = 0.17  # MNIST's median stroke width, as a share of the 20-pixel box
STROKES_TALL = 3.0  # a digit is at least this many stroke widths tall (MNIST's: about 6) ...
DOT_TALL = 1.5  # ... and surely this many times as tall as its thickest stroke (a dot or a dash: 1)
DASH_SLOPE = 30  # degrees: a stroke this near level is a dash (MNIST's 1s lean up to 45) ...
DASH_LONG = 2.0  # ... when it is this many times as long as it is thick (a pen's tap: 1)
FLAT_WIDE = 1.15  # ... and so at least 1.24 times as wide as it is tall (this, with room to spare)
TWO_DOTS_INK = 10.0  # two dots hold at most about 2 pi (6.3-6.6) stroke widths squared of ink
THIN_STROKE = 0.11  # thinner than this (MNIST's 10th percentile is 0.13) gets thickened
STROKE_BOX = 80  # the size at which strokes are measured and thickened
BAND_PIXELS = 1 << 21  # large pictures are converted and reduced this many pixels at a time
# Modes that Image.reduce() takes without a full-size copy (it premultiplies RGBA and LA).
REDUCIBLE = {"L", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"}


class NoDigitFound(ValueError):
    """The image decodes but holds nothing the models can read as a digit."""


# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image):
    """The EXIF orientation (1: as stored); 1 when the EXIF is malformed."""
    try:
        return image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF (any of Pillow's parsers may raise): take the picture as it is
        return 1


def upright_flat(image, longest):
    """Upright, alpha dropped onto white, and either 'L' or 'RGB'; first reduced by an
    integer factor (a box filter) when it is over twice `longest`.

    Handles palette, CMYK, 16-bit and float images, so callers see only two modes.
    """
    orientation = exif_orientation(image)
    factor = max(image.size) // (2 * longest)
    image = flat(reduced(image, factor) if factor >= 2 else image)
    transpose = UPRIGHT.get(orientation)
    return image.transpose(transpose) if transpose else image


def reduced(image, factor):
    """The picture reduced by an integer factor (a box filter), before any colour
    conversion at full size: modes that reduce() can't take, or takes only through a
    full-size copy (it premultiplies alpha), are converted and reduced a band of rows
    at a time. A 40-megapixel palette PNG never becomes 160 MB of RGBA."""
    if image.mode in REDUCIBLE:
        return image.reduce(factor)
    rows = factor * max(1, BAND_PIXELS // (image.width * factor))
    bands = [reducible(image.crop((0, top, image.width, min(top + rows, image.height)))).reduce(factor)
             for top in range(0, image.height, rows)]
    whole = Image.new(bands[0].mode, (bands[0].width, sum(band.height for band in bands)))
    for index, band in enumerate(bands):
        whole.paste(band, (0, index * bands[0].height))
    return whole


def reducible(band):
    """A band of a picture in a mode that reduce() takes as it is."""
    if band.mode.startswith("I;16"):
        return band.convert("I")  # still deep: flat() stretches its range once it is reduced
    if band.mode == "1":
        return band.convert("L")
    return flat(band)  # palette and alpha: onto white, as 'L' or 'RGB'


def flat(image):
    """Alpha dropped onto white, and either 'L' or 'RGB'."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Deep images: stretch their own range to 8 bits; the scale is irrelevant.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else values * 0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" and not image.has_transparency_data:
        return image.convert("RGB")
    if image.mode in ("P", "PA") or image.mode.endswith(("A", "a")):
        image = image.convert("RGBA")
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        return image.convert("RGB")  # opaque, as the page's canvas exports: no compositing (1 ms)
    if image.mode == "RGBA":
        # Transparent canvas exports: what is not drawn is paper.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image)
        image = white
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB")  # CMYK, YCbCr, LAB, 1, HSV


def grayscale(image):
    """Any decoded image -> uint8 array of grey levels, upright, reduced to WORK_SIZE."""
    if min(image.size) < MIN_SIZE:
        raise NoDigitFound(
            f"the image is too small ({image.size[0]}x{image.size[1]} pixels); "
            f"it needs at least {MIN_SIZE}x{MIN_SIZE}"
        )
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        image = image.convert("L")  # an opaque canvas export: one conversion, not RGB then grey
    image = upright_flat(image, WORK_SIZE)
    if max(image.size) > WORK_SIZE:
        image = image.copy()
        image.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    gray = image if image.mode == "L" else image.convert("L")
    return np.asarray(gray)


def drawing_paper(gray):
    """(the paper's grey level, whether the ink is darker than it) for a clean drawing (a
    canvas, a digital image); None for photos and scans.

    A drawing's background is one exact grey level, with no lighting or noise to
    remove, so the picture's histogram says all: the commonest level is the paper,
    and the ink lies on the side of it where most of the rest lies.
    """
    counts = np.array(Image.fromarray(gray).histogram())  # in C, without bincount's cast to 64 bits
    background = int(counts.argmax())
    near = counts[max(0, background - CLEAN_NEAR) : background + CLEAN_NEAR + 1].sum() - counts[background]
    if counts[background] < CLEAN_SHARE * gray.size or near > CLEAN_NOISE * gray.size:
        return None  # grain, noise or lighting: a photo
    levels = np.arange(256)
    dark_ink = counts @ np.clip(background - levels, 0, None) >= counts @ np.clip(levels - background, 0, None)
    return background, dark_ink


def drawing_ink(gray, paper, region=(0, 0, None, None)):
    """The ink of a clean drawing on `paper` (drawing_paper), cropped to what is drawn
    within `region` of `gray` ((top, left, bottom, right); by default all of it) and
    reduced to at most CLEAN_SIZE.

    Returns (ink, (top, left) of the crop in `gray`, reduction factor): the last two
    place the ink back in the picture (prepare_digits' boxes). The digit needs no more
    pixels than MNIST's processing keeps: a 280x280 canvas costs what a small image does.
    """
    background, _ = paper
    region_top, region_left, bottom, right = region
    drawn = gray[region_top:bottom, region_left:right] != background
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        raise NoDigitFound("no digit found: the image looks blank")
    top, left = max(0, region_top + rows[0] - 1), max(0, region_left + cols[0] - 1)
    crop = gray[top : region_top + rows[-1] + 2, left : region_left + cols[-1] + 2]
    # A number drawn across a wide canvas is reduced by its height, not its width: each
    # of its digits keeps the pixels a single digit gets (single digits are never wider).
    factor = clean_factor(*crop.shape)
    ink = ink_on(crop, paper, factor)
    if factor > 1 and pen_width(ink) < PEN_PIXELS + PEN_SMEAR:
        # A fine pen: reduced past its width, a stroke fades, a number's point fades into a
        # smear the size of a speck, and a speck grows to a point's ("2514" read "25.14").
        # The pen keeps PEN_PIXELS pixels at least (a 3-pixel pen: no reduction at all).
        finest = max(1, int(pen_width(ink_on(crop, paper)) // PEN_PIXELS))
        if finest < factor:
            factor = finest
            ink = ink_on(crop, paper, factor)
    peak = float(ink.max())
    if peak < MIN_CONTRAST * 255:
        raise NoDigitFound("no digit found: the image looks blank")
    return ink / peak, (top, left), factor


def ink_on(crop, paper, factor=1):
    """A drawing's grey levels as ink (how far each is from the paper's, on the ink's side),
    reduced by `factor` (a box filter)."""
    background, dark_ink = paper
    crop = (np.asarray(Image.fromarray(crop).reduce(factor)) if factor > 1 else crop).astype(np.float32)
    return np.clip(background - crop if dark_ink else crop - background, 0.0, None)


def pen_width(ink):
    """The stroke width of a drawing's ink as ink_on gives it (any scale), a crop's edge
    counted as a stroke's edge."""
    return edge_stroke_width(ink / max(1.0, float(ink.max())))


def clean_factor(height, width):
    """The factor a drawing's ink, cropped to `height` x `width` pixels, is reduced by."""
    return -(-max(height, min(width, round(NUMBER_ASPECT * height))) // CLEAN_SIZE)


def median(values):
    """The (upper) median, without np.median's overhead: this runs on every request."""
    flat = values.ravel()
    middle = flat.size // 2
    return float(np.partition(flat, middle)[middle])


def photo_ink(gray):
    """(ink strength, noise): grey levels -> light ink on a zero background, like MNIST,
    and the background's noise (one standard deviation) in the same units.

    Most of a picture is background, so the median is the background level: if it
    lies nearer the brightest end, the ink is dark. (The 3x3 blur keeps a few
    hot pixels from deciding the extremes.) Large pictures get their uneven
    lighting removed with a grey opening wider than any stroke; small ones just
    lose the median level, and have no noise to speak of (0).
    """
    darkest, brightest = box_mean_extremes(gray)
    light_background = median(gray) > (darkest + brightest) / 2
    ink = 1.0 - gray if light_background else gray
    photo = min(ink.shape) > PHOTO_SIDE
    if photo:
        # Lighting varies slowly: estimate it on a quarter-size copy (16x less work),
        # with a minimum filter first so that no stroke survives the reduction. (A
        # blocky upscale is faster, but lost page edges: measured.)
        small = sampled_minimum(ink, 4)
        width = min(small.shape) // 4
        smooth = ndimage.uniform_filter(ndimage.grey_opening(small, size=width), width)
        background = resize(smooth, (ink.shape[1], ink.shape[0]), Image.Resampling.BILINEAR)
    else:
        background = median(ink)
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise NoDigitFound("no digit found: the image looks blank")
    ink /= peak
    noise = 0.0
    if photo:  # (a small image's median is its background: below it, all is zero already)
        # Paper grain and JPEG noise sit a few deviations above zero; cut them off softly.
        level = median(ink)
        noise = median(np.abs(ink - level)) * 1.4826
        floor = min(0.5, level + 3 * noise)
        if floor > 0:
            ink = np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)
            noise /= 1.0 - floor
        ink *= ink >= 0.5 / 255  # rounding residue of the background filters: no ink
    return ink, noise


def refuse_paper_lines(kept, picture_shape):
    """Raise NoDigitFound when what is kept is only the page's own lines: an empty ruled or
    squared page keeps its lines (they are its darkest ink, often broken by noise):
    several thin bands across the picture (`picture_shape`: `kept` is cropped to the
    ink) that hold nearly all the ink, which no digit does."""
    if min(picture_shape) <= PHOTO_SIDE:
        return  # no page to rule: at 28x28, a 0's arcs are "thin bands across" (10 of MNIST's test digits)
    core = kept > INK_CORE
    in_lines, count = np.zeros_like(core), 0
    for axis in (0, 1):
        across = 1 - axis
        if core.shape[across] < LINE_SPAN * picture_shape[across]:
            continue  # the ink spans too little of the picture for any line across it
        # Lines sag a little: count the ink of each band of three rows (or columns).
        band = ndimage.maximum_filter1d(core, 3, axis=axis)
        lines, _ = ndimage.label(band.sum(axis=across) / picture_shape[across] >= PAPER_LINE_COVER)
        thin = [index for index, (box,) in enumerate(ndimage.find_objects(lines), start=1)
                if box.stop - box.start <= PAPER_LINE_WIDTH]  # a digit's strokes are thicker
        count += len(thin)
        in_lines |= np.expand_dims(np.isin(lines, thin), across) & core
    if count >= MIN_PAPER_LINES and in_lines.sum() >= PAPER_LINES_SHARE * core.sum():
        raise NoDigitFound("no digit found: only the lines of the paper")


def refuse_faint_ink(kept, noise):
    """Raise NoDigitFound unless the ink that is kept stands well clear of the paper's noise.

    Blank paper, a shadow, a fold, a texture: once the lighting is removed and the ink
    scaled to its peak, their strongest "strokes" are grain a few deviations above the
    paper (measured: at most 4.1 on 100 such photos), where pen, pencil and chalk stand
    12 or more above it (500 digit photos). The median of the strokes' cores is compared, so that one
    speck cannot carry a picture."""
    core = kept[kept > INK_CORE]
    strength = float(np.median(core)) / noise if noise > 0 and core.size else np.inf
    if strength < MIN_INK_TO_NOISE:
        raise NoDigitFound("no digit found: nothing stands out from the paper (blank paper, a shadow "
                           "or a texture); write the digit darker or move closer")


def box_mean_extremes(array):
    """The least and greatest 3x3 mean (mirrored edges): ndimage.uniform_filter(array, 3)'s
    extremes, to float rounding, as nine slices added (5x faster; only they are needed)."""
    padded = np.pad(array, 1, mode="symmetric")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    sums = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    return float(sums.min()) / 9, float(sums.max()) / 9


def sampled_minimum(array, size):
    """ndimage.minimum_filter(array, size)[::size, ::size], exactly (tested), in a tenth of
    the time: each sample's window is a block of the array shifted by size // 2, with
    the filter's mirrored edges, so strided block minima give it without filtering the
    pixels that are never sampled (3 ms of a 12 MP photo's 40 ms)."""
    height, width = array.shape
    rows, cols = -(-height // size), -(-width // size)
    half = size // 2
    padded = np.pad(array, ((half, size * rows - height), (half, size * cols - width)), mode="symmetric")
    return pool(padded, size, np.minimum)


def pool(array, factor, combine):
    """Each factor x factor block combined into one value (np.minimum, np.logical_or, ...);
    a ragged edge is dropped. Strided views, combined in place: 10x faster than a
    reshape and a reduction over two axes."""
    height, width = array.shape[0] // factor * factor, array.shape[1] // factor * factor
    pooled = array[:height:factor, :width:factor].copy()
    for dy in range(factor):
        for dx in range(factor):
            if dy or dx:
                combine(pooled, array[dy:height:factor, dx:width:factor], out=pooled)
    return pooled


def unpool(array, shape, factor=2):
    """A pooled array back at `shape`: each pixel repeated, a ragged edge extended."""
    large = np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)
    return np.pad(large, ((0, shape[0] - large.shape[0]), (0, shape[1] - large.shape[1])), mode="edge")


def grow(mask, steps=1):
    """The mask grown by `steps` pixels across and down (ndimage.binary_dilation with
    its default cross, `steps` times), by shifting: 40x faster on a photo."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def straight_runs(core):
    """Horizontal and vertical runs of ink longer than LINE_SPAN of the picture, as
    (mask, axis along which the run goes): candidates for ruled lines and page edges.
    A run may sag by a few pixels (a photo is never quite square to the page) and have
    small gaps (noise breaks faint lines). Large pictures are searched at half size
    (4x less work; a line one pixel wide survives the pooling), then mapped back."""
    if min(core.shape) >= 2 * LINE_SEARCH_SIZE:
        return [(unpool(run, core.shape) & core, axis) for run, axis in straight_runs(pool(core, 2, np.logical_or))]
    runs = []
    for axis in (0, 1):
        length = int(core.shape[axis] * LINE_SPAN)
        sag = 2 * max(1, round(LINE_SAG * core.shape[1 - axis])) + 1
        # No band of `sag` lines holds enough ink for a run (most pictures): skip the filters.
        if ndimage.uniform_filter1d(core.sum(axis=axis, dtype=np.float32), sag).max() * sag < LINE_FILL * length:
            continue
        # Nor when no band is inked, in any of its lines, across enough places: a row of
        # digits fills a band's lines but leaves gaps between the digits. (A run needs that
        # many inked places in its band: this is `band` below, cheaply, without the filter.)
        if band_reach(core, sag, 1 - axis).sum(axis=axis).max() < LINE_FILL * length:
            continue
        band = ndimage.maximum_filter1d(core, sag, axis=1 - axis).astype(np.float32)
        full_run = ndimage.uniform_filter1d(band, length, axis=axis) > LINE_FILL
        run = ndimage.maximum_filter1d(full_run, length, axis=axis)
        run = ndimage.maximum_filter1d(run, sag, axis=1 - axis) & core
        if run.any():
            runs.append((run, axis))
    return runs


def band_reach(core, sag, axis):
    """ndimage.maximum_filter1d(core, sag, axis) for a boolean mask, by shifted ORs."""
    reach = core.copy()
    half = sag // 2
    for shift in range(1, half + 1):
        ahead, behind = [slice(None)] * 2, [slice(None)] * 2
        ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
        reach[tuple(behind)] |= core[tuple(ahead)]
        reach[tuple(ahead)] |= core[tuple(behind)]
    return reach


def ruled_lines(ink, core):
    """The long straight runs that belong to the page (ruled lines, margins, page edges),
    not to the digit, as a mask.

    A confident stroke is long and straight too: a 1 drawn down the canvas, the bar of a
    7 or a 5, the base of a 2. A page's print is faint beside the pen (the ink map's
    peak is 1), so the faint ink of a run goes and the digit's darker ink where it
    crosses stays. What is left of a run, if still long, goes only when the rest of the
    ink, the digit, shows that it is no stroke: it is much thinner than the digit's
    strokes, or runs on well past the digit at both ends (a page edge). When the rest
    is mere scraps, the long dark runs are the digit itself (a 1, a 4).
    """
    runs = straight_runs(core)
    if not runs:
        return np.zeros_like(core)
    lines = np.logical_or.reduce([run for run, _ in runs]) & (ink < LINE_FAINT)
    dark_runs = []  # (box, piece, axis) of what is left of each run, when it is still long
    for run, axis in runs:
        pieces, count = ndimage.label(run & ~lines)
        if count > LINE_MAX_PIECES:
            return grow(lines)  # a texture (dither, noise), not a page with lines: leave it be
        for index, box in enumerate(ndimage.find_objects(pieces), start=1):
            if box[axis].stop - box[axis].start >= core.shape[axis] * LINE_SPAN:
                dark_runs.append((box, pieces[box] == index, axis))
    if not dark_runs:
        return grow(lines)
    # The rest: all but the runs' faint ink and their long dark remains (a digit crossed
    # by faint lines stays in one piece).
    dark = np.zeros_like(core)
    for box, piece, _ in dark_runs:
        dark[box] |= piece
    rest = core & ~lines & ~grow(dark)
    labels, _ = ndimage.label(rest, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    if areas.max() < LINE_DIGIT_PART * max(piece.sum() for _, piece, _ in dark_runs):
        return grow(lines)
    digit = (areas >= LINE_DIGIT_PART * areas.max())[labels]  # the digit's pieces, not specks or scraps
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    extent = ((rows[0], rows[-1]), (cols[0], cols[-1]))  # along axis 0 and axis 1
    digit_size = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    digit_width = stroke_width(digit)
    for box, piece, axis in dark_runs:
        start, stop = box[axis].start, box[axis].stop - 1
        beyond = min(extent[axis][0] - start, stop - extent[axis][1])
        thinner = piece.sum() / (stop - start + 1) < LINE_THINNER * digit_width
        if beyond >= LINE_BEYOND * digit_size or thinner:
            lines[box] |= piece
    return grow(lines)


def faint_line_remnants(ink, core, faint_runs):
    """The pieces of `core` that lie wholly on a faint ruled line, as a mask. A faint line's
    ink straddles INK_CORE, so its core is a row of dashes that ruled_lines, needing a
    run inked along LINE_FILL of it, does not see; `faint_runs` are straight_runs of the
    ink down to LINE_SEEN. A piece with any ink off those runs, or dark enough to be the
    pen (LINE_FAINT), is left alone: a digit crossing a line keeps every stroke. (The
    dashes, left, widened the digit's box: a small digit on ruled paper shrank into a
    corner of the 28x28 input and was read "1", 90-96% sure.)"""
    on_line = np.logical_or.reduce([run for run, _ in faint_runs]) & (ink < LINE_FAINT)
    labels, count = ndimage.label(core, structure=np.ones((3, 3)))
    off_line = np.bincount(labels[core & ~on_line], minlength=count + 1)
    return (off_line == 0)[labels] & core


def keep_digit(ink, paper=True, points=False):
    """Zero out specks, ruled lines and page edges, keeping the digit and its soft rim;
    cropped to the ink's neighbourhood. A clean drawing (`paper` False) has no lines.
    `points`: keep every piece holding a pen dot's ink (a number's decimal point, in a
    clean drawing: it has no grain).

    Returns (ink, (top, left) of the crop in the given ink)."""
    core = ink > INK_CORE
    if paper and min(ink.shape) > PHOTO_SIDE:  # photos and scans; a 28x28 digit has no paper to rule
        # Runs in the fainter ink include every run in the core: none there, no lines at all.
        faint_runs = straight_runs(ink > LINE_SEEN)
        if faint_runs:
            core &= ~ruled_lines(ink, core)
            core &= ~faint_line_remnants(ink, core, faint_runs)
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    if rows.size == 0:
        raise NoDigitFound("no digit found: the image looks blank")
    # Only the ink's neighbourhood matters from here on: soft anti-aliased rims lie
    # within two pixels of a stroke's core.
    top, left = max(0, rows[0] - 2), max(0, cols[0] - 2)
    box = np.s_[top : rows[-1] + 3, left : cols[-1] + 3]
    ink, core = ink[box], core[box]
    labels, count = ndimage.label(core, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())
    areas[0] = 0  # the background
    if not paper and areas.max() < MIN_STROKE_PIXELS and max(
            max(rows.stop - rows.start, cols.stop - cols.start) for rows, cols in ndimage.find_objects(labels)) <= DUST:
        # A drawing of scattered single pixels: every speck as large as the largest, none
        # kept as a speck, and read as a digit (5 stray pixels on a white 512x512 picture
        # were "a digit", 20 were "2 digits" in a number).
        raise NoDigitFound("no digit found: only scattered specks, none of them as large as a stroke of a pen")
    least = MIN_PART * areas.max()
    if points and (areas[1:] < least).any():
        # A fine pen's point (a decimal point) holds under 2% of a digit's ink, and was
        # lost ("12.50" read "1250"). Only a number has points: beside a lone digit, a
        # stray tap of the pen widened its box (a 1 read "8", 99% sure).
        least = min(least, PEN_DOT * edge_stroke_width(ink) ** 2)
    kept = areas >= least
    kept[0] = False
    if not paper and not points and count > 1:
        kept &= ~far_dots(labels, ink)  # the number path keeps them: a point may be one
    mask = grow(kept[labels], 2)
    if kept[1:].all():
        return np.where(mask, ink, 0.0), (top, left)
    # Cropped again to what is kept: a dropped speck or tap no longer stretches the crop
    # (kept_ink then crops the drawing itself again, and reduces it no more than without).
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.where(mask, ink, 0.0)[box], (top + rows[0], left + cols[0])


def far_dots(labels, ink):
    """Which labels (a mask by label) are dots of the pen, each more than FAR_DOT stroke
    widths from any other ink: a stray tap beside a drawn digit. Kept, it widened the
    digit's box, and one tap of the page's pen anywhere beside a digit changed the dense
    net's answer on 77 of 400 drawings (the CNN's on 24), every time to a wrong one."""
    stroke = edge_stroke_width(ink)
    boxes = np.array([(rows.start, rows.stop, cols.start, cols.stop) for rows, cols in ndimage.find_objects(labels)])
    top, bottom, left, right = boxes.T
    dots = np.maximum(bottom - top, right - left) <= MARK_DOT * stroke
    far = np.zeros(len(boxes) + 1, dtype=bool)
    if dots.all() or not dots.any():
        return far  # a digit drawn in dots, or no dot at all
    # The gap between each dot's box and each other piece's, across or down (0 if they
    # overlap). Other dots count: a digit drawn as a dotted line is a chain of them.
    gap_across = np.maximum.outer(left[dots], left) - np.minimum.outer(right[dots], right)
    gap_down = np.maximum.outer(top[dots], top) - np.minimum.outer(bottom[dots], bottom)
    gaps = np.maximum(gap_across, gap_down).astype(float)
    gaps[np.arange(dots.sum()), np.flatnonzero(dots)] = np.inf  # not itself
    far[1:][dots] = gaps.min(axis=1) > FAR_DOT * stroke
    if far.sum() > (~dots).sum():
        # More such dots than larger pieces: a digit drawn in dots and dashes, not taps
        # beside one (found by the attack review: a dotted 4 was refused, or read 5).
        far[:] = False
    return far


def stroke_width(ink, edges_are_outline=False):
    """Mean stroke width in pixels: twice the area over the outline length.

    `edges_are_outline`: the array's edge counts as a stroke's edge, as if the ink were
    padded with a ring of paper, without the copy: ink cropped to its box has outline
    there too (a short 1 and a tap at a crop's edges measured 13.7 px for a 9 px pen)."""
    core = ink > INK_CORE
    outline = grow(~core)
    if edges_are_outline:
        outline[[0, -1], :] = True
        outline[:, [0, -1]] = True
    outline &= core
    return 2.0 * core.sum() / max(1, outline.sum())


def edge_stroke_width(ink):
    """stroke_width with a crop's edge counted as a stroke's edge."""
    return stroke_width(ink, edges_are_outline=True)


def thicken_thin_strokes(crop):
    """Pen lines are far thinner, for the digit's size, than MNIST's (about 17% of
    the 20-pixel box); the dense net has never seen a hairline, so bring them
    into MNIST's range with a round grey dilation."""
    width = stroke_width(crop)
    radius = int(round((MNIST_STROKE * max(crop.shape) - width) / 2))
    if width >= THIN_STROKE * max(crop.shape) or radius < 1:
        return crop
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    thick = ndimage.grey_dilation(crop, footprint=x * x + y * y <= radius * radius)
    return np.pad(thick, radius)  # the dilated strokes need room at the edges


def resize(array, size, resample=Image.Resampling.LANCZOS):
    """A float image resized (antialiased when shrinking), clipped at 0."""
    image = Image.fromarray(array.astype(np.float32), mode="F").resize(size, resample)
    return np.clip(np.asarray(image), 0.0, None)


def crop_to_ink(ink):
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_box(ink):
    """Crop to the ink and scale it so its longer side is 20 pixels, keeping its shape."""
    crop = crop_to_ink(ink)
    if max(crop.shape) == MNIST_DIGIT_BOX:
        return crop  # already MNIST-sized: leave MNIST's own digits untouched
    if max(crop.shape) > STROKE_BOX:  # measure and mend strokes at a fixed, cheap scale
        scale = STROKE_BOX / max(crop.shape)
        crop = resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
    crop = crop_to_ink(thicken_thin_strokes(crop))
    height, width = crop.shape
    scale = MNIST_DIGIT_BOX / max(height, width)
    box = resize(crop, (max(1, round(width * scale)), max(1, round(height * scale))))
    return box / box.max() if box.max() > 0 else box


def centre_by_mass(box):
    """Place the box in 28x28 so that its centre of mass lands where MNIST's do."""
    height, width = box.shape
    top, left = (MNIST_SIZE - height) // 2, (MNIST_SIZE - width) // 2
    total = box.sum()
    cy = box.sum(axis=1) @ np.arange(height) / total
    cx = box.sum(axis=0) @ np.arange(width) / total
    # Integer shifts, as MNIST did, held so that no ink falls off the edge.
    dy = min(max(round(MNIST_CENTRE - (top + cy)), -top), MNIST_SIZE - height - top)
    dx = min(max(round(MNIST_CENTRE - (left + cx)), -left), MNIST_SIZE - width - left)
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    out[top + dy : top + dy + height, left + dx : left + dx + width] = box
    return out


@dataclass
class PreparedDigit:
    digit: np.ndarray  # float32 (28, 28) in [0, 1], MNIST-style
    side_by_side: int  # how many digit-sized pieces of ink stand side by side (1: one digit)


def prepare_image(image):
    """A decoded PIL image of one digit -> float32 (28, 28) in [0, 1], MNIST-style.

    Raises NoDigitFound when the picture is too small or holds no ink.
    """
    return prepare_digit(image).digit


def prepare_digit(image):
    """A decoded PIL image of one digit -> PreparedDigit: the model input, and whether
    the picture seems to hold several digits side by side (a number).

    Raises NoDigitFound when the picture is too small, holds no ink, or nothing in it
    stands out from the paper.
    """
    kept, _, _, _ = kept_ink(grayscale(image))
    return PreparedDigit(centre_by_mass(fit_box(kept)), side_by_side_pieces(kept))


def side_by_side_pieces(kept):
    """How many pieces of ink, each about as tall as the tallest, stand side by side with
    clear gaps between them: 2 or more for a number, 1 for a digit. Pieces that overlap
    across (a 5's bar over its body, a broken stroke) count as one."""
    core = kept > INK_CORE
    labels, count = ndimage.label(core, structure=np.ones((3, 3)))
    if count < 2:
        return 1
    boxes = ndimage.find_objects(labels)
    tallest = max(rows.stop - rows.start for rows, _ in boxes)
    spans = sorted((cols.start, cols.stop) for rows, cols in boxes
                   if rows.stop - rows.start >= SIDE_BY_SIDE_HEIGHT * tallest)
    gap = SIDE_BY_SIDE_GAP * tallest
    pieces, right = 0, -np.inf
    for left, stop in spans:
        if left >= right + gap:
            pieces += 1
        right = max(right, stop)
    return pieces


def kept_ink(gray, points=False):
    """The ink of the picture's digit or digits, specks and ruled lines gone, cropped:
    (ink, (top, left) of the crop in `gray`, pixels of `gray` per ink pixel, whether it
    is a clean drawing). Raises NoDigitFound when nothing in a photo stands out from the paper, or when the
    ink is only a dot or a dash. `points`: keep a drawing's pen dots (keep_digit), for a number."""
    paper = drawing_paper(gray)
    if paper is not None:
        ink, (top, left), factor = drawing_ink(gray, paper)
        for _ in range(MAX_RECROPS):
            drawn_shape = ink.shape
            ink, (kept_top, kept_left) = keep_digit(ink, paper=False, points=points)
            if all(drawn - kept <= RECROP_MARGIN for drawn, kept in zip(drawn_shape, ink.shape)):
                break  # no speck far from the digits (every canvas drawing): cropped as tight as it gets
            # A speck far from the digits (a stray pixel in a corner of a big picture)
            # stretched the crop, and the digits were reduced with it until they were a few
            # pixels tall: "2026" read "2". The ink kept, specks dropped, is cropped again.
            height, width = ink.shape
            region = (top + kept_top * factor, left + kept_left * factor,
                      top + (kept_top + height) * factor, left + (kept_left + width) * factor)
            ink, (top, left), factor = drawing_ink(gray, paper, region)
        refuse_dots_and_dashes(ink)
        return ink, (top + kept_top * factor, left + kept_left * factor), factor, True
    ink, noise = photo_ink(gray.astype(np.float32) / 255.0)
    kept, origin = keep_digit(ink)
    refuse_faint_ink(kept, noise)
    refuse_paper_lines(kept, gray.shape)
    refuse_dots_and_dashes(kept)
    return kept, origin, 1, False


def refuse_dots_and_dashes(kept):
    """Raise NoDigitFound when the ink is hardly taller than its thickest stroke: a tap of
    the pen, a dash, a 7's bar before its stem is drawn. The models would still name a
    digit, sure of it (a dot was "0, 99.6% sure"). Bold digits are over twice as tall as
    their strokes are thick (MNIST's boldest: 2.6 times). A dash is rarely level: ink
    that lies nearly flat is measured across its own long axis, so that a bar sloping by
    a few degrees is still a dash (it was "2, 99% sure"); steeper ink keeps its height,
    as a slanted 1 must (MNIST has 1s at 45 degrees). Two dots are no digit either."""
    core = kept > INK_CORE
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    if rows.size == 0:
        return
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    # A pen stroke within 30 degrees of level, twice as long as thick, is at least 1.24 times
    # as wide as it is tall: most digits are not, and keep their height without the costlier measure.
    standing = height if width < FLAT_WIDE * height else min(height, flat_extent_across(*np.nonzero(core)))
    stroke = edge_stroke_width(kept)
    # Two dots hold about 2 pi stroke widths squared of ink (a dot's 2 x area / outline is
    # its radius); any digit holds far more, and needs no counting of its pieces.
    dots = core.sum() <= TWO_DOTS_INK * stroke**2 and two_dots(core)
    if not dots and standing >= STROKES_TALL * stroke:
        return  # the usual digit, many strokes tall: no need for the costlier measure below
    if dots or standing < DOT_TALL * thickest_stroke(core):
        raise NoDigitFound("no digit found: only a dot or a dash, hardly taller than the pen is wide "
                           "(a digit stands several pen widths tall)")


def two_dots(core):
    """Whether the ink is two dots, each hardly larger than the pen is wide both ways: a
    colon, two taps of the pen (they were "7, 99% sure"). (One dot is hardly taller than
    it is thick, which refuse_dots_and_dashes asks of all the ink; a digit drawn in dots
    takes three at least.)"""
    labels, count = ndimage.label(core, structure=np.ones((3, 3)))
    if count != 2:
        return False
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        piece = labels[box] == index
        if max(piece.shape) >= DOT_TALL * min(piece.shape):
            return False  # longer than a dot, however thick: no need to measure how thick
        if max(piece.shape) >= DOT_TALL * thickest_stroke(piece):
            return False
    return True


def thickest_stroke(mask):
    """The diameter of the widest disc that fits in the mask: its thickest stroke."""
    return 2 * float(ndimage.distance_transform_edt(np.pad(mask, 1)).max())


def flat_extent_across(ys, xs):
    """How far the pixels at (`ys`, `xs`) reach across their own long axis (their second
    moments' major axis), where they are a stroke: DASH_LONG times as long as that, their
    long axis within DASH_SLOPE of level. Infinite otherwise: steeper ink (a leaning 1)
    and stubby ink (a bold 6's loop, filled in) keep their height."""
    ys, xs = ys - ys.mean(), xs - xs.mean()
    _, axes = np.linalg.eigh(np.array([[ys @ ys, ys @ xs], [ys @ xs, xs @ xs]]))
    major, minor = axes[:, 1], axes[:, 0]  # eigh sorts ascending: the least spread first
    if abs(major[0]) > np.sin(np.radians(DASH_SLOPE)):
        return np.inf
    across = float(np.ptp(ys * minor[0] + xs * minor[1])) + 1
    along = float(np.ptp(ys * major[0] + xs * major[1])) + 1
    return across if along >= DASH_LONG * across else np.inf


# Numbers: a row of digits ---------------------------------------------------------

BRIDGE = 0.4  # gaps up to this many stroke widths (each side) are breaks in one stroke
FRAGMENT = 0.6  # a piece shorter than this share of the row's height is part of a digit
SPECK = 0.35  # ... or, with no digit beside it, a speck
NEAR = 0.15  # a scrap (shorter than SPECK) this near a digit (a share of the row's height) belongs to it
OVERLAP = 0.5  # a fragment overlapping a piece across by this share of its width belongs to it; so do ...
STACKED = 0.25  # ... two pieces overlapping across so, and downwards by less than this share
LEAST_INK = 0.3  # each side of a cut holds at least this share of the other side's ink
HALF_WIDE = 0.45  # a cut leaves at least one side this wide (a share of the row's height)
NARROW = 0.35  # digits narrower than this share of their height (1s) say nothing of the others' width
DIGIT_WIDTH = 0.75  # a digit is usually at most this share of its height wide ...
CUT_WIDTH = 1.5  # ... and a group this many times wider than usual may be digits that touch;
EAGER_CUT_WIDTH = 1.0  # ... this many times wider, maybe, if the model reads its parts surer,
EAGER_CROSSINGS = 2  # ... even where the cut crosses two strokes (glyphs that overlap)
TALL = 0.7  # both sides of a cut through touching digits have ink on this share of the row's height
NARROWEST = 0.2  # ... and are at least this wide (a share of the row's height)
CUT_INK = 2.0  # a cut crosses at most this many stroke widths of ink (a join, not a digit's stem)
# A row of 20 digits is made of far fewer pieces of ink than this (measured: at most 1.5 a
# digit on 1,600 number photos, bridged); more is a page of writing, a pattern or a texture.
MAX_PIECES = 100
# Marks between digits (a decimal point or comma, a dash), by their size and place in the row:
FAR_FROM_ROW = 0.25  # a dot wholly this share of the row's height above or below its digits is off the row
MARK_SMALL = 0.45  # a mark is at most this share of the row's height tall and wide (a dash: MARK_DASH wide)
MARK_DOT = 2.0  # a dot is at most this many stroke widths across either way
MARK_THICK = 0.7  # any mark is at least this many stroke widths across both ways (dust is finer)
MARK_LOW = 0.55  # a point or a comma begins below this share of the row's height (from its top)
MARK_DASH = 0.8  # a dash is at most this share of the row's height wide, twice as wide as tall ...
MARK_MIDDLE = (0.25, 0.75)  # ... and its middle lies within this band of the row's height
# How plausible a part is as one digit, by its width: digits up to WIDE_DIGIT row heights
# wide are all alike; wider, the odds fall by e every WIDE_DECAY row heights. Tuned on
# number photos (seed 1): a wide handwritten 0, 2 or 4 read whole, touching glyphs cut.
WIDE_DIGIT, WIDE_DECAY = 1.1, 3.0


@dataclass(frozen=True)
class FoundDigit:
    """One digit of a number: the model's 28x28 input, and where it is in the picture."""

    pixels: np.ndarray  # float32 (28, 28) in [0, 1], MNIST-style
    box: tuple  # (x, y, width, height) in the picture's upright pixels
    plausibility: float = 1.0  # 0-1: how likely a part this wide is one digit (WIDE_DIGIT)


def prepare_digits(image, size=None):
    """A decoded PIL image of a row of digits -> [FoundDigit], left to right.

    The ink is found exactly as prepare_image finds it (polarity, lighting, noise,
    ruled lines, specks), so a picture of one digit gives that one digit, with the
    same 28x28 input. The ink's connected pieces are then grouped into digits: pieces
    of one digit (a detached bar, a second stroke, a broken pencil line) are joined,
    and pieces too wide for one digit are cut where the fewest ink crosses.

    `size`: the (width, height) of the upright picture the boxes refer to (the upload
    before any reduced-scale decoding); by default the image's own, turned upright.
    Raises NoDigitFound when the picture is too small or holds no ink.
    """
    return [digit for options in digit_choices(image, size) if not isinstance(options, str) for digit in options[0]]


def digit_choices(image, size=None):
    """prepare_digits' digits, with other readings where they are open: for each group of
    ink, left to right, [its digits as prepare_digits cuts them] and, where they differ,
    the digits of a keener cut (at EAGER_CUT_WIDTH) and the group left whole (one wide
    digit). A caller with a model picks between them by the model's confidence and each
    part's plausibility as a digit (recognition.read_number). A point, a comma or a dash
    written between two digits comes as its character (".", ",", "-") in place of a
    group's options (mark_of)."""
    # Worked on at prepare_image's size: measured, twice as many pixels for wide
    # pictures read no more numbers right (95.3% against 95.7%), and cost more.
    gray = grayscale(image)
    ink, (top, left), factor, drawn = kept_ink(gray, points=True)
    if size is None:
        width, height = image.size
        size = (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)
    scale_x, scale_y = size[0] / gray.shape[1], size[1] / gray.shape[0]

    def found(rows, cols, mask, plausibility):
        digit = np.where(mask, ink[rows, cols], 0.0)
        x0, y0 = (left + cols.start * factor) * scale_x, (top + rows.start * factor) * scale_y
        x1, y1 = (left + cols.stop * factor) * scale_x, (top + rows.stop * factor) * scale_y
        box = (int(x0), int(y0), max(1, round(x1 - int(x0))), max(1, round(y1 - int(y0))))
        return FoundDigit(centre_by_mass(fit_box(digit)), box, plausibility)

    choices = [options if isinstance(options, str) else [[found(*mask) for mask in option] for option in options]
               for options in digit_masks(ink, broken_strokes=not drawn)]
    if not any(not isinstance(options, str) for options in choices):
        raise NoDigitFound("no digit found: the image holds only specks or lines")
    return choices


def digit_masks(ink, broken_strokes=True):
    """For each group of ink, left to right, its options (see digit_choices), each a list
    of digits as (row slice, column slice, mask of its ink in that box), the mask taking
    in the soft rim around its strokes; and the marks between digits, as characters.
    `broken_strokes`: whether strokes may have gaps (pencil on paper) that could look like
    points; a clean drawing's have none."""
    core = ink > INK_CORE
    stroke = edge_stroke_width(ink)
    bridge = max(1, round(BRIDGE * stroke))
    labels, pieces = ink_pieces(core, bridge)
    if not pieces:
        return []
    if len(pieces) > MAX_PIECES:  # each step below compares every pair of pieces
        raise NoDigitFound(f"no digit found: the picture holds {len(pieces)} separate pieces of ink, more than "
                           f"a row of digits is made of (at most {MAX_PIECES}): a page of writing, a pattern or a "
                           "texture, not one number")
    # A lone line (a 7's bar, before its stem is drawn) would make the row as tall as a
    # stroke is thick, and be cut into dozens of slivers: no digit is that short.
    row_height = max(row_height_of(pieces), STROKES_TALL * stroke)
    band = row_band(pieces, row_height)
    # A drawing's marks are found before the bridging: a point written close to a digit
    # (at the gaps people leave on the canvas) was joined to it, "17.4" read "174". Its
    # pieces are those its ink leaves apart, down to faint ink (LINE_SEEN): a thin pen's line,
    # reduced, breaks into dashes of core (a 1's tip, 2 pixels of a 1-pixel pen, was a point).
    loose_labels, loose = (None, []) if broken_strokes else labelled_pieces(ink > LINE_SEEN, core)
    if broken_strokes or len(loose) > MAX_PIECES:
        marks = marks_among(on_row(pieces, band, stroke), row_height, stroke)
    else:
        marks = marks_among(on_row(loose, band, stroke), row_height, stroke)
        if marks:
            core = core & ~np.isin(loose_labels, [index for mark, _ in marks for index in mark.indices])
            labels, pieces = ink_pieces(core, bridge)
    pieces = [piece for piece in on_row(pieces, band, stroke) if all(piece is not mark for mark, _ in marks)]
    groups = sorted(grouped(pieces, row_height), key=lambda group: group.left)
    # Touching digits make a group much wider than the row's other digits (1s aside),
    # or than digits usually are for their height.
    wide = [group.width for group in groups if group.width >= NARROW * row_height] or [row_height]
    usual = min(float(np.median(wide)), DIGIT_WIDTH * row_height)
    found = []  # (group, its options)
    for group in groups:
        options = []
        # The cautious cut, the keener one, and none at all (a wide 0, 2 or 4 is one digit).
        for widest, crossings in ((CUT_WIDTH * usual, 1), (EAGER_CUT_WIDTH * usual, EAGER_CROSSINGS),
                                  (np.inf, 1)):
            digits = [digit for digit in cut_apart(group, labels, row_height, widest, stroke, crossings)
                      if digit.height >= SPECK * row_height]
            if digits and all(digits != option for option in options):
                options.append(digits)
        if options and options[0]:
            found.append((group, [[digit_mask(digit, labels, row_height) for digit in option] for option in options]))
    choices, marks = [], sorted(marks, key=lambda mark: mark[0].left)
    for (before, _), (group, options) in zip([(None, None)] + found, found):
        if before is None:  # a minus before the first digit: a negative score, a temperature
            choices += [char for mark, char in marks if char == "-" and mark.right <= group.left][-1:]
        else:  # the marks between this digit and the one before it
            choices += [char for mark, char in marks if before.right <= (mark.left + mark.right) / 2 <= group.left]
        choices.append(options)
    return choices


def ink_pieces(core, bridge):
    """(labels, [Piece]): the core's connected pieces, gaps up to 2 x `bridge` pixels bridged."""
    return labelled_pieces(grow(core, bridge), core)


def labelled_pieces(reach, core):
    """(labels, [Piece]): the core's pieces, as the connected pieces of `reach` (a mask
    holding the core) join them."""
    labels, _ = ndimage.label(reach, structure=np.ones((3, 3)))
    labels *= core
    return labels, [Piece.of(labels, index, box) for index, box in enumerate(ndimage.find_objects(labels), start=1)
                    if box]


def marks_among(pieces, row_height, stroke):
    """[(piece, its mark)] for the pieces that are marks (mark_of)."""
    row_top = float(np.median([piece.top for piece in tall_pieces(pieces)]))
    return [(piece, char) for piece in pieces for char in [mark_of(piece, pieces, row_top, row_height, stroke)]
            if char]


def mark_of(piece, pieces, row_top, row_height, stroke):
    """"." "," or "-" when `piece` is a point, a comma or a dash, written beside the digits
    (nothing else overlaps it across); else None. An amount ("12,50"), a date or a code
    ("12-34"): the models read a comma as a 1 or an 8, sure of it (a drawn "17,4" was
    "1714"), and a point or a dash was dropped as a speck, silently. digit_masks keeps
    the marks that stand between two digits, and a dash just before the first (a minus)."""
    if piece.height >= MARK_SMALL * row_height or min(piece.width, piece.height) < MARK_THICK * stroke:
        return None  # as tall as a digit's part, or thinner than the pen (dust)
    if any(other is not piece and overlap(piece.left, piece.right, other.left, other.right) > 0
           for other in pieces):
        return None  # part of a digit: a 5's bar, a 7's crossbar, a broken stroke
    if piece.width < MARK_SMALL * row_height and piece.top >= row_top + MARK_LOW * row_height:
        if max(piece.width, piece.height) <= MARK_DOT * stroke:
            return "."
        return "," if piece.bottom > row_top + row_height else None
    middle = (piece.top + piece.bottom) / 2
    if (2 * piece.height <= piece.width <= MARK_DASH * row_height and piece.height <= MARK_DOT * stroke
            and row_top + MARK_MIDDLE[0] * row_height <= middle <= row_top + MARK_MIDDLE[1] * row_height):
        return "-"
    return None


def digit_mask(digit, labels, row_height):
    """(rows, cols, mask, plausibility) of a digit: its box, with room for the rim (two
    pixels each way), and how plausible a digit of its width is (WIDE_DIGIT)."""
    top, left = max(0, digit.top - 2), max(0, digit.left - 2)
    rows = slice(top, min(labels.shape[0], digit.bottom + 2))
    cols = slice(left, min(labels.shape[1], digit.right + 2))
    mine = np.isin(labels[rows, cols], digit.indices)
    mine[:, : digit.left - left] = False
    mine[:, digit.right - left :] = False
    plausibility = float(np.exp(-max(0.0, digit.width / row_height - WIDE_DIGIT) / WIDE_DECAY))
    return rows, cols, grow(mine, 2), plausibility


@dataclass
class Piece:
    """Connected ink (`indices`: its labels), limited to columns [left, right)."""

    indices: list
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def of(cls, labels, index, box):
        return cls([index], box[0].start, box[0].stop, box[1].start, box[1].stop)

    @property
    def height(self):
        return self.bottom - self.top

    @property
    def width(self):
        return self.right - self.left

    def joined(self, other):
        return Piece(self.indices + other.indices, min(self.top, other.top), max(self.bottom, other.bottom),
                     min(self.left, other.left), max(self.right, other.right))


def tall_pieces(pieces):
    """The pieces at least half as tall as the tallest: the row's digits, fragments and
    specks aside."""
    tallest = max(piece.height for piece in pieces)
    return [piece for piece in pieces if piece.height >= tallest / 2]


def row_band(pieces, row_height):
    """(top, bottom): the rows the number's ink may reach, from its tall pieces' tops to
    their bottoms, FAR_FROM_ROW of the row's height beyond each."""
    tall, reach = tall_pieces(pieces), FAR_FROM_ROW * row_height
    return min(piece.top for piece in tall) - reach, max(piece.bottom for piece in tall) + reach


def on_row(pieces, band, stroke):
    """The pieces but the dots wholly above or below the row's band: such a dot is no part
    of the number (a dot well under the row was a decimal point, "172" read "17.2", or,
    from a thick pen, was grouped with the digits beside it). Anything larger stays: a
    small raised digit (an exponent) is still a digit."""
    top, bottom = band
    return [piece for piece in pieces if (piece.bottom > top and piece.top < bottom)
            or max(piece.width, piece.height) > MARK_DOT * stroke]


def row_height_of(pieces):
    """The height of a digit in this row: the median of its tall pieces."""
    return float(np.median([piece.height for piece in tall_pieces(pieces)]))


def overlap(low_a, high_a, low_b, high_b):
    return max(0, min(high_a, high_b) - max(low_a, low_b))


def grouped(pieces, row_height):
    """Pieces of one digit joined: pieces one above the other (a broken stroke), and
    each fragment (a detached bar, the dot-like top of a 7, a second stroke) with the
    piece it overlaps most across, or else, if it is a mere scrap, the nearest piece.
    One pair at a time, the leftmost first; each step compares all pairs at once, as
    arrays (a page of 300 dots took 9-12 s of comparing pairs one by one)."""
    groups = sorted(pieces, key=lambda piece: piece.left)
    while len(groups) > 1:
        pair = stacked_pair(groups) or fragment_pair(groups, row_height)
        if pair is None:
            return groups
        i, j = min(pair), max(pair)
        groups[i] = groups[i].joined(groups.pop(j))
    return groups


def extents(groups):
    """Arrays of the groups' tops, bottoms, lefts and rights."""
    return np.array([(group.top, group.bottom, group.left, group.right) for group in groups]).T


def pairwise_overlap(low, high):
    """overlap() of every pair of spans [low, high), as a matrix."""
    return np.maximum(0, np.minimum.outer(high, high) - np.maximum.outer(low, low))


def stacked_pair(groups):
    """The first pair (i < j) of groups one above the other: much overlap across, little
    downwards. None when there is none."""
    top, bottom, left, right = extents(groups)
    width, height = right - left, bottom - top
    stacked = ((pairwise_overlap(left, right) >= OVERLAP * np.minimum.outer(width, width))
               & (pairwise_overlap(top, bottom) < STACKED * np.minimum.outer(height, height)))
    found = np.argwhere(np.triu(stacked, 1))
    return (int(found[0][0]), int(found[0][1])) if len(found) else None


def fragment_pair(groups, row_height):
    """(fragment, the group it belongs to) for the first fragment that belongs to one: the
    group it overlaps most across (the first such), if by OVERLAP of its width; else, for
    a scrap, the nearest group within NEAR of the row's height. None when none does."""
    top, bottom, left, right = extents(groups)
    fragments = np.flatnonzero(bottom - top < FRAGMENT * row_height)
    if not len(fragments):
        return None
    rows = np.arange(len(fragments))
    shared = pairwise_overlap(left, right)[fragments].astype(float)
    shared[rows, fragments] = -1  # not itself
    best = shared.argmax(axis=1)
    overlapping = shared[rows, best] >= OVERLAP * (right - left)[fragments]
    gaps = (np.maximum.outer(left[fragments], left) - np.minimum.outer(right[fragments], right)).astype(float)
    gaps[rows, fragments] = np.inf
    nearest = gaps.argmin(axis=1)
    near = ((bottom - top)[fragments] < SPECK * row_height) & (gaps[rows, nearest] <= NEAR * row_height)
    belonging = np.flatnonzero(overlapping | near)
    if not len(belonging):
        return None
    row = belonging[0]
    return int(fragments[row]), int(best[row] if overlapping[row] else nearest[row])


def cut_apart(group, labels, row_height, widest, stroke, crossings=1):
    """A group too wide for one digit, cut at the column crossing the least ink between
    two parts that each look like a digit (tall enough, wide enough), again and again.
    A cut crosses at most `crossings` strokes."""
    if group.width <= widest:
        return [group]
    rows = slice(group.top, group.bottom)
    cols = slice(group.left, group.right)
    ink = np.isin(labels[rows, cols], group.indices)
    columns = ink.sum(axis=0)
    inked = ink.any(axis=1)
    first = np.sort(np.where(inked, ink.argmax(axis=1), group.width))
    last = np.sort(np.where(inked, group.width - 1 - ink[:, ::-1].argmax(axis=1), -1))
    narrowest = max(1, round(NARROWEST * row_height))
    cuts = np.arange(narrowest, group.width - narrowest + 1)
    # Rows with ink left of each cut, and right of it: the bar of a wide 7 or the base
    # of a 2 has ink on few rows, and is no digit of its own.
    left_rows = np.searchsorted(first, cuts)
    right_rows = last.size - np.searchsorted(last, cuts)
    # A join is one short run of ink down the column (the middle of a 0 has two), or
    # none where pieces were grouped only by the bridging of small gaps. Of
    # equally thin joins, the one nearest the middle: two digits are about as wide.
    runs = ink[0].astype(int) + (ink[1:] & ~ink[:-1]).sum(axis=0)
    cost = columns[cuts] + np.abs(cuts - group.width / 2) / group.width
    cost[(np.minimum(left_rows, right_rows) < TALL * row_height) | (runs[cuts] > crossings)] = np.inf
    # Two halves that are both as narrow as a 1 are the sides of a 0 (or a U-shaped
    # one), not two digits.
    cost[np.maximum(cuts, group.width - cuts) < HALF_WIDE * row_height] = np.inf
    # A sliver off a digit (the overlapping end of a 0's loop) holds little of the ink.
    mass = np.cumsum(columns)[cuts - 1]
    cost[np.minimum(mass, columns.sum() - mass) < LEAST_INK * np.maximum(mass, columns.sum() - mass)] = np.inf
    if cuts.size == 0 or cost.min() >= CUT_INK * stroke:
        return [group]
    best = int(cuts[cost.argmin()])
    cut = group.left + best
    left = Piece(group.indices, group.top, group.bottom, group.left, cut)
    right = Piece(group.indices, group.top, group.bottom, cut, group.right)
    # Once a group proved to be several digits, a part as wide as a usual digit may be two.
    usual = min(widest, CUT_WIDTH * DIGIT_WIDTH * row_height) / CUT_WIDTH
    return (cut_apart(left, labels, row_height, usual, stroke, crossings)
            + cut_apart(right, labels, row_height, usual, stroke, crossings))


def prepare_xception_input(image):
    """A decoded PIL image -> float32 (1, 299, 299, 3), as Xception was trained on."""
    from keras.applications.xception import preprocess_input

    rgb = upright_flat(image, max(XCEPTION_SIZE)).convert("RGB").resize(XCEPTION_SIZE, Image.Resampling.BILINEAR)
    batch = np.asarray(rgb, dtype=np.float32)[None]  # (1, 299, 299, 3), RGB, 0-255
    return preprocess_input(batch)  # scales to [-1, 1], Xception's "tf" mode
