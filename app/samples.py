"""Inputs as people send them, made on demand: digits drawn on the home page's canvas,
the same digits photographed on paper, and the multipart requests that carry them.

Shared by the tests, the benchmark and the scripts, so that each measures the same
thing. No Flask in here.

A digit is a list of strokes, a stroke a list of waypoints. In `STRAIGHT_DIGITS`
the waypoints are in "digit units": the digit is 1 tall, x runs from 0 to its width.
`draw_on_canvas` scales a digit to a share of the canvas, places it, and draws it with
the page's pen (app/static/draw.js: 18 px, round caps and joins, black on white).
"""

import io
import zipfile

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

CANVAS_SIZE = 280  # the home page's canvas, in canvas pixels
PEN_WIDTH = 18  # draw.js's lineWidth

# Digits made of straight or gently bent strokes, as people draw them with a mouse:
# name -> (digit, strokes). Each one is a case that a ruled-line filter must not eat.
STRAIGHT_DIGITS = {
    "vertical 1": (1, [[(0.0, 0.0), (0.0, 1.0)]]),
    "1 with flag and base": (1, [[(-0.22, 0.16), (0.0, 0.0), (0.0, 1.0)], [(-0.22, 1.0), (0.22, 1.0)]]),
    "slanted 1": (1, [[(0.2, 0.0), (-0.05, 1.0)]]),
    "open 4": (4, [[(0.05, 0.0), (0.0, 0.6), (0.7, 0.6)], [(0.52, 0.12), (0.52, 1.0)]]),
    "closed 4": (4, [[(0.52, 0.0), (0.0, 0.64), (0.7, 0.64)], [(0.52, 0.0), (0.52, 1.0)]]),
    "7": (7, [[(0.0, 0.0), (0.62, 0.0), (0.22, 1.0)]]),
    "7 with a crossbar": (7, [[(0.0, 0.0), (0.62, 0.0), (0.22, 1.0)], [(0.2, 0.5), (0.6, 0.5)]]),
    "7 with a bar wider than tall": (7, [[(0.0, 0.0), (1.25, 0.0), (0.65, 1.0)]]),
    "2 with a long base": (2, [[(0.04, 0.22), (0.2, 0.03), (0.42, 0.0), (0.62, 0.1), (0.66, 0.3),
                                (0.5, 0.55), (0.02, 1.0), (0.9, 1.0)]]),
    "5 with a long top bar": (5, [[(0.12, 0.0), (0.06, 0.45), (0.36, 0.37), (0.6, 0.45), (0.68, 0.68),
                                   (0.55, 0.9), (0.3, 1.0), (0.02, 0.92)], [(0.12, 0.0), (0.85, 0.0)]]),
}


def place(strokes, fill, anchor=(0.5, 0.5), canvas=CANVAS_SIZE, pen=PEN_WIDTH):
    """Digit units -> canvas pixels: the digit's longer side spans `fill` of the canvas.

    `anchor` says where the digit sits in the room left over: (0, 0) top left,
    (0.5, 0.5) centred, (1, 1) bottom right. The pen's round caps stay on the canvas.
    """
    points = np.array([point for stroke in strokes for point in stroke], dtype=float)
    low, high = points.min(axis=0), points.max(axis=0)
    scale = (fill * canvas - pen) / max(high - low)
    room = canvas - pen - (high - low) * scale
    origin = pen / 2 + room * np.asarray(anchor) - low * scale
    return [[tuple(origin + np.asarray(point) * scale) for point in stroke] for stroke in strokes]


def draw_on_canvas(strokes, fill=0.75, anchor=(0.5, 0.5), canvas=CANVAS_SIZE, pen=PEN_WIDTH):
    """The digit as the page's canvas would hold it: an RGB image, black ink on white."""
    image = Image.new("RGB", (canvas, canvas), "white")
    draw = ImageDraw.Draw(image)
    radius = pen / 2
    for stroke in place(strokes, fill, anchor, canvas, pen):
        if len(stroke) > 1:
            draw.line(stroke, fill="black", width=pen, joint="curve")
        for x, y in (stroke[0], stroke[-1]):  # round caps
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill="black")
    return image


def canvas_units(name, fill=0.8):
    """One of STRAIGHT_DIGITS, sized and centred as a person would draw it, in canvas units
    (0..1 across, 0..1 down): waypoints for a pointer (draw_with_mouse)."""
    _, strokes = STRAIGHT_DIGITS[name]
    return [[(x / CANVAS_SIZE, y / CANVAS_SIZE) for x, y in stroke] for stroke in place(strokes, fill)]


STEP_PX = 4  # how far a pointer (a browser test's mouse) travels between two move events


def to_page(box, point):
    """Canvas units -> page coordinates, inside the element's bounding box."""
    x, y = point
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def path(box, stroke):
    """Every pointer position along a stroke, STEP_PX apart, in page coordinates."""
    points = [to_page(box, p) for p in stroke]
    positions = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        steps = max(1, round(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / STEP_PX))
        positions += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    return positions


def draw_with_mouse(page, canvas, digit):
    """Press, drag along each stroke, release: the mouse as a pen. (The canvas is scrolled
    into view first: a press below the window's edge reaches no element.)"""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for stroke in digit:
        start, *rest = path(box, stroke)
        page.mouse.move(*start)
        page.mouse.down()
        for position in rest:
            page.mouse.move(*position)
        page.mouse.up()


def written_number(digits28, height=120, gaps=None, margin=30):
    """MNIST-style 28x28 digits (light on black) side by side as one clean drawing:
    black ink on white, each digit `height` pixels tall (from its own ink), `gaps`
    pixels apart (default a third of the height). For numbers made of real
    handwritten digits: the tests' MNIST fixture, the benchmark."""
    gaps = [height // 3] * (len(digits28) - 1) if gaps is None else list(gaps)
    pieces = []
    for digit in digits28:
        digit = np.asarray(digit, dtype=np.float32)
        rows, cols = np.flatnonzero(digit.max(axis=1) > 0), np.flatnonzero(digit.max(axis=0) > 0)
        crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        scale = height / crop.shape[0]
        size = (max(1, round(crop.shape[1] * scale)), height)
        pieces.append(np.asarray(Image.fromarray(crop / crop.max(), "F").resize(size, Image.Resampling.BICUBIC)))
    width = sum(piece.shape[1] for piece in pieces) + sum(gaps) + 2 * margin
    ink = np.zeros((height + 2 * margin, width), np.float32)
    x = margin
    for piece, gap in zip(pieces, gaps + [0]):
        ink[margin : margin + height, x : x + piece.shape[1]] = np.maximum(
            ink[margin : margin + height, x : x + piece.shape[1]], piece)
        x += piece.shape[1] + gap
    return Image.fromarray(((1.0 - np.clip(ink, 0, 1)) * 255).round().astype(np.uint8), "L").convert("RGB")


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photograph(drawing, size=(640, 480), paper="plain", digit_height=0.5, seed=0):
    """A drawing as a phone would photograph it on paper: an RGB image of `size`.

    `drawing` is black ink on white (as `draw_on_canvas` makes), scaled so that it is
    `digit_height` of the photo's height and placed off-centre. `paper` is "plain",
    "ruled" (blue lines and a red margin, as in a school exercise book) or "squared".
    The lighting is uneven and the sensor noisy, as in real photos.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    side = round(digit_height * height)
    across = round(side * drawing.width / drawing.height)  # a number's drawing is wider than tall
    ink = 1.0 - np.asarray(drawing.convert("L").resize((across, side), Image.Resampling.BILINEAR),
                           dtype=np.float32) / 255.0
    coverage = np.zeros((height, width), np.float32)
    top = int(rng.integers(height // 20, height - side - height // 20 + 1))
    left = int(rng.integers(width // 8, width - across - width // 8 + 1))
    coverage[top : top + side, left : left + across] = ink * 0.92  # ballpoint ink is not pitch black
    page = np.empty((height, width, 3), np.float32)
    page[:] = (238, 236, 228)  # off-white paper
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    spacing = height / 14
    line = np.zeros((height, width), np.float32)
    if paper in ("ruled", "squared"):
        line = np.maximum(line, np.clip(1.4 - np.abs(y % spacing - spacing / 2) * 800 / height, 0, 1))
    if paper == "squared":
        line = np.maximum(line, np.clip(1.4 - np.abs(x % spacing - spacing / 2) * 800 / height, 0, 1))
    page = page * (1 - 0.7 * line[..., None]) + np.array((110, 140, 200), np.float32) * 0.7 * line[..., None]
    if paper == "ruled":  # the margin
        margin = np.clip(1.5 - np.abs(x - width * 0.1) * 600 / height, 0, 1)[..., None]
        page = page * (1 - 0.6 * margin) + np.array((210, 80, 80), np.float32) * 0.6 * margin
    photo = page * (1 - coverage[..., None]) + np.array((30, 35, 60), np.float32) * coverage[..., None]
    light = 1.0 - 0.18 * (x / width) * (0.5 + y / height)  # a lamp at the top left
    photo = photo * light[..., None] + rng.normal(0, 4, photo.shape).astype(np.float32)
    return Image.fromarray(photo.clip(0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image, quality=90):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def multipart(data, filename="digit.png", **fields):
    """`data` as the multipart field `file`, encoded by hand: (body bytes, Content-Type).

    For real HTTP clients (the benchmark, the live-server tests), and for bodies over
    ~500 KB with Flask's test client, which otherwise spools them to a temporary file
    that it never closes (a ResourceWarning).
    """
    return multipart_files([(filename, data)], "file", **fields)


def multipart_files(files, field="files", **fields):
    """[(filename, bytes)] all in the multipart field `field`, as `multipart` does one."""
    boundary = "----digits-test-boundary-7d1f0c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def zip_bytes(members):
    """A ZIP (deflated) of {name: bytes}, as a user's archiver makes one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def labelled_digits(count, photographed=False, start=0):
    """{file name: digit} and {file name: bytes}: `count` different pictures of the
    straight digits, drawn on the canvas (PNG) or photographed on paper (JPEG);
    numbered from `start`, so that parts made apart don't repeat each other."""
    labels, files = {}, {}
    shapes = list(STRAIGHT_DIGITS.items())
    for index in range(start, start + count):
        name, (digit, strokes) = shapes[index % len(shapes)]
        variant = index // len(shapes)
        drawing = draw_on_canvas(strokes, fill=0.6 + 0.05 * (variant % 5),
                                 anchor=(0.3 + 0.1 * (variant % 5), 0.5 - 0.05 * (variant % 3)))
        filename = f"{index:04d} {name}.{'jpg' if photographed else 'png'}"
        labels[filename] = digit
        files[filename] = jpeg_bytes(photograph(drawing, seed=index)) if photographed else png_bytes(drawing)
    return labels, files


# Pictures with no digit ------------------------------------------------------------

# What a phone sees when there is nothing written: each must be answered "no digit found".
BLANK_KINDS = ("paper", "shadow", "fold", "gradient", "jpeg noise", "ruled paper", "texture", "chalkboard")


def smooth_noise(rng, width, height, cell):
    """Low-frequency noise of about unit size: a coarse random grid, smoothly enlarged."""
    small = rng.normal(size=(max(2, height // cell), max(2, width // cell))).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((width, height), Image.Resampling.BICUBIC)) / 2


def blank_photo(kind, size=(640, 480), seed=0):
    """A photo of something with no writing on it, as `photograph` would take it: an RGB image.

    `kind` is one of BLANK_KINDS: plain paper (grain, uneven light), paper with a soft
    shadow from one edge (a hand or the phone), a folded sheet (a crease across it),
    a steep lighting gradient, paper saved as a poor JPEG, an empty ruled or squared
    page, a scene-like texture (wood, fabric, concrete) or an empty chalkboard.
    """
    if kind not in BLANK_KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(BLANK_KINDS)}")
    rng = np.random.default_rng(seed)
    width, height = size
    short = min(width, height)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    grain = ndimage.gaussian_filter(rng.normal(size=(height, width)).astype(np.float32), max(0.8, short / 500))
    grain = grain / (grain.std() or 1)
    paper = np.array([(246, 244, 238), (240, 236, 222), (232, 232, 230), (250, 250, 247)][rng.integers(4)],
                     np.float32) + rng.uniform(-6, 4, 3)
    photo = paper + (4 * smooth_noise(rng, width, height, 40) + 1.5 * grain)[..., None]
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.15) * ((x / width - 0.5) * np.cos(angle) + (y / height - 0.5) * np.sin(angle))
    light *= 1 - rng.uniform(0, 0.2) * ((x / width - 0.5) ** 2 + (y / height - 0.5) ** 2) / 0.5
    if kind == "shadow":  # a soft shadow over one side
        distance = [x, width - 1 - x, y, height - 1 - y][rng.integers(4)] / short
        light *= 1 - rng.uniform(0.2, 0.45) / (1 + np.exp((distance - rng.uniform(0.1, 0.45)) / rng.uniform(0.02, 0.08)))
    elif kind == "fold":  # a crease: one side a little darker, a bright and a dark ridge along it
        slope, across = rng.uniform(-0.4, 0.4), rng.uniform(0.3, 0.7)
        vertical = rng.random() < 0.5
        offset = (x - across * width - slope * (y - height / 2)) if vertical else (y - across * height - slope * (x - width / 2))
        offset = offset / short
        light *= 1 - rng.uniform(0.03, 0.12) * (offset > 0) * (1 - np.exp(-np.abs(offset) * 20))
        light *= 1 + rng.uniform(0.03, 0.08) * np.exp(-((offset + 0.006) / 0.004) ** 2)
        light *= 1 - rng.uniform(0.04, 0.12) * np.exp(-((offset - 0.004) / 0.004) ** 2)
    elif kind == "gradient":  # a lamp close by: bright in one corner, dim in the opposite one
        light *= 1 - rng.uniform(0.3, 0.55) * ((x / width) * np.cos(angle) ** 2 + (y / height) * np.sin(angle) ** 2)
    elif kind == "ruled paper":
        spacing = rng.uniform(0.07, 0.12) * height
        line = np.clip(1.4 - np.abs(y % spacing - spacing / 2) * 800 / height, 0, 1)
        if rng.random() < 0.4:
            line = np.maximum(line, np.clip(1.4 - np.abs(x % spacing - spacing / 2) * 800 / height, 0, 1))
        photo = photo * (1 - 0.6 * line[..., None]) + np.array((110, 140, 200), np.float32) * 0.6 * line[..., None]
    elif kind == "texture":
        photo = scene_texture(rng, x, y, short)
    elif kind == "chalkboard":
        board = np.array([(40, 66, 52), (30, 31, 34), (34, 52, 46)][rng.integers(3)], np.float32)
        smudge = np.clip(smooth_noise(rng, width, height, 30), 0, None) * rng.uniform(10, 25)
        photo = board + (6 * smooth_noise(rng, width, height, 60) + smudge + 2 * grain)[..., None]
    photo = photo * light[..., None]
    if rng.random() < 0.35:  # slight defocus
        photo = ndimage.gaussian_filter(photo, (rng.uniform(0.4, 1.3) * short / 500,) * 2 + (0,))
    photo = photo + rng.normal(0, rng.uniform(1.5, 5), photo.shape)  # sensor noise
    image = Image.fromarray(photo.clip(0, 255).astype(np.uint8), "RGB")
    if kind == "jpeg noise":
        image = Image.open(io.BytesIO(jpeg_bytes(image, quality=int(rng.integers(15, 45)))))
        image.load()
    return image


def scene_texture(rng, x, y, short):
    """Wood grain, woven fabric or concrete: the colours and patterns behind a sheet of paper."""
    height, width = x.shape
    choice = rng.integers(3)
    if choice == 0:  # wood: warped stripes along the board
        warp = 25 * smooth_noise(rng, width, height, 80)
        rings = np.sin((y + warp + 0.05 * x) / rng.uniform(4, 12) * short / 480)
        tone = np.array((150, 105, 65), np.float32) + rng.uniform(-25, 25, 3)
        return tone * (1 + 0.12 * rings + 0.05 * smooth_noise(rng, width, height, 20))[..., None]
    if choice == 1:  # fabric: a fine weave under a slow tone change
        period = rng.uniform(3, 6) * short / 480
        weave = np.sin(x / period) * np.sin(y / period)
        tone = rng.uniform(60, 200, 3).astype(np.float32)
        return tone * (1 + 0.08 * weave + 0.1 * smooth_noise(rng, width, height, 50))[..., None]
    grain = sum(smooth_noise(rng, width, height, cell) / (i + 1) for i, cell in enumerate((60, 15, 4)))
    tone = np.array((150, 150, 145), np.float32) + rng.uniform(-30, 30)
    return tone * (1 + 0.1 * grain)[..., None]
